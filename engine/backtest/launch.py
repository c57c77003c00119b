"""Backtests and sweeps asked for through a `commands` row run in their own
process, never on the trading thread: the engine's handler only checks the
arguments and starts `python -m engine backtest|sweep ...`, which records its
progress and result in the state store itself. A running backtest therefore
costs the live cycle one process spawn, not a bar of its time.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from store.commands import Command
from store.db import PROJECT_ROOT, db_path

log = logging.getLogger(__name__)

VERBS = ("backtest", "sweep")
RESERVED = ("--db", "--run-id", "--command-id")  # set by the engine, never by the row


class LaunchRefused(ValueError):
    """The row's arguments cannot start a run; the message says why."""


def command_argv(verb: str, text: str) -> list[str]:
    if verb not in VERBS:
        raise LaunchRefused(f"kind {verb!r}: use backtest or sweep")
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise LaunchRefused(f"arguments {text[:60]!r}: {exc}") from None
    reserved = sorted({a.split("=")[0] for a in argv if a.split("=")[0] in RESERVED})
    if reserved:
        raise LaunchRefused(f"{', '.join(reserved)} is set by the engine, not by the command")
    return argv


class Launcher:
    """Starts runs as child processes; a daemon thread per child waits for it, so
    a finished run leaves no zombie and the trading thread never waits."""

    def __init__(self, db: str | Path | None) -> None:
        self.db = db_path(db)

    def handle(self, cmd: Command) -> str:
        from engine.process.handlers import CommandFailed

        verb = str(cmd.args.get("verb") or "backtest")
        try:
            argv = command_argv(verb, str(cmd.args.get("argv") or ""))
        except LaunchRefused as exc:
            raise CommandFailed(str(exc)) from None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        run_id = f"{'sweep-' if verb == 'sweep' else ''}{stamp}-c{cmd.id}"
        logs = self.db.parent / "backtests"
        logs.mkdir(parents=True, exist_ok=True)
        full = [
            sys.executable, "-m", "engine", verb, *argv,
            "--db", str(self.db), "--run-id", run_id, "--command-id", str(cmd.id),
        ]  # fmt: skip
        with (logs / f"{run_id}.log").open("wb") as out:
            child = subprocess.Popen(
                full, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        threading.Thread(target=child.wait, name=f"run-{run_id}", daemon=True).start()
        log.info("started %s %s as pid %d", verb, run_id, child.pid)
        return f"{verb} {run_id} started in its own process (pid {child.pid})"
