"""The state store's share of the risk context, as `RiskFacts`: what happened
today, read through store.risk (trades, orders, fills, equity and the engine
row). Nothing here decides anything.

Every time here is market time (orders, fills, trades and equity marks are
stamped with the time of the bars they happened on). "Today" is the trading day
of `engine.market.calendar.TradingDay` (00:00 UTC around the clock unless the caller
passes another).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from engine.domain import Order, Position, TradingState
from engine.market.calendar import Blackout, TradingDay
from engine.risk.context import RiskContext
from store.risk import DAY_MS, ORDER_WINDOW_MS, DayRows, day_rows, day_start_equity, read_facts

__all__ = [
    "DAY_MS",
    "ORDER_WINDOW_MS",
    "DayRows",
    "RiskFacts",
    "day_rows",
    "day_start_equity",
    "load_risk_facts",
]


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


def load_risk_facts(
    conn: sqlite3.Connection, now: int, *, day: TradingDay | None = None
) -> RiskFacts:
    """Read what the gate and the monitor need to know about today from the state store."""
    start = (day or TradingDay()).start(now)
    rows = read_facts(conn, now, start)
    return RiskFacts(
        now=now,
        day_start=start,
        trading_state=TradingState(rows.trading_state)
        if rows.trading_state
        else TradingState.ACTIVE,
        state_changed_at=rows.state_changed_at,
        trades_today=rows.trades_today,
        realized_today=rows.realized_today,
        consecutive_losses=rows.consecutive_losses,
        last_exit_at=rows.last_exits,
        order_times=rows.order_times,
        orders_today=rows.orders_today,
        fills_today=rows.fills_today,
        day_start_equity=rows.day_start_equity,
        peak_equity=rows.peak_equity,
    )
