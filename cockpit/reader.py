"""What every cockpit read model shares: short read-only queries that read an absent
database or table as empty, the engine's market clock, and the time constants.

A read model takes a database path and `now` (epoch ms) where time matters, opens
one short-lived read-only connection, and lets SQLite do the aggregation, so a
page draws what it gets. Charts get at most `MAX_POINTS` points: series are
sampled in SQL at evenly spaced instants instead of being thinned in Python.

A missing database file is not an error here: the engine has not run yet, and
every read model has an empty value that pages show as an empty state.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import OrderedDict
from typing import Any, Generic, TypeVar

import pandas as pd

from engine.market.calendar import TradingDay
from store.db import maybe_reader

PathLike = str | os.PathLike[str] | None
MAX_POINTS = 1_500
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
SEVERITIES = ("CRITICAL", "HIGH", "WARNING", "INFO")

# A read-only connection, or None when the engine has not created the file yet.
read = maybe_reader
K = TypeVar("K")
V = TypeVar("V")


def frame(
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


def one(conn: sqlite3.Connection | None, sql: str, params: Any = ()) -> sqlite3.Row | None:
    if conn is None:
        return None
    try:
        row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None
    return row


def rows(conn: sqlite3.Connection | None, sql: str, params: Any = ()) -> list[Any]:
    """Every row, for a read model that computes on them; no table yet reads as none."""
    if conn is None:
        return []
    try:
        return list(conn.execute(sql, params).fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return []


# SQLite answers MIN or MAX alone from an index in one probe, but MIN and MAX
# together in one SELECT scan the table: ask for each in its own subquery.
SPAN = "SELECT (SELECT MIN({col}) FROM {table} {where}), (SELECT MAX({col}) FROM {table} {where})"


def distinct(conn: sqlite3.Connection | None, table: str, column: str) -> list[str]:
    """Distinct non-null values of an indexed column, one index probe per value
    (a loose index scan) instead of a scan of every row."""
    df = frame(
        conn,
        f"WITH RECURSIVE v(x) AS (SELECT MIN({column}) FROM {table} UNION ALL"
        f" SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > v.x) FROM v"
        " WHERE v.x IS NOT NULL) SELECT x FROM v WHERE x IS NOT NULL",
        columns=["x"],
    )
    return [str(x) for x in df["x"]]


def equity_range(path: PathLike) -> tuple[int, int] | None:
    """The first and last equity mark's time, each from the index in one probe."""
    with read(path) as conn:
        row = one(conn, SPAN.format(col="ts", table="equity", where=""))
    return (int(row[0]), int(row[1])) if row and row[0] is not None else None


def col(row: sqlite3.Row, name: str) -> Any:
    """A column the engine adds when it starts (None on a database it has not opened yet)."""
    return row[name] if name in row.keys() else None  # noqa: SIM118 (a Row iterates values)


def market_clock(conn: sqlite3.Connection | None) -> tuple[int | None, TradingDay]:
    """The engine's market time and its trading-day definition, the one the risk gate
    uses; without an engine row, the last equity mark and the 24/7 default."""
    row = one(conn, "SELECT * FROM engine WHERE id = 1")
    market = col(row, "market_time") if row is not None else None
    day = TradingDay.from_spec(col(row, "trading_day") if row is not None else None)
    if market is None:
        last = one(conn, "SELECT max(ts) FROM equity")
        market = last[0] if last is not None else None
    return (int(market) if market is not None else None), day


def json_or_empty(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class LruCache(Generic[K, V]):
    """The last `size` entries used, for the process (every Streamlit session of one
    server shares it), thread-safe; the least recently used goes first. An entry is
    only a head start: its user checks it against the table before trusting it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
