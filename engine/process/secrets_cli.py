"""`python -m engine secrets set NAME | unset NAME | list | rotate`.

`set` reads the value without echo from a terminal, or from standard input when it
is not one (`printf %s "$TOKEN" | python -m engine secrets set alerts.webhook_url`),
so the value never appears in the shell history or the process list. `list` shows
names only. A running engine reads the store when it starts: restart it after a change.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from typing import Any

from engine.alerts.audit import append_audit, write_anchor
from engine.config import SECTIONS, ConfigError, load_settings, with_secrets
from store.db import db_path, open_reader, open_writer
from store.secrets import KEY_ENV, RESERVED_PREFIX, SecretsError, SecretStore

OK, FAILED, USAGE = 0, 1, 2


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "secrets",
        help="the encrypted secrets store: set, unset, list, rotate",
        description="Credentials encrypted at rest (Fernet); the key is "
        f"${KEY_ENV} or the key file beside the database.",
    )
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.set_defaults(func=run_cli)
    actions = p.add_subparsers(dest="secrets_action", metavar="ACTION", required=True)
    a = actions.add_parser("set", help="store a value (read without echo, or from stdin)")
    a.add_argument("name", help="e.g. alerts.smtp_password, alerts.webhook_url, ib.password")
    a = actions.add_parser("unset", help="remove a value")
    a.add_argument("name")
    actions.add_parser("list", help="stored names, never values")
    actions.add_parser("rotate", help="re-encrypt every value under a new key")


def run_cli(args: argparse.Namespace) -> int:
    try:
        if args.secrets_action == "set":
            return _set(args)
        if args.secrets_action == "unset":
            return _unset(args)
        if args.secrets_action == "list":
            return _list(args)
        return _rotate(args)
    except SecretsError as exc:
        print(f"secrets: {exc}", file=sys.stderr)
        return FAILED


def _who() -> str:
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'operator'}"


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"value for {name} (not echoed): ")
    return sys.stdin.read().rstrip("\r\n")


def _set(args: argparse.Namespace) -> int:
    name = args.name.strip().lower()
    if name.startswith(RESERVED_PREFIX):
        print(f"refused: {name!r} is managed by the engine", file=sys.stderr)
        return FAILED
    value = _read_value(name)
    if not value:
        print("refused: an empty value (use `secrets unset` to remove one)", file=sys.stderr)
        return FAILED
    section, _, key = name.partition(".")
    if section in SECTIONS:
        if key not in SECTIONS[section].model_fields:
            print(f"note: {name} is not a configuration key; read it by name", file=sys.stderr)
        else:
            try:
                with_secrets(load_settings(), {name: value})
            except ConfigError as exc:
                print(f"refused: {exc}", file=sys.stderr)
                return USAGE
    store = SecretStore(db_path(args.db))
    db = open_writer(args.db)
    try:
        store.put(db, name, value)
        append_audit(db, _who(), "secret.set", {"name": name})
        db.conn.commit()
        write_anchor(db.conn)
    finally:
        db.conn.close()
    origin = KEY_ENV if store.from_env else str(store.key_file)
    print(f"stored {name} (encrypted; key {origin}); a running engine reads it when it starts")
    return OK


def _unset(args: argparse.Namespace) -> int:
    db = open_writer(args.db)
    try:
        removed = SecretStore(db_path(args.db)).delete(db, args.name)
        if removed:
            append_audit(db, _who(), "secret.unset", {"name": args.name})
        db.conn.commit()
        write_anchor(db.conn)
    finally:
        db.conn.close()
    print(f"removed {args.name}" if removed else f"{args.name} was not stored")
    return OK if removed else FAILED


def _list(args: argparse.Namespace) -> int:
    path = db_path(args.db)
    if not path.exists():
        print("no secrets stored (no database yet)")
        return OK
    conn = open_reader(path)
    try:
        names = SecretStore(path).names(conn)
    finally:
        conn.close()
    if not names:
        print("no secrets stored")
    for name, updated in names:
        when = datetime.fromtimestamp(updated / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(f"{name:40s} set {when}")
    return OK


def _rotate(args: argparse.Namespace) -> int:
    store = SecretStore(db_path(args.db))
    db = open_writer(args.db)
    try:
        where = store.rotate(db)
        append_audit(db, _who(), "secret.rotate", {"values": len(store.names(db.conn))})
        db.conn.commit()
        write_anchor(db.conn)
    finally:
        db.conn.close()
    if store.from_env:
        print(
            f"re-encrypted under a new key, written to {where} (mode 0600): set {KEY_ENV}"
            " to its content, then delete the file"
        )
    else:
        print(f"re-encrypted under a new key in {where}")
    return OK
