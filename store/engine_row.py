"""The engine's own row (`engine`, id 1): trading state, clocks and what the
engine tells readers about itself.

The lease (owner, pid, heartbeat) lives in the same row; `engine.process.lease`
decides who may hold it. Writes here are not committed: the caller's
transaction owns them.
"""

from __future__ import annotations

import sqlite3


def read_state(conn: sqlite3.Connection) -> tuple[str, str] | None:
    """(trading_state, state_reason), or None before the row exists."""
    row = conn.execute("SELECT trading_state, state_reason FROM engine WHERE id = 1").fetchone()
    if not row:
        return None
    return str(row[0]), str(row[1] or "")


def write_state(conn: sqlite3.Connection, state: str, reason: str, now: int) -> None:
    conn.execute(
        "UPDATE engine SET trading_state = ?, state_reason = ?, state_changed_at = ? WHERE id = 1",
        (state, reason, now),
    )


def state_changed_in_market(conn: sqlite3.Connection, market_now: int) -> None:
    """Limits that count from a state change (the losing streak) count in market time."""
    conn.execute("UPDATE engine SET state_changed_market_at = ? WHERE id = 1", (market_now,))


def cycle_done(conn: sqlite3.Connection, started_at: int, market_now: int) -> None:
    conn.execute(
        "UPDATE engine SET last_cycle_at = ?, market_time = ? WHERE id = 1",
        (started_at, market_now),
    )


def cycle_marks(conn: sqlite3.Connection) -> tuple[int | None, int | None] | None:
    """(last_cycle_at, started_at) for the dead-man's switch; None without a row."""
    row = conn.execute("SELECT last_cycle_at, started_at FROM engine WHERE id = 1").fetchone()
    return None if row is None else (row[0], row[1])


def write_pace(
    conn: sqlite3.Connection,
    *,
    cycle_seconds: float,
    speed: float | None,
    simulated: bool,
    bar_interval: str,
    heartbeat_seconds: float,
) -> None:
    """How the engine runs, for readers that pace or judge it."""
    conn.execute(
        "UPDATE engine SET cycle_seconds = ?, speed = ?, simulated = ?, bar_interval = ?,"
        " heartbeat_seconds = ? WHERE id = 1",
        (cycle_seconds, speed, int(simulated), bar_interval, heartbeat_seconds),
    )


def write_market(conn: sqlite3.Connection, trading_day: str, market_now: int) -> None:
    conn.execute(
        "UPDATE engine SET trading_day = ?, market_time = ? WHERE id = 1",
        (trading_day, market_now),
    )


def write_links(
    conn: sqlite3.Connection, *, broker_connected: bool, market_open: bool, market_now: int
) -> None:
    conn.execute(
        "UPDATE engine SET broker_connected = ?, market_open = ?, market_time = ? WHERE id = 1",
        (int(broker_connected), int(market_open), market_now),
    )


# ------------------------------------------------------------------- lease


def lease_holder(conn: sqlite3.Connection) -> tuple[str | None, int | None, int | None] | None:
    """(owner, pid, heartbeat_at) of an engine that has not stopped; None when the row
    is missing or its engine stopped."""
    row = conn.execute(
        "SELECT owner, pid, heartbeat_at FROM engine WHERE id = 1 AND stopped_at IS NULL"
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def claim_lease(
    conn: sqlite3.Connection, *, owner: str, pid: int, now: int, mode: str, broker: str
) -> None:
    """Take the lease: the row made ACTIVE when new, else the owner's fields replaced
    (the trading state is kept, so HALTED survives a restart)."""
    conn.execute(
        "INSERT INTO engine (id, owner, pid, started_at, heartbeat_at, mode, broker,"
        " trading_state, state_reason, state_changed_at)"
        " VALUES (1, ?, ?, ?, ?, ?, ?, 'ACTIVE', 'started', ?)"
        " ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid,"
        " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,"
        " mode = excluded.mode, broker = excluded.broker, stopped_at = NULL",
        (owner, pid, now, now, mode, broker, now),
    )


def beat(conn: sqlite3.Connection, owner: str, now: int) -> None:
    conn.execute("UPDATE engine SET heartbeat_at = ? WHERE id = 1 AND owner = ?", (now, owner))


def release_lease(conn: sqlite3.Connection, owner: str, now: int) -> None:
    conn.execute(
        "UPDATE engine SET stopped_at = ?, heartbeat_at = ? WHERE id = 1 AND owner = ?",
        (now, now, owner),
    )
