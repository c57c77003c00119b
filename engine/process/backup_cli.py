"""`python -m engine backup [--to DIR]` and `python -m engine restore BACKUP`.

`backup` is safe beside a running engine (an online backup from a read-only
connection). `restore` verifies the backup first, refuses while an engine runs on
the target database, and keeps the replaced file beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from engine.alerts import audit
from engine.config import load_settings
from engine.process.backup import BackupError, backup_file, key_hint, restore
from store.db import db_path, now_ms, open_writer

OK, FAILED = 0, 1


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "backup",
        help="an online backup: database, model artifacts, manifest",
        description="Back up the database and the model artifacts it points to.",
    )
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.add_argument("--to", type=Path, help="backup folder (default engine.backup_dir)")
    p.set_defaults(func=run_backup)
    r = subparsers.add_parser(
        "restore",
        help="verify a backup and put it in place of the database",
        description="Verify a backup (manifest, integrity, audit chain) and restore it;"
        " refused while an engine runs; the replaced file is kept.",
    )
    r.add_argument("--db", help="database to replace (default $COCKPIT_DB or var/cockpit.db)")
    r.add_argument("backup", type=Path, help="a backup folder, its manifest.json or cockpit.db")
    r.set_defaults(func=run_restore)


def _who() -> str:
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'operator'}"


def run_backup(args: argparse.Namespace) -> int:
    source = db_path(args.db)
    engine = load_settings().engine
    folder = args.to or engine.backup_dir or source.parent / "backups"
    try:
        target = backup_file(source, Path(folder), now_ms(), keep=engine.keep_backups)
    except BackupError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return FAILED
    print(f"backup {target}")
    return OK


def run_restore(args: argparse.Namespace) -> int:
    target = db_path(args.db)
    stale_ms = int(load_settings().engine.lease_stale_seconds * 1000)
    try:
        done = restore(args.backup, target, now_ms(), stale_ms=stale_ms)
    except BackupError as exc:
        hint = f" ({key_hint(target)})" if "does not open" in str(exc) else ""
        print(f"restore refused: {exc}{hint}", file=sys.stderr)
        return FAILED
    db = open_writer(target)
    try:
        audit.append_audit(db, _who(), "backup.restored", {"backup": str(done.manifest.folder)})
        db.conn.commit()
        audit.write_anchor(db.conn)
    finally:
        db.conn.close()
    kept = f"; the replaced database is kept as {done.replaced}" if done.replaced else ""
    print(f"restored {done.manifest.folder.name} onto {target}{kept}")
    return OK
