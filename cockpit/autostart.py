"""The cockpit's autostart: start `python -m engine run` when no engine is alive.

The cockpit never runs trading code itself (docs/ARCHITECTURE.md): it only launches the
engine as a detached child process on the same database. The engine's lease keeps
it single, so a race between two cockpit sessions costs at most one child that
refuses to start. Within one cockpit process, a lock and the remembered child
keep sessions from launching one each.

Off with COCKPIT_NO_AUTOSTART=1 or `cockpit.autostart = false`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cockpit.status_views import engine_status
from store.db import PROJECT_ROOT, db_path, now_ms

log = logging.getLogger(__name__)

LOG_DIR = PROJECT_ROOT / "var" / "log"
# How long a launched child may take to write its first heartbeat before the
# cockpit considers launching again.
STARTUP_GRACE_SECONDS = 20.0


class Outcome(StrEnum):
    DISABLED = "disabled"  # autostart is off and no engine is alive
    RUNNING = "running"  # a fresh heartbeat: nothing to do
    STARTED = "started"  # this call launched a child
    STARTING = "starting"  # a child launched earlier has not beaten yet
    FAILED = "failed"  # the child exited before writing a heartbeat


@dataclass(frozen=True)
class Autostart:
    outcome: Outcome
    message: str
    pid: int | None = None


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    launched: float
    log_file: Path


_lock = threading.Lock()
_children: dict[str, _Child] = {}


def autostart_enabled(setting: bool, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("COCKPIT_NO_AUTOSTART", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    return setting


def engine_command(path: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "run", "--db", str(path)]


def ensure_engine(
    path: str | os.PathLike[str] | None = None,
    *,
    enabled: bool,
    command: Sequence[str] | None = None,
    log_dir: Path | None = None,
) -> Autostart:
    """Launch the engine unless one is alive; say what happened."""
    file = db_path(path).resolve()
    status = engine_status(file, now_ms())
    if status.present and not status.stale:
        return Autostart(Outcome.RUNNING, f"engine pid {status.pid} is alive", status.pid)
    if not enabled:
        return Autostart(
            Outcome.DISABLED,
            "No engine is running and autostart is off (COCKPIT_NO_AUTOSTART or"
            " cockpit.autostart). Start one with `python -m engine run`.",
        )
    with _lock:
        child = _children.get(str(file))
        if child is not None:
            code = child.process.poll()
            waited = time.monotonic() - child.launched
            if code is None and waited < STARTUP_GRACE_SECONDS:
                return Autostart(
                    Outcome.STARTING,
                    f"The cockpit started the engine (pid {child.process.pid}) {waited:.0f} s ago;"
                    " waiting for its first heartbeat.",
                    child.process.pid,
                )
            if code is not None and waited < STARTUP_GRACE_SECONDS:
                return Autostart(
                    Outcome.FAILED,
                    f"The engine started by the cockpit exited with code {code};"
                    f" see {child.log_file}.",
                    child.process.pid,
                )
        child = _launch(file, command or engine_command(file), log_dir or LOG_DIR)
        _children[str(file)] = child
    log.warning("no fresh engine heartbeat on %s: started engine pid %d", file, child.process.pid)
    return Autostart(
        Outcome.STARTED,
        f"No engine heartbeat was fresh, so the cockpit started the engine (pid"
        f" {child.process.pid}); its output goes to {child.log_file}.",
        child.process.pid,
    )


def _launch(file: Path, command: Sequence[str], log_dir: Path) -> _Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "engine-autostart.log"
    env = dict(os.environ, COCKPIT_DB=str(file))
    with log_file.open("ab") as out:
        # A new session detaches the engine from the cockpit's terminal and signals:
        # closing the cockpit must not stop trading.
        process = subprocess.Popen(
            list(command),
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return _Child(process, time.monotonic(), log_file)
