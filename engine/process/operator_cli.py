"""The operator's verbs for a marathon on a real market.

- `doctor`: is the configuration ready (feed, broker, database, alert channels)?
- `reconcile`: compare the running engine's book with the broker's now.
- `adopt-broker --reason TEXT`: make the broker's positions the engine's and cancel the
  orders it does not know (audited).

The last two are queued as commands for the running engine and wait for its
answer, as every verb that acts on trading does. Exit codes follow the engine
CLI: 0 done or every check OK, 1 failed or not OK, 2 usage or configuration
error, 3 no engine answered in time.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from engine.config import load_settings
from engine.process.doctor import checks_for, run_checks
from engine.process.queued import FAILED, OK, run_queued
from store.commands import CommandKind


def register_cli(subparsers: Any) -> None:
    """Add `doctor` to the engine's verb subparsers (sets `func`)."""
    p = subparsers.add_parser(
        "doctor",
        help="check feed, broker, database and alert channels; one line per check",
        description="Check that the configured feed, broker, database and alert channels"
        " are ready. Each check answers within 10 s; exits 1 if any is not OK.",
    )
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.add_argument(
        "--test-alert", action="store_true", help="send a test message on every alert channel"
    )
    p.set_defaults(func=doctor)

    p = subparsers.add_parser(
        "reconcile",
        help="compare the engine's positions and orders with the broker's now",
        description="Ask the running engine to reconcile with the broker; a difference"
        " halts trading with a CRITICAL alert listing it.",
    )
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    p.set_defaults(func=_queued, kind=CommandKind.RECONCILE)

    p = subparsers.add_parser(
        "adopt-broker",
        help="make the broker's positions the engine's and cancel orders it does not know"
        " (audited; trading stays halted)",
        description="Book the difference between the broker's positions and the engine's"
        " at the last price and cancel at the broker every order the engine does not know,"
        " with your reason in the audit trail. Resume separately.",
    )
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.add_argument("--reason", required=True, help="why the broker is right (audited)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    p.set_defaults(func=_queued, kind=CommandKind.ADOPT_BROKER)


def _queued(args: argparse.Namespace) -> int:
    kind: CommandKind = args.kind
    payload = {"reason": args.reason} if getattr(args, "reason", None) else {}
    return run_queued(kind, payload, db=args.db, timeout=args.timeout)


def doctor(args: argparse.Namespace) -> int:
    settings = load_settings()
    # The client library logs every refused connect at ERROR; the check line says it once.
    logging.getLogger("ib_async").setLevel(logging.CRITICAL)
    results = run_checks(checks_for(settings, args.db, test_alert=args.test_alert))
    for check in results:
        print(check.line(), flush=True)
    failed = [c for c in results if not c.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} checks failed", flush=True)
        return FAILED
    print(f"ready: {len(results)} checks OK", flush=True)
    return OK
