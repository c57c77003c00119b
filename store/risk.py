"""The risk gate's reads: today's trades, orders, fills, equity marks and the engine
row, as plain rows (engine.risk.facts turns them into `RiskFacts`), and the
`risk_usage` gauges the monitor writes. Nothing here decides anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from store.account import movements, net_movements

DAY_MS = 86_400_000
ORDER_WINDOW_MS = 60_000
_OPEN = ("NEW", "SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED")


@dataclass(frozen=True, slots=True)
class FactRows:
    """What happened today, read at `now` from the day that began at `start`."""

    trading_state: str | None
    state_changed_at: int | None
    trades_today: int
    realized_today: float
    consecutive_losses: int
    last_exits: dict[str, int]
    order_times: tuple[int, ...]
    orders_today: int
    fills_today: int
    day_start_equity: float | None
    peak_equity: float | None


@dataclass(frozen=True, slots=True)
class DayRows:
    """What `engine.risk.daily` needs beyond `RiskFacts` to keep counting in memory."""

    entries: tuple[tuple[str, bool], ...]  # today's entries: counts as a trade?
    movements: tuple[tuple[int, float], ...]  # every cash movement (ts, amount)
    last_mark: tuple[float, int] | None  # the latest equity mark (equity, ts)
    base_mark: tuple[float, int] | None  # the mark the day's P&L is measured from
    last_exits: tuple[tuple[str, int], ...]  # per symbol, since a day before `now`
    order_times: tuple[int, ...]  # since a minute before `now`


def _one(conn: sqlite3.Connection, sql: str, *args: Any) -> Any:
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def _base_mark(conn: sqlite3.Connection, day_start: int) -> tuple[float, int] | None:
    """The last mark before the day began, else the day's first mark."""
    mark = (
        conn.execute(
            "SELECT equity, ts FROM equity WHERE ts < ? ORDER BY ts DESC LIMIT 1", (day_start,)
        ).fetchone()
        or conn.execute(
            "SELECT equity, ts FROM equity WHERE ts >= ? ORDER BY ts LIMIT 1", (day_start,)
        ).fetchone()
    )
    return (float(mark[0]), int(mark[1])) if mark else None


def day_start_equity(conn: sqlite3.Connection, day_start: int) -> float | None:
    """The equity the day's P&L and loss limit are measured from: the last mark
    before the day began, else the day's first mark. The gate and the Overview
    both read it here, so they agree on today's P&L. Deposits and withdrawals made
    since that mark are added: they moved equity without being P&L."""
    mark = _base_mark(conn, day_start)
    if mark is None:
        return None
    return mark[0] + net_movements(conn, since=mark[1] + 1)


def _losing_streak(conn: sqlite3.Connection, since: int, start: int, now: int) -> int:
    """Losing round trips in a row, newest first. Iterated lazily: the streak usually
    ends at the first win, a few rows in."""
    pnls = conn.execute(
        "SELECT pnl FROM trades WHERE exit_ts > ? AND exit_ts >= ? AND exit_ts <= ?"
        " ORDER BY exit_ts DESC, id DESC LIMIT 1000",
        (since, start, now),
    )
    streak = 0
    for (pnl,) in pnls:
        if pnl is None or pnl >= 0:
            break
        streak += 1
    return streak


def _peak(conn: sqlite3.Connection, now: int) -> float | None:
    """`peak` is the portfolio's running peak, so the latest row answers without a
    table scan; rows written without it fall back to the scan."""
    peak = _one(conn, "SELECT peak FROM equity WHERE ts <= ? ORDER BY ts DESC LIMIT 1", now)
    if peak is None:
        peak = _one(conn, "SELECT MAX(equity) FROM equity WHERE ts <= ?", now)
    return None if peak is None else float(peak)


