"""The gate's daily facts kept in memory, so an order does not re-read the day.

`load_risk_facts` answers "what happened today" with about eight queries; the
order path asks it for every order, which capped it near a thousand orders a
second. `DailyFacts` is built once from the store (the same queries, plus the
few rows it needs to keep counting) and then follows the engine's own events:

    order created, order changed    (the OMS, after its transaction committed)
    fill, trade closed              (the OMS, after its transaction committed)
    equity mark, cash movement      (the trader, after the row is written)
    trading-state change            (the trader)

A new trading day (`TradingDay`, on market time) starts when an event or a read
carries a time past the day's end. When the store held no row stamped at or after
the new day's start when it was last read (every row since came as an event, all
stamped before the new day), the new day starts empty in memory: no trades,
orders, fills or realized P&L yet, the streak at zero, measured from the last
mark. Otherwise (rows from the future, as after a restart behind the store's
clock) the new day is read from the store once. `facts(now)` is equal to
`load_risk_facts(conn, now, day=day)` on the same database (tests/test_daily_facts.py
checks that after random sequences of orders, fills, trades and marks), and
`context(now, ...)`, what the router and the monitor read every step, equals
`facts(now).context(...)` with the same live figures. When a
write fails and the OMS reloads from the database, `reload` does the same here.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Mapping, Sequence, Set
from typing import Any

from engine.domain import Fill, Order, Position, Purpose, TradingState
from engine.execution.portfolio import EquitySnapshot, TradeRecord
from engine.market.calendar import TradingDay
from engine.risk.context import ContextDraft, RiskContext
from engine.risk.facts import DAY_MS, ORDER_WINDOW_MS, RiskFacts, day_rows, load_risk_facts
from store.risk import newest_stamp


def _counts_as_trade(order: Order) -> bool:
    """An entry is one of the day's trades while it works or once anything filled."""
    return order.filled_qty > 0 or order.status.is_open


