"""The cycle's record: bars, regimes and `cycles` rows (signals go with their
orders, `store.orders`).

What the trading cycle writes every cycle, and the few reads it needs back
(stored history at start, the last cycle id, recent round trips for Kelly
sizing). Values come in as plain tuples in the column order named below; the
caller owns the transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "true_regime")
REGIME_COLUMNS = (
    "cycle_id",
    "symbol",
    "ts",
    "regime",
    "confidence",
    "source",
    "model_version",
    "rules_regime",
    "features",
)
CYCLE_COLUMNS = (
    "id",
    "started_at",
    "duration_ms",
    "feed_ms",
    "features_ms",
    "regime_ms",
    "signal_ms",
    "risk_ms",
    "execution_ms",
    "portfolio_ms",
    "state_ms",
    "bars",
    "rejected_bars",
    "intents",
    "denied",
    "orders",
    "fills",
    "error",
)


def _insert(table: str, columns: Sequence[str], verb: str = "INSERT") -> str:
    marks = ", ".join("?" for _ in columns)
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})"


_INSERT_BAR = _insert("bars", BAR_COLUMNS, "INSERT OR IGNORE")
_INSERT_REGIME = _insert("regimes", REGIME_COLUMNS)
_INSERT_CYCLE = _insert("cycles", CYCLE_COLUMNS)


def insert_bars(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Insert bars (a bar already stored is kept as it was: the feed never rewrites)."""
    conn.executemany(_INSERT_BAR, rows)


def recent_bars(conn: sqlite3.Connection, symbol: str, n: int) -> list[tuple[Any, ...]]:
    """The newest `n` stored bars of a symbol, oldest first, as
    (ts, open, high, low, close, volume, true_regime)."""
    rows = conn.execute(
        "SELECT ts, open, high, low, close, volume, true_regime FROM bars"
        " WHERE symbol = ? ORDER BY ts DESC LIMIT ?",
        (symbol, max(n, 1)),
    ).fetchall()
    rows.reverse()
    return rows


def insert_regimes(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    conn.executemany(_INSERT_REGIME, rows)


def last_cycle_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(id) FROM cycles").fetchone()
    return int(row[0] or 0)


def insert_cycle(conn: sqlite3.Connection, row: Sequence[Any]) -> None:
    conn.execute(_INSERT_CYCLE, row)


def recent_pnls(conn: sqlite3.Connection, n: int) -> list[float]:
    """The P&L of the last `n` round trips, newest first."""
    rows = conn.execute("SELECT pnl FROM trades ORDER BY id DESC LIMIT ?", (n,)).fetchall()
    return [float(r[0]) for r in rows]
