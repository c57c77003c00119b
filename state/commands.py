"""The operator's commands: the only write path from the cockpit into the engine.

The cockpit and the CLI insert a `commands` row; the engine's command job picks
pending rows up every 250 ms, executes them on the trading thread and marks them
done or failed with a result. Commands are idempotent against double clicks: an
identical command still pending is returned instead of inserting a second one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from state.db import BUSY_TIMEOUT_MS, db_path, ensure_schema, now_ms


class CommandKind(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    FLATTEN = "flatten"
    EMERGENCY_STOP = "emergency_stop"
    TRAIN = "train"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    RETIRE = "retire"


class CommandStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Command:
    id: int
    kind: str
    args: dict[str, Any]
    requested_at: int
    requested_by: str
    status: CommandStatus
    result: str | None
    done_at: int | None


class CommandError(ValueError):
    """The command is malformed; nothing was written."""


def _row_to_command(row: sqlite3.Row | tuple[Any, ...]) -> Command:
    r = tuple(row)
    return Command(
        id=r[0],
        kind=r[1],
        args=json.loads(r[2] or "{}"),
        requested_at=r[3],
        requested_by=r[4],
        status=CommandStatus(r[5]),
        result=r[6],
        done_at=r[7],
    )


_COLUMNS = "id, kind, args, requested_at, requested_by, status, result, done_at"


def _connect(path: str | os.PathLike[str] | None) -> sqlite3.Connection:
    file = db_path(path)
    if not file.exists():
        ensure_schema(file)
    conn = sqlite3.connect(file, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def enqueue_command(
    kind: CommandKind | str,
    args: dict[str, Any] | None = None,
    requested_by: str = "operator",
    *,
    db: str | os.PathLike[str] | None = None,
) -> int:
    """Queue a command for the engine and return its id.

    If the same command (kind and args) is still pending, its id is returned and
    nothing is inserted, so a double click sends one command.
    """
    try:
        kind = CommandKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in CommandKind)
        raise CommandError(f"unknown command {kind!r}; allowed: {allowed}") from None
    payload = json.dumps(args or {}, sort_keys=True)
    conn = _connect(db)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT id FROM commands WHERE status = 'pending' AND kind = ? AND args = ?",
                (kind.value, payload),
            ).fetchone()
            if row:
                return int(row[0])
            cur = conn.execute(
                "INSERT INTO commands (kind, args, requested_at, requested_by, status)"
                " VALUES (?, ?, ?, ?, 'pending')",
                (kind.value, payload, now_ms(), requested_by),
            )
            return int(cur.lastrowid or 0)
    finally:
        conn.close()


def get_command(command_id: int, *, db: str | os.PathLike[str] | None = None) -> Command | None:
    conn = _connect(db)
    try:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM commands WHERE id = ?", (command_id,)
        ).fetchone()
        return _row_to_command(row) if row else None
    finally:
        conn.close()


def wait_for_command(
    command_id: int, timeout: float, *, db: str | os.PathLike[str] | None = None
) -> Command | None:
    """Poll until the command is done or failed; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        cmd = get_command(command_id, db=db)
        if cmd and cmd.status is not CommandStatus.PENDING:
            return cmd
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def pending_commands(conn: sqlite3.Connection) -> list[Command]:
    """Pending commands, oldest first (the engine's command job)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM commands WHERE status = 'pending' ORDER BY id"
    ).fetchall()
    return [_row_to_command(r) for r in rows]


def acknowledge_alerts(
    ids: list[int] | None, by: str = "operator", *, db: str | os.PathLike[str] | None = None
) -> int:
    """Acknowledge the given alerts, or all unacknowledged ones when ids is None."""
    conn = _connect(db)
    try:
        with conn:
            if ids is None:
                cur = conn.execute(
                    "UPDATE alerts SET acked_at = ?, acked_by = ? WHERE acked_at IS NULL",
                    (now_ms(), by),
                )
            else:
                marks = ",".join("?" * len(ids))
                cur = conn.execute(
                    f"UPDATE alerts SET acked_at = ?, acked_by = ?"
                    f" WHERE acked_at IS NULL AND id IN ({marks})",
                    (now_ms(), by, *ids),
                )
            return cur.rowcount
    finally:
        conn.close()