class DailyFacts:
    """Today's facts for the gate and the monitor, in memory; single-threaded."""

    def __init__(self, conn: sqlite3.Connection, now: int, day: TradingDay | None = None) -> None:
        self._conn = conn
        self._day = day or TradingDay()
        self.reload(now)

    def reload(self, now: int) -> None:
        """Forget memory and read the day again from the store (at start, after a failed write)."""
        conn = self._conn
        loaded = load_risk_facts(conn, now, day=self._day)
        self._start = loaded.day_start
        self._next_start = self._day.next_start(now)
        self._state = loaded.trading_state
        self._changed_at = loaded.state_changed_at
        self._realized = loaded.realized_today
        self._streak = loaded.consecutive_losses
        self._orders = loaded.orders_today
        self._fills = loaded.fills_today
        self._peak = loaded.peak_equity
        rows = day_rows(conn, now, self._start)
        self._entries = dict(rows.entries)
        self._trades = sum(self._entries.values())
        self._movements = list(rows.movements)
        self._last_mark = rows.last_mark
        self._base = rows.base_mark
        # The windows are read without their upper end: rows stamped after `now` (a
        # restart's market clock starts at the last stored bar, a live feed's may
        # have been ahead of it) enter them as the clock reaches them.
        self._last_exit = dict(rows.last_exits)
        self._order_times = deque(rows.order_times)
        self._newest = newest_stamp(conn)

    # -- reading ----------------------------------------------------------------

    def facts(self, now: int) -> RiskFacts:
        last_exit_at, order_times = self._windows(now)
        return RiskFacts(
            now=now,
            day_start=self._start,
            trading_state=self._state,
            state_changed_at=self._changed_at,
            trades_today=self._trades,
            realized_today=self._realized,
            consecutive_losses=self._streak,
            last_exit_at=last_exit_at,
            order_times=order_times,
            orders_today=self._orders,
            fills_today=self._fills,
            day_start_equity=self._day_start_equity(),
            peak_equity=self._peak,
        )

    def context(
        self,
        now: int,
        *,
        equity: float,
        cash: float | None,
        positions: Mapping[str, Position],
        last_prices: Mapping[str, float],
        open_orders: Sequence[Order],
        atr_pct: Mapping[str, float],
        returns: Mapping[str, Sequence[float]],
        broker_connected: bool,
        trading_state: TradingState,
        stale_symbols: Set[str],
        entries_blocked: str,
    ) -> RiskContext:
        """`facts(now).context(...)` with these live figures, built at once: the
        monitor asks every step, and the `RiskFacts` in between was a third of it;
        filled in as a `ContextDraft`, for a frozen __init__ was another third."""
        last_exit_at, order_times = self._windows(now)
        ctx: Any = ContextDraft()  # its slots are RiskContext's, which mypy cannot see
        ctx.now = now
        ctx.equity = equity
        ctx.trading_state = trading_state
        ctx.cash = cash
        ctx.day_start_equity = self._day_start_equity()
        ctx.peak_equity = self._peak
        ctx.positions = positions
        ctx.last_prices = last_prices
        ctx.open_orders = open_orders
        ctx.atr_pct = atr_pct
        ctx.trades_today = self._trades
        ctx.realized_today = self._realized
        ctx.consecutive_losses = self._streak
        ctx.last_exit_at = last_exit_at
        ctx.order_times = order_times
        ctx.orders_today = self._orders
        ctx.fills_today = self._fills
        ctx.returns = returns
        ctx.market_open = None
        ctx.closed_reasons = {}
        ctx.blackouts = None
        ctx.broker_connected = broker_connected
        ctx.stale_symbols = stale_symbols
        ctx.entries_blocked = entries_blocked
        ctx._memo = {}
        return ctx.done()  # type: ignore[no-any-return]

    def _windows(self, now: int) -> tuple[dict[str, int], tuple[int, ...]]:
        """At `now` (the day rolled first): each symbol's last exit within a day, and
        the order times within the order window."""
        self._roll(now)
        times = self._order_times
        while times and times[0] <= now - ORDER_WINDOW_MS:
            times.popleft()
        exits = self._last_exit
        after = now - DAY_MS
        last_exit_at = {s: t for s, t in exits.items() if after < t <= now} if exits else {}
        return last_exit_at, tuple([t for t in times if t <= now])

    def _day_start_equity(self) -> float | None:
        if self._base is None:
            return None
        equity, ts = self._base
        return equity + sum(amount for at, amount in self._movements if at > ts)

    # -- events -----------------------------------------------------------------

    def order_created(self, order: Order) -> None:
        at = order.created_at
        if self._roll(at):
            return
        self._order_times.append(at)
        if at < self._start:
            return
        self._orders += 1
        if order.purpose is Purpose.ENTRY:
            counts = _counts_as_trade(order)
            self._entries[order.client_order_id] = counts
            self._trades += counts

    def order_changed(self, order: Order) -> None:
        before = self._entries.get(order.client_order_id)
        if before is None:
            return  # not one of today's entries
        after = _counts_as_trade(order)
        self._entries[order.client_order_id] = after
        self._trades += after - before

    def filled(self, fill: Fill) -> None:
        if not self._roll(fill.ts) and fill.ts >= self._start:
            self._fills += 1

    def trade_closed(self, trade: TradeRecord) -> None:
        at = trade.exit_ts
        if self._roll(at):
            return
        self._last_exit[trade.symbol] = max(self._last_exit.get(trade.symbol, at), at)
        if at < self._start:
            return
        self._realized += trade.pnl
        if at > (self._changed_at or 0):
            self._streak = self._streak + 1 if trade.pnl < 0 else 0

    def marked(self, snapshot: EquitySnapshot) -> None:
        at = snapshot.ts
        if self._roll(at):
            return
        mark = (snapshot.equity, at)
        if self._base is None or self._base[1] == at:
            self._base = mark  # the day's first mark, or the base row replaced
        elif at < self._start and (at > self._base[1] or self._base[1] >= self._start):
            self._base = mark  # a later mark from before the day began
        if self._last_mark is None or at >= self._last_mark[1]:
            self._last_mark = mark
            self._peak = snapshot.peak

    def moved(self, amount: float, at: int) -> None:
        if not self._roll(at):
            self._movements.append((at, amount))

    def state_changed(self, state: TradingState, at: int) -> None:
        if self._roll(at):
            return
        self._state, self._changed_at = state, at
        self._streak = 0  # the streak counts from the change, and nothing closed after it yet

    # -- the trading day ----------------------------------------------------------

    def _roll(self, ts: int) -> bool:
        """At the first event or read of a new trading day, start the day in memory
        (False: the event is counted as usual), or read it from the store (True: every
        event is already in the store when it arrives, the OMS telling after its
        commit and the trader after its write, so it must not be counted again)."""
        if ts < self._next_start:
            return False
        start = self._day.start(ts)
        if self._newest is not None and self._newest >= start:
            self.reload(ts)
            return True
        self._new_day(start, ts)
        return False

    def _new_day(self, start: int, ts: int) -> None:
        """The day that begins at `start`, with nothing in it yet: what `reload` reads
        when no stored row is stamped at or after `start`."""
        self._start = start
        self._next_start = self._day.next_start(ts)
        self._realized = 0.0
        self._streak = 0
        self._orders = 0
        self._fills = 0
        self._entries = {}
        self._trades = 0
        self._base = self._last_mark
