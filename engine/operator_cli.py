"""`python -m engine doctor`: the operator's readiness check before a marathon.

Exit codes follow the engine CLI: 0 every check OK, 1 something is not, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from engine.config import load_settings
from engine.doctor import checks_for, run_checks

OK, FAILED = 0, 1


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
