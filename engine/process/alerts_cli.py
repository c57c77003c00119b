"""`python -m engine alerts test [--channel KIND]` and `alerts deliveries [--dead]`.

`test` sends one message from this process, straight to the configured channels
(webhook, email, Telegram; secrets from the environment, cockpit.toml or the secrets
store), with the engine's retries, and says per channel what happened: it needs no
running engine and writes nothing. `deliveries` lists what the running engine
delivered or gave up on (dead letters), newest first.

Exit codes follow the engine CLI: 0 done, 1 failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from engine.alerts.deliveries import recent
from engine.alerts.notify import (
    DEFAULT_TIMEOUT_SECONDS,
    AlertMessage,
    DeliveryStatus,
    channels_from,
    deliver_now,
)
from engine.config import load_settings
from engine.domain import Severity
from store.db import db_path, now_ms, reader

OK, FAILED, USAGE = 0, 1, 2
KINDS = ("webhook", "email", "telegram")


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "alerts",
        help="alert channels: send a test message, list deliveries and dead letters",
        description="Alert delivery outside the cockpit (webhook, email, Telegram).",
    )
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.set_defaults(func=run_cli)
    actions = p.add_subparsers(dest="alerts_action", metavar="ACTION", required=True)
    a = actions.add_parser("test", help="send a test message on every configured channel")
    a.add_argument("--channel", choices=KINDS, help="only this channel")
    a = actions.add_parser("deliveries", help="recent deliveries, newest first")
    a.add_argument("--dead", action="store_true", help="only dead letters (every attempt failed)")
    a.add_argument("--limit", type=int, default=20)


def run_cli(args: argparse.Namespace) -> int:
    if args.alerts_action == "test":
        return _test(args)
    return _deliveries(args)


def _test(args: argparse.Namespace) -> int:
    settings = load_settings(db=db_path(args.db))
    channels = channels_from(settings.alerts, timeout=DEFAULT_TIMEOUT_SECONDS)
    if args.channel:
        channels = [c for c in channels if c.kind == args.channel]
    if not channels:
        which = f"the {args.channel} channel is" if args.channel else "no alert channel is"
        print(f"{which} not configured (see [alerts] in cockpit.toml)", file=sys.stderr)
        return FAILED
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "operator"
    now = now_ms()
    msg = AlertMessage(
        id=0,
        ts=now,
        severity=Severity.INFO,
        source="cli",
        title="Test message from the cockpit",
        message=f"sent by {user} on {socket.gethostname()} at"
        f" {datetime.fromtimestamp(now / 1000, tz=UTC).isoformat(timespec='seconds')};"
        " if you read this, the channel works",
    )
    failed = 0
    for d in deliver_now(channels, msg):
        tries = f"{d.attempts} attempt{'s' if d.attempts != 1 else ''}"
        if d.status is DeliveryStatus.DELIVERED:
            print(f"{d.target}: delivered ({tries})")
        else:
            failed += 1
            print(f"{d.target}: FAILED after {tries}: {d.error}", file=sys.stderr)
    return FAILED if failed else OK


def _deliveries(args: argparse.Namespace) -> int:
    path = db_path(args.db)
    if not path.exists():
        print(f"no state database at {path}; start the engine first", file=sys.stderr)
        return FAILED
    with reader(path) as conn:
        rows = recent(conn, dead_only=args.dead, limit=max(args.limit, 1))
    if not rows:
        print("no dead letters" if args.dead else "no deliveries recorded")
        return OK
    for r in rows:
        when = datetime.fromtimestamp(r.ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        ids = ",".join(str(i) for i in r.alert_ids)
        error = f"  {r.error}" if r.error else ""
        print(
            f"{when}  {r.status.value:9}  {r.channel:8}  alerts {ids}  {r.title!r}"
            f"  ({r.attempts} attempts){error}"
        )
    return OK
