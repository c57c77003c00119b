"""`python -m engine audit verify [--json]` and `audit export --csv [--out FILE]`.

`verify` exits 0 when every row matches its keyed hash and the chain still holds
the anchored head, else 1 and names the first bad row. The anchor is the file
beside the database, or a head kept elsewhere: `--head ID:HASH` (from a daily
alert) or `--manifest BACKUP` (a backup's manifest). It reads the database
read-only, so it is safe beside a running engine.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from engine.alerts import audit
from store import audit as stored
from store.db import db_path, reader
from store.secrets import SecretsError

OK, FAILED = 0, 1


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "audit",
        help="verify the audit chain, or export it",
        description="The audit trail: a keyed hash chain anchored outside the database.",
    )
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.set_defaults(func=run_cli)
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    v = actions.add_parser("verify", help="check every row and the anchored head")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    against = v.add_mutually_exclusive_group()
    against.add_argument("--head", type=_head_arg, help="ID:HASH, e.g. from a daily alert")
    against.add_argument("--manifest", type=Path, help="a backup folder or its manifest.json")
    e = actions.add_parser("export", help="every row, oldest first")
    e.add_argument("--csv", action="store_true", required=True, help="as CSV")
    e.add_argument("--out", type=Path, help="file to write (default: standard output)")


def _head_arg(text: str) -> audit.Head:
    rid, _, digest = text.strip().lstrip("#").partition(":")
    if not rid.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError(f"{text!r}: give ID:HASH, the hash in 64 hex digits")
    return audit.Head(int(rid), digest.lower(), 0)


def run_cli(args: argparse.Namespace) -> int:
    path = db_path(args.db)
    if not path.exists():
        print(f"no state database at {path}", file=sys.stderr)
        return FAILED
    try:
        if args.audit_action == "verify":
            anchor = args.head
            if args.manifest is not None:
                from engine.process.backup import BackupError, read_manifest

                try:
                    anchor = read_manifest(args.manifest)[0].audit_head
                except BackupError as exc:
                    print(f"audit: {exc}", file=sys.stderr)
                    return FAILED
            return _verify(path, args.json, anchor)
        return _export(path, args.out)
    except SecretsError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return FAILED


def _verify(path: Path, as_json: bool, anchor: audit.Head | None) -> int:
    with reader(path) as conn:
        report = audit.verify(conn, anchor=anchor)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "rows": report.rows,
                    "keyed": report.keyed,
                    "first_bad": report.first_bad,
                    "reason": report.reason,
                    "head": report.head.as_dict() if report.head else None,
                    "anchor": report.anchor.as_dict() if report.anchor else None,
                },
                indent=2,
            )
        )
    else:
        print(report.describe(), file=sys.stdout if report.ok else sys.stderr)
    return OK if report.ok else FAILED


def _export(path: Path, out: Path | None) -> int:
    with reader(path) as conn:
        rows = stored.chain(conn)
    if out is None:
        _write_csv(rows, sys.stdout)
    else:
        with out.open("w", newline="") as f:
            _write_csv(rows, f)
        print(f"{len(rows)} audit rows written to {out}", file=sys.stderr)
    return OK


def _write_csv(rows: list[tuple[Any, ...]], stream: TextIO) -> None:
    writer = csv.writer(stream)
    writer.writerow(["id", "time_utc", *stored.ROW_COLUMNS[1:]])
    for rid, ts, *rest in rows:
        when = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
        writer.writerow([rid, when, ts, *rest])