def read_facts(conn: sqlite3.Connection, now: int, start: int) -> FactRows:
    """Today's facts at `now`, for the trading day that began at `start`."""
    engine = conn.execute(
        "SELECT trading_state, state_changed_market_at FROM engine ORDER BY id LIMIT 1"
    ).fetchone()
    changed_at = engine[1] if engine else None
    marks = ",".join("?" * len(_OPEN))
    trades_today = _one(
        conn,
        "SELECT COUNT(*) FROM orders WHERE purpose = 'ENTRY' AND created_at >= ?"
        f" AND (filled_qty > 0 OR status IN ({marks}))",
        start,
        *_OPEN,
    )
    realized = _one(conn, "SELECT TOTAL(pnl) FROM trades WHERE exit_ts >= ?", start)
    exits = conn.execute(
        "SELECT symbol, MAX(exit_ts) FROM trades WHERE exit_ts > ? AND exit_ts <= ?"
        " GROUP BY symbol",
        (now - DAY_MS, now),
    ).fetchall()
    times = conn.execute(
        "SELECT created_at FROM orders WHERE created_at > ? AND created_at <= ?"
        " ORDER BY created_at",
        (now - ORDER_WINDOW_MS, now),
    ).fetchall()
    return FactRows(
        trading_state=engine[0] if engine else None,
        state_changed_at=changed_at,
        trades_today=int(trades_today or 0),
        realized_today=float(realized or 0.0),
        consecutive_losses=_losing_streak(conn, changed_at or 0, start, now),
        last_exits={str(s): int(t) for s, t in exits},
        order_times=tuple(int(t) for (t,) in times),
        orders_today=int(_one(conn, "SELECT COUNT(*) FROM orders WHERE created_at >= ?", start)),
        fills_today=int(_one(conn, "SELECT COUNT(*) FROM fills WHERE ts >= ?", start)),
        day_start_equity=day_start_equity(conn, start),
        peak_equity=_peak(conn, now),
    )


def day_rows(conn: sqlite3.Connection, now: int, start: int) -> DayRows:
    """The rows behind today's facts; the windows have no upper end (see engine.risk.daily)."""
    entries = tuple(
        (str(coid), (filled or 0) > 0 or status in _OPEN)
        for coid, status, filled in conn.execute(
            "SELECT client_order_id, status, filled_qty FROM orders"
            " WHERE purpose = 'ENTRY' AND created_at >= ?",
            (start,),
        )
    )
    last = conn.execute("SELECT equity, ts FROM equity ORDER BY ts DESC LIMIT 1").fetchone()
    exits = conn.execute(
        "SELECT symbol, MAX(exit_ts) FROM trades WHERE exit_ts > ? GROUP BY symbol",
        (now - DAY_MS,),
    )
    times = conn.execute(
        "SELECT created_at FROM orders WHERE created_at > ? ORDER BY created_at",
        (now - ORDER_WINDOW_MS,),
    )
    return DayRows(
        entries=entries,
        movements=tuple(movements(conn)),
        last_mark=(float(last[0]), int(last[1])) if last else None,
        base_mark=_base_mark(conn, start),
        last_exits=tuple((str(s), int(t)) for s, t in exits),
        order_times=tuple(int(t) for (t,) in times),
    )


def newest_stamp(conn: sqlite3.Connection) -> int | None:
    """The latest market time stamped on any row the day's facts are read from
    (orders, fills, trades, equity marks, cash movements, the state change)."""
    newest = _one(
        conn,
        "SELECT MAX(t) FROM ("
        " SELECT MAX(created_at) AS t FROM orders"
        " UNION ALL SELECT MAX(ts) FROM fills"
        " UNION ALL SELECT MAX(exit_ts) FROM trades"
        " UNION ALL SELECT MAX(ts) FROM equity"
        " UNION ALL SELECT MAX(ts) FROM cash_movements"
        " UNION ALL SELECT MAX(state_changed_market_at) FROM engine)",
    )
    return None if newest is None else int(newest)


def replace_usage(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """(name, value, limit, unit, share, detail, updated_at) per limit, each replacing
    the limit's row."""
    conn.executemany(
        "INSERT OR REPLACE INTO risk_usage (name, value, limit_value, unit, share, detail,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
