"""Read models for the cockpit: typed rows and DataFrames built from the state store.

Every function takes a database path and `now` (epoch ms) where time matters, opens
one short-lived read-only connection, and lets SQLite do the aggregation, so a
page draws what it gets. Charts get at most `MAX_POINTS` points: series are
sampled in SQL at evenly spaced instants instead of being thinned in Python.

A missing database file is not an error here: the engine has not run yet, and
every read model has an empty value that pages show as an empty state.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from state.db import db_path, open_reader

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str] | None
MAX_POINTS = 1_500
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
SEVERITIES = ("CRITICAL", "HIGH", "WARNING", "INFO")


@contextmanager
def _read(path: PathLike) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection, or None when the engine has not created the file yet."""
    if not db_path(path).exists():
        yield None
        return
    conn = open_reader(path)
    try:
        yield conn
    finally:
        conn.close()


def _frame(
    conn: sqlite3.Connection | None, sql: str, params: Any = (), columns: Any = ()
) -> pd.DataFrame:
    if conn is None:
        return pd.DataFrame(columns=list(columns))
    try:
        cur = conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        # A file the engine is still creating has no tables yet: same as empty.
        if "no such table" not in str(exc):
            raise
        return pd.DataFrame(columns=list(columns))
    names = [d[0] for d in cur.description]
    return pd.DataFrame(cur.fetchall(), columns=names)


def _one(conn: sqlite3.Connection | None, sql: str, params: Any = ()) -> sqlite3.Row | None:
    if conn is None:
        return None
    try:
        row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None
    return row


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class EngineStatus:
    """The sidebar's facts: the engine row plus unacknowledged alerts by severity."""

    present: bool  # an engine has written its row at least once
    trading_state: str = "UNKNOWN"
    state_reason: str = ""
    state_changed_at: int | None = None
    mode: str = "PAPER"
    broker: str = ""
    broker_connected: bool = False
    market_open: bool = False
    heartbeat_at: int | None = None
    heartbeat_age_s: float | None = None
    stale: bool = True
    started_at: int | None = None
    stopped_at: int | None = None
    pid: int | None = None
    cycle_seconds: float | None = None
    last_cycle_at: int | None = None
    open_positions: int = 0
    open_orders: int = 0
    unacked: dict[str, int] = field(default_factory=dict)

    @property
    def unacked_total(self) -> int:
        return sum(self.unacked.values())

    @property
    def is_flat(self) -> bool:
        return self.open_positions == 0 and self.open_orders == 0


def heartbeat_stale_after(cycle_seconds: float | None) -> float:
    """Seconds after which a heartbeat counts as stale (the engine beats every second)."""
    return max(5.0, 3.0 * (cycle_seconds or 0.0))


def engine_status(path: PathLike, now: int) -> EngineStatus:
    with _read(path) as conn:
        row = _one(conn, "SELECT * FROM engine WHERE id = 1")
        if row is None:
            return EngineStatus(present=False, unacked=_unacked(conn))
        counts = _one(
            conn,
            "SELECT (SELECT COUNT(*) FROM positions WHERE qty != 0),"
            " (SELECT COUNT(*) FROM orders WHERE status IN"
            "  ('NEW','SUBMITTED','ACCEPTED','PARTIALLY_FILLED'))",
        )
        unacked = _unacked(conn)
    beat = row["heartbeat_at"]
    age = (now - beat) / 1000 if beat else None
    stale = (
        age is None
        or age > heartbeat_stale_after(row["cycle_seconds"])
        or bool(row["stopped_at"] and row["stopped_at"] >= (beat or 0))
    )
    return EngineStatus(
        present=True,
        trading_state=row["trading_state"] or "UNKNOWN",
        state_reason=row["state_reason"] or "",
        state_changed_at=row["state_changed_at"],
        mode=row["mode"] or "PAPER",
        broker=row["broker"] or "",
        broker_connected=bool(row["broker_connected"]),
        market_open=bool(row["market_open"]),
        heartbeat_at=beat,
        heartbeat_age_s=age,
        stale=stale,
        started_at=row["started_at"],
        stopped_at=row["stopped_at"],
        pid=row["pid"],
        cycle_seconds=row["cycle_seconds"],
        last_cycle_at=row["last_cycle_at"],
        open_positions=int(counts[0]) if counts else 0,
        open_orders=int(counts[1]) if counts else 0,
        unacked=unacked,
    )


def _unacked(conn: sqlite3.Connection | None) -> dict[str, int]:
    df = _frame(
        conn,
        "SELECT severity, COUNT(*) AS n FROM alerts WHERE acked_at IS NULL GROUP BY severity",
    )
    return {str(s): int(n) for s, n in zip(df.get("severity", []), df.get("n", []), strict=True)}


def symbols_with_positions(path: PathLike) -> list[str]:
    with _read(path) as conn:
        df = _frame(conn, "SELECT symbol FROM positions WHERE qty != 0 ORDER BY symbol")
    return [str(s) for s in df.get("symbol", [])]


def json_or_empty(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
