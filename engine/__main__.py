"""`python -m engine`: run the engine headless, or talk to a running one.

Every verb takes `--db` (else $COCKPIT_DB, else var/cockpit.db). Verbs that act
on trading queue a command for the running engine and wait for its result.
Exit codes: 0 done, 1 failed or refused, 2 usage or configuration error,
3 no engine answered in time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.config import ConfigError, Settings, effective, load_settings
from engine.market.calendar import EventsFileError
from engine.process import logs, operator_cli
from engine.process.queued import FAILED, NO_ENGINE, OK, queue_and_wait, run_queued
from store.commands import CommandKind
from store.db import PROJECT_ROOT, db_path, now_ms, reader
from store.status import read_status, replay_summary

log = logging.getLogger("engine")

USAGE = 2


def _symbols_arg(text: str) -> int | tuple[str, ...]:
    text = text.strip()
    if text.isdigit():
        return int(text)
    return tuple(s for s in text.split(",") if s.strip())


def _settings(args: argparse.Namespace) -> Settings:
    engine: dict[str, Any] = {}
    for key, attr in [
        ("cycle_seconds", "cycle_seconds"),
        ("seed", "seed"),
        ("symbols", "symbols"),
        ("feed", "feed"),
        ("data_dir", "data"),
        ("speed", "speed"),
        ("bar_interval", "bar_interval"),
    ]:
        value = getattr(args, attr, None)
        if value is not None:
            engine[key] = value
    return load_settings(db=db_path(getattr(args, "db", None)), engine=engine)


# ------------------------------------------------------------------- verbs


def cmd_run(args: argparse.Namespace) -> int:
    from engine.execution.brokers.base import BrokerUnavailable
    from engine.market.feeds import FeedError
    from engine.process.lease import LeaseHeld
    from engine.process.runner import Engine

    try:
        settings = _settings(args)
        logs.setup(args.verbose, settings.logs, db_path(args.db))
        engine = Engine(settings, args.db)
        engine.open()
    except (LeaseHeld, FeedError, BrokerUnavailable) as exc:
        print(f"engine not started: {exc}", file=sys.stderr)
        return FAILED
    except (sqlite3.Error, OSError) as exc:
        # A read-only or full disk, a path that is a folder: one line, not a traceback.
        log.debug("start failed", exc_info=True)
        print(f"engine not started: {db_path(args.db)}: {exc}", file=sys.stderr)
        return FAILED
    engine.run(for_seconds=args.for_seconds)
    if engine.guard is not None and engine.guard.lost:
        print(f"engine stopped: {engine.guard.lost}", file=sys.stderr)
        return FAILED
    if engine.replay_done():
        summary = replay_summary(args.db)
        if summary is not None:
            print(summary.describe())
    return OK


def cmd_status(args: argparse.Namespace) -> int:
    status = read_status(args.db, now_ms())
    if status is None:
        print(f"no state database at {db_path(args.db)}; start the engine first")
        return NO_ENGINE
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        print(status.describe())
    return OK


def _simple(kind: CommandKind, build: Callable[[argparse.Namespace], dict[str, Any]]) -> Any:
    def run(args: argparse.Namespace) -> int:
        return run_queued(kind, build(args), db=args.db, timeout=args.timeout)

    return run


def _positive_amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"an amount must be a positive number, got {text!r}")
    return value


def _cash_args(sign: int) -> Callable[[argparse.Namespace], dict[str, Any]]:
    def build(args: argparse.Namespace) -> dict[str, Any]:
        return {"amount": sign * args.amount, "reason": args.reason}

    return build


def _resume_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.confirm:
        out["confirm"] = True
    if args.reason:
        out["reason"] = args.reason
    return out


def cmd_stop(args: argparse.Namespace) -> int:
    """The emergency stop: HALTED, cancel all, flatten; waits until flat."""
    started = time.monotonic()
    reason = args.reason or "emergency stop from the command line"
    code, message = queue_and_wait(
        CommandKind.EMERGENCY_STOP, {"reason": reason}, db=args.db, timeout=args.timeout
    )
    if code != OK:
        print(message, file=sys.stderr)
        return code
    deadline = started + args.timeout
    while True:
        status = read_status(args.db, now_ms())
        if status and status.trading_state == "HALTED" and status.open_positions == 0:
            elapsed = time.monotonic() - started
            print(f"HALTED and flat in {elapsed * 1000:.0f} ms ({message})")
            return OK
        if time.monotonic() >= deadline:
            held = status.open_positions if status else "?"
            print(
                f"HALTED but not yet flat after {args.timeout:.0f} s: {held} positions open",
                file=sys.stderr,
            )
            return FAILED
        time.sleep(0.05)


def cmd_config(args: argparse.Namespace) -> int:
    from store.secrets import SecretStore

    settings = _settings(args)
    path = db_path(args.db)
    stored: set[str] = set()
    if path.exists():
        with reader(path) as conn:
            stored = {name for name, _ in SecretStore(path).names(conn)}
    print(json.dumps(effective(settings, stored), indent=2))
    return OK


def cmd_up(args: argparse.Namespace) -> int:
    """Engine and cockpit together, the way `make run` starts them."""
    _settings(args)  # a bad configuration stops here, with its message
    env = dict(os.environ)
    if args.db:
        env["COCKPIT_DB"] = str(Path(args.db).resolve())
    engine_cmd = [sys.executable, "-m", "engine", "run"]
    for flag, value in [
        ("--cycle-seconds", args.cycle_seconds),
        ("--seed", args.seed),
        ("--symbols", args.symbols_raw),
    ]:
        if value is not None:
            engine_cmd += [flag, str(value)]
    ui_cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PROJECT_ROOT / "app.py"),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
    ]
    engine = subprocess.Popen(engine_cmd, env=env, cwd=PROJECT_ROOT)
    ui = subprocess.Popen(ui_cmd, env={**env, "COCKPIT_NO_AUTOSTART": "1"}, cwd=PROJECT_ROOT)
    print(f"cockpit on http://{args.address}:{args.port}  (Ctrl-C stops both)", flush=True)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping and engine.poll() is None and ui.poll() is None:
            time.sleep(0.2)
    finally:
        for proc in (ui, engine):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (ui, engine):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return OK if stopping else (engine.returncode or ui.returncode or OK)


def cmd_set_password(args: argparse.Namespace) -> int:
    from store.passwords import set_password_cli

    return set_password_cli([])


# ------------------------------------------------------------------ parser


Subparsers = Any  # argparse's _SubParsersAction, private in typeshed's terms


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine", description="Cockpit trading engine and its controls."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_run_and_status(sub)
    _add_trading_commands(sub)
    _add_setup(sub)
    _add_other_clis(sub)
    return parser


def _verb(
    sub: Subparsers, name: str, help_text: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--db", help="state database (default $COCKPIT_DB or var/cockpit.db)")
    p.set_defaults(func=func)
    return p


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cycle-seconds", type=float, help="seconds between cycles")
    p.add_argument("--seed", type=int, help="seed of the simulated market")
    p.add_argument("--symbols", type=_symbols_arg, help="N simulated symbols, or A,B,C")
    p.add_argument("--feed", choices=["sim", "csv", "ccxt", "ib"], help="market data source")
    p.add_argument("--data", help="folder of SYMBOL.csv files for --feed csv")
    p.add_argument(
        "--speed", help="sim and csv: market seconds per wall second, or max (no pacing)"
    )
    p.add_argument("--bar-interval", help="bar length: 1m, 5m, 1h, 1d, ...")


def _waiting(p: argparse.ArgumentParser, default: float = 10.0) -> None:
    p.add_argument("--timeout", type=float, default=default, help="seconds to wait")


def _add_run_and_status(sub: Subparsers) -> None:
    p = _verb(sub, "run", "run the engine in the foreground until Ctrl-C", cmd_run)
    _engine_options(p)
    p.add_argument("--for", dest="for_seconds", type=float, help="stop after this many seconds")
    p = _verb(sub, "status", "trading state, heartbeat, P&L and positions", cmd_status)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_trading_commands(sub: Subparsers) -> None:
    """The verbs that queue a command for the running engine and wait for its answer."""
    pause = _simple(CommandKind.PAUSE, lambda a: {})
    _waiting(_verb(sub, "pause", "no new entries; exits continue", pause))
    resume = _simple(CommandKind.RESUME, _resume_args)
    p = _verb(sub, "resume", "resume trading (from HALTED: --confirm --reason)", resume)
    p.add_argument("--confirm", action="store_true", help="required to leave HALTED")
    p.add_argument("--reason", help="why trading may resume (required to leave HALTED)")
    _waiting(p)
    flatten = _simple(CommandKind.FLATTEN, lambda a: {"symbol": a.symbol} if a.symbol else {})
    p = _verb(sub, "flatten", "close all positions (or one symbol) and pause", flatten)
    p.add_argument("symbol", nargs="?", help="only this symbol")
    _waiting(p)
    p = _verb(
        sub, "stop", "EMERGENCY STOP: halt, cancel all, close all; waits until flat", cmd_stop
    )
    p.add_argument("--reason", help="recorded in the audit trail")
    _waiting(p, 30.0)
    for name, sign, help_text in (
        ("deposit", 1, "add cash to the account (not P&L; audited)"),
        ("withdraw", -1, "take cash out of the account (not a loss; audited)"),
    ):
        p = _verb(sub, name, help_text, _simple(CommandKind.CASH_MOVEMENT, _cash_args(sign)))
        p.add_argument("amount", type=_positive_amount, help="in account currency")
        p.add_argument("--reason", required=True, help="recorded in the audit trail")
        _waiting(p)


def _add_setup(sub: Subparsers) -> None:
    p = _verb(sub, "config", "print the effective configuration (secrets masked)", cmd_config)
    _engine_options(p)
    p = _verb(sub, "up", "start the engine and the cockpit together", cmd_up)
    p.add_argument("--cycle-seconds", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--symbols", dest="symbols_raw")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    _verb(
        sub, "set-password", "set the cockpit password (stored as an argon2 hash)", cmd_set_password
    )


def _add_other_clis(sub: Subparsers) -> None:
    """The verbs each package registers itself (ML only when its extras are installed)."""
    try:
        from engine.ml.cli import register_cli
    except ImportError:
        pass
    else:
        register_cli(sub)
    from engine.backtest.verbs import register_cli as register_backtest
    from engine.process.alerts_cli import register_cli as register_alerts
    from engine.process.audit_cli import register_cli as register_audit
    from engine.process.backup_cli import register_cli as register_backup
    from engine.process.secrets_cli import register_cli as register_secrets

    register_secrets(sub)
    register_audit(sub)
    operator_cli.register_cli(sub)
    register_alerts(sub)
    register_backup(sub)
    register_backtest(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.verbose)
    try:
        return int(args.func(args))
    except (ConfigError, EventsFileError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":
    sys.exit(main())
