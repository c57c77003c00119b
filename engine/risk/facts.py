"""The state store's share of the risk context: thin reads over trades, orders,
fills, equity and the engine row. Nothing here decides anything.

Every time here is market time (orders, fills, trades and equity marks are
stamped with the time of the bars they happened on). "Today" is the trading day
of `engine.market.calendar.TradingDay` (00:00 UTC around the clock unless the caller
passes another).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from engine.domain import Order, Position, TradingState
from engine.execution.account import net_movements
from engine.market.calendar import Blackout, TradingDay
from engine.risk.context import RiskContext

DAY_MS = 86_400_000
ORDER_WINDOW_MS = 60_000
_OPEN = ("NEW", "SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED")


@dataclass(frozen=True, slots=True)
class RiskFacts:
    now: int
    day_start: int
    trading_state: TradingState = TradingState.ACTIVE
    state_changed_at: int | None = None
    trades_today: int = 0
    realized_today: float = 0.0
    consecutive_losses: int = 0
    last_exit_at: Mapping[str, int] = field(default_factory=dict)
    order_times: tuple[int, ...] = ()
    orders_today: int = 0
    fills_today: int = 0
    day_start_equity: float | None = None
    peak_equity: float | None = None

    def context(
        self,
        *,
        equity: float,
        now: int | None = None,
        cash: float | None = None,
        positions: Mapping[str, Position] | None = None,
        last_prices: Mapping[str, float] | None = None,
        open_orders: Sequence[Order] = (),
        atr_pct: Mapping[str, float] | None = None,
        returns: Mapping[str, Sequence[float]] | None = None,
        market_open: Mapping[str, bool] | None = None,
        blackouts: Sequence[Blackout] | None = None,
        broker_connected: bool = True,
        stale_symbols: Set[str] = frozenset(),
        entries_blocked: str = "",
        trading_state: TradingState | None = None,
    ) -> RiskContext:
        """A full context: these facts plus the live figures only the cycle knows."""
        return RiskContext(
            now=self.now if now is None else now,
            equity=equity,
            trading_state=self.trading_state if trading_state is None else trading_state,
            cash=cash,
            day_start_equity=self.day_start_equity,
            peak_equity=self.peak_equity,
            positions=positions or {},
            last_prices=last_prices or {},
            open_orders=open_orders,
            atr_pct=atr_pct or {},
            trades_today=self.trades_today,
            realized_today=self.realized_today,
            consecutive_losses=self.consecutive_losses,
            last_exit_at=self.last_exit_at,
            order_times=self.order_times,
            orders_today=self.orders_today,
            fills_today=self.fills_today,
            returns=returns or {},
            market_open=market_open,
            blackouts=blackouts,
            broker_connected=broker_connected,
            stale_symbols=stale_symbols,
            entries_blocked=entries_blocked,
        )


def _one(conn: sqlite3.Connection, sql: str, *args: Any) -> Any:
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def day_start_equity(conn: sqlite3.Connection, day_start: int) -> float | None:
    """The equity the day's P&L and loss limit are measured from: the last mark
    before the day began, else the day's first mark. The gate and the Overview
    both read it here, so they agree on today's P&L. Deposits and withdrawals made
    since that mark are added: they moved equity without being P&L."""
    mark = (
        conn.execute(
            "SELECT equity, ts FROM equity WHERE ts < ? ORDER BY ts DESC LIMIT 1", (day_start,)
        ).fetchone()
        or conn.execute(
            "SELECT equity, ts FROM equity WHERE ts >= ? ORDER BY ts LIMIT 1", (day_start,)
        ).fetchone()
    )
    if mark is None:
        return None
    return float(mark[0]) + net_movements(conn, since=int(mark[1]) + 1)


def load_risk_facts(
    conn: sqlite3.Connection, now: int, *, day: TradingDay | None = None
) -> RiskFacts:
    """Read what the gate and the monitor need to know about today from the state store."""
    start = (day or TradingDay()).start(now)
    engine = conn.execute(
        "SELECT trading_state, state_changed_market_at FROM engine ORDER BY id LIMIT 1"
    ).fetchone()
    state = TradingState(engine[0]) if engine and engine[0] else TradingState.ACTIVE
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
    # The streak belongs to the trading day, and restarts at every state change, so
    # a new session or an operator's resume clears it. Iterated lazily: the streak
    # usually ends at the first win, a few rows in.
    pnls = conn.execute(
        "SELECT pnl FROM trades WHERE exit_ts > ? AND exit_ts >= ? AND exit_ts <= ?"
        " ORDER BY exit_ts DESC, id DESC LIMIT 1000",
        (changed_at or 0, start, now),
    )
    streak = 0
    for (pnl,) in pnls:
        if pnl is None or pnl >= 0:
            break
        streak += 1
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
    # `peak` is the portfolio's running peak, so the latest row answers without a
    # table scan; rows written without it fall back to the scan.
    peak = _one(conn, "SELECT peak FROM equity WHERE ts <= ? ORDER BY ts DESC LIMIT 1", now)
    if peak is None:
        peak = _one(conn, "SELECT MAX(equity) FROM equity WHERE ts <= ?", now)
    return RiskFacts(
        now=now,
        day_start=start,
        trading_state=state,
        state_changed_at=changed_at,
        trades_today=int(trades_today or 0),
        realized_today=float(realized or 0.0),
        consecutive_losses=streak,
        last_exit_at={str(s): int(t) for s, t in exits},
        order_times=tuple(int(t) for (t,) in times),
        orders_today=int(_one(conn, "SELECT COUNT(*) FROM orders WHERE created_at >= ?", start)),
        fills_today=int(_one(conn, "SELECT COUNT(*) FROM fills WHERE ts >= ?", start)),
        day_start_equity=day_start_equity(conn, start),
        peak_equity=peak,
    )


@dataclass(frozen=True, slots=True)
class DayRows:
    """What `engine.risk.daily` needs beyond `RiskFacts` to keep counting in memory."""

    entries: tuple[tuple[str, bool], ...]  # today's entries: counts as a trade?
    movements: tuple[tuple[int, float], ...]  # every cash movement (ts, amount)
    last_mark: tuple[float, int] | None  # the latest equity mark (equity, ts)
    base_mark: tuple[float, int] | None  # the mark the day's P&L is measured from
    last_exits: tuple[tuple[str, int], ...]  # per symbol, since a day before `now`
    order_times: tuple[int, ...]  # since a minute before `now`


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
    movements = tuple(
        (int(ts), float(amount))
        for ts, amount in conn.execute("SELECT ts, amount FROM cash_movements ORDER BY ts")
    )
    last = conn.execute("SELECT equity, ts FROM equity ORDER BY ts DESC LIMIT 1").fetchone()
    base = (
        conn.execute(
            "SELECT equity, ts FROM equity WHERE ts < ? ORDER BY ts DESC LIMIT 1", (start,)
        ).fetchone()
        or conn.execute(
            "SELECT equity, ts FROM equity WHERE ts >= ? ORDER BY ts LIMIT 1", (start,)
        ).fetchone()
    )
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
        movements=movements,
        last_mark=(float(last[0]), int(last[1])) if last else None,
        base_mark=(float(base[0]), int(base[1])) if base else None,
        last_exits=tuple((str(s), int(t)) for s, t in exits),
        order_times=tuple(int(t) for (t,) in times),
    )
