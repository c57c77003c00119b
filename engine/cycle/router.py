"""The order router: size -> gate -> record -> OMS.

Every intent, the cycle's and the monitor's and the flatten's alike, takes this
one path: entries are sized by the configured method, the gate returns a typed
verdict over a risk context of this moment, the verdict is stored as a signal
(a denied intent is never silently dropped), and an allowed one is committed
before the OMS sends it. A denied entry locks the symbol (or the account, for a
daily limit) until it could pass, so the same denial is not stored every cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.config import RiskSettings
from engine.cycle.market import MarketClock, MarketData
from engine.cycle.recorder import Stopwatch
from engine.decide.sizing import size
from engine.domain import Bar, Intent, Order, Purpose, Severity, TradingState, Verdict
from engine.execution.brokers.base import Broker, BrokerUnavailable
from engine.execution.oms import Oms, OrderBatch
from engine.execution.portfolio import Portfolio
from engine.market.calendar import TradingDay
from engine.risk import RiskContext, RiskGate
from engine.risk.daily import DailyFacts
from engine.risk.monitor_io import BlockEntries
from store.cycles import recent_pnls
from store.orders import insert_signal

log = logging.getLogger(__name__)

ENTRY_RETRY_MS = 60_000
KELLY_HISTORY = 500  # round trips Kelly sizing estimates its edge from
ALL_SYMBOLS = "*"
# Denials that hold for the rest of the trading day, for every symbol.
ACCOUNT_DAILY_CHECKS = frozenset({"trades_per_day", "daily_loss", "consecutive_losses"})


class OrderRouter:
    def __init__(
        self,
        risk: RiskSettings,
        db: Database,
        *,
        gate: RiskGate,
        oms: Oms,
        broker: Broker,
        portfolio: Portfolio,
        daily: DailyFacts,
        market: MarketData,
        clock: MarketClock,
        trading_day: TradingDay,
        alerts: Alerts,
        trading_state: Callable[[], TradingState],
        model_loading: Callable[[], bool],
    ) -> None:
        self.risk = risk
        self.db = db
        self.gate = gate
        self.oms = oms
        self.broker = broker
        self.portfolio = portfolio
        self.daily = daily
        self.market = market
        self.clock = clock
        self.trading_day = trading_day
        self.alerts = alerts
        self._trading_state = trading_state
        self._model_loading = model_loading
        self.locked_until: dict[str, int] = {}
        self.entry_blocks: tuple[BlockEntries, ...] = ()  # the monitor's, level-triggered
        self.store_block = ""  # set by the runner while the store cannot take writes

    def risk_context(self, now: int) -> RiskContext:
        prices = self.market.prices()
        snapshot = self.portfolio.mark(prices, now)
        atr_pct, returns = self.market.risk_inputs()
        return self.daily.context(
            now,
            equity=snapshot.equity,
            cash=snapshot.cash,
            positions=self.portfolio.positions,
            last_prices=prices,
            open_orders=self.oms.open_orders(),
            atr_pct=atr_pct,
            returns=returns,
            broker_connected=self.broker.connected,
            trading_state=self._trading_state(),
            stale_symbols=frozenset(s for block in self.entry_blocks for s in block.symbols),
            entries_blocked="; ".join(
                [b.reason for b in self.entry_blocks if not b.symbols]
                + ([self.store_block] if self.store_block else [])
            ),
        )

    def route(self, intents: list[Intent], cycle_id: int, watch: Stopwatch) -> tuple[int, int]:
        """The cycle's intents, in order; returns (orders sent, intents denied or not sent).

        They are placed together (`Oms.submit_many`): each is gated in turn, an
        allowed one becomes NEW orders at once, and the next is gated against them
        (working orders, not yet sent); then all the new orders are committed in one
        transaction and sent, and the broker's reports booked, in a second. A symbol
        met again starts a new batch, so an order never waits on one of its own
        symbol's that has not reached the broker.

        The risk context is built once and kept while the gate denies: a denial
        changes nothing the context holds. An allowed intent makes the next one get
        a fresh context; the trading state is read again for every intent, so a
        stop queued mid-cycle still holds the next one."""
        orders = denied = 0
        start = 0
        while start < len(intents):
            end = _distinct_run(intents, start)
            sent, refused = self._route_together(intents[start:end], cycle_id, watch)
            orders, denied, start = orders + sent, denied + refused, end
        return orders, denied

    def _route_together(
        self, intents: list[Intent], cycle_id: int, watch: Stopwatch
    ) -> tuple[int, int]:
        denied = 0
        unsent: list[tuple[Intent, BrokerUnavailable]] = []
        failed: list[ValueError] = []

        def gate_each(batch: OrderBatch) -> None:
            nonlocal denied
            ctx: RiskContext | None = None
            for intent in intents:
                ctx = self._fresh_state(ctx) if ctx is not None else self.risk_context(now)
                ref = self.market.last_bar.get(intent.symbol)
                verdict = self._verdict(intent, ref, ctx)
                watch.lap("risk")
                signal = _signal_row(intent, verdict, cycle_id, now)
                if not verdict.allowed or ref is None:
                    self._deny(intent, verdict, signal, now)
                    denied += 1
                    watch.lap("execution")
                    continue
                ctx = None
                try:
                    unavailable = batch.add(intent, ref.close, signal)
                except ValueError as exc:
                    failed.append(exc)  # raised once what came before is sent
                    return
                finally:
                    watch.lap("execution")
                if unavailable is not None:
                    unsent.append((intent, unavailable))
                    denied += 1

        now = self.clock.now
        self.db.conn.commit()  # what the cycle wrote before: the OMS needs no open transaction
        try:
            placed = self.oms.submit_many(gate_each)
        finally:
            watch.lap("execution")
        for intent, exc in unsent:
            self._broker_unavailable(intent, exc)
        if failed:
            raise failed[0]
        return len(placed), denied

    def _fresh_state(self, ctx: RiskContext) -> RiskContext:
        state = self._trading_state()
        return ctx if state is ctx.trading_state else ctx.adjusted(trading_state=state)

    def submit(
        self,
        intent: Intent,
        *,
        cycle_id: int | None = None,
        watch: Stopwatch | None = None,
        ctx: RiskContext | None = None,
    ) -> Order | None:
        """Gate the intent, record the verdict, and send it if allowed. With a
        stopwatch, the gate is charged to `risk` and the record and the OMS to
        `execution`."""
        return self._submit(intent, cycle_id, watch, ctx)[0]

    def _submit(
        self,
        intent: Intent,
        cycle_id: int | None,
        watch: Stopwatch | None,
        ctx: RiskContext | None,
    ) -> tuple[Order | None, bool]:
        now = self.clock.now
        ref = self.market.last_bar.get(intent.symbol)
        verdict = self._verdict(intent, ref, ctx or (self.risk_context(now) if ref else None))
        if watch:
            watch.lap("risk")
        try:
            order = self._send(intent, verdict, ref.close if ref else None, cycle_id, now)
        finally:
            if watch:
                watch.lap("execution")
        return order, verdict.allowed and ref is not None

    def _verdict(self, intent: Intent, ref: Bar | None, ctx: RiskContext | None) -> Verdict:
        if ref is None or ctx is None:
            return Verdict.deny("market_data", f"no price for {intent.symbol}")
        return self.gate.check(intent, ctx)

    def _send(
        self, intent: Intent, verdict: Verdict, price: float | None, cycle_id: int | None, now: int
    ) -> Order | None:
        signal = _signal_row(intent, verdict, cycle_id, now)
        if not verdict.allowed or price is None:
            self._deny(intent, verdict, signal, now)
            return None
        self.db.conn.commit()  # what the cycle wrote before: the OMS needs no open transaction
        try:
            # The signal row is written in the order's own transaction.
            return self.oms.submit(intent, price, signal=signal)
        except BrokerUnavailable as exc:
            self._broker_unavailable(intent, exc)
            return None

    def _deny(self, intent: Intent, verdict: Verdict, signal: tuple[Any, ...], now: int) -> None:
        insert_signal(self.db.conn, signal, None)
        if not intent.purpose.reduces_exposure:
            self._lock_entries(intent.symbol, verdict, now)
        log.info("denied %s %s %s: %s", intent.side, intent.symbol, verdict.check, verdict.reason)

    def _broker_unavailable(self, intent: Intent, exc: BrokerUnavailable) -> None:
        self.alerts.raise_(
            Severity.HIGH,
            "broker",
            "Broker unavailable",
            f"{intent.side} {intent.qty:g} {intent.symbol} not sent: {exc}",
            dedupe_key="broker-unavailable",
        )

    def sized(self, intent: Intent, equity: float) -> Intent:
        """Entries are sized by the risk layer's configured method (fixed fractional,
        volatility or Kelly); the strategy chose direction, stop and target."""
        if intent.purpose is not Purpose.ENTRY or intent.stop_loss is None:
            return intent
        bar = self.market.last_bar.get(intent.symbol)
        if bar is None:
            return intent
        snap = self.market.snapshots.get(intent.symbol)
        pnls = recent_pnls(self.db.conn, KELLY_HISTORY) if self.risk.sizing == "kelly" else []
        sized = size(
            self.risk,
            equity=equity,
            entry=bar.close,
            stop=intent.stop_loss,
            atr=snap.atr if snap is not None and math.isfinite(snap.atr) else None,
            pnls=pnls,
            symbol=intent.symbol,
        )
        return replace(intent, qty=sized.qty, sizing=sized.details)

    def _lock_entries(self, symbol: str, verdict: Verdict, now: int) -> None:
        """After a denied entry, don't ask the strategy again until it could pass:
        the verdict's own lock, the next trading day for daily account limits, else
        a market minute. Every denial is still stored; this only stops the same one
        being stored every cycle."""
        if verdict.check in ACCOUNT_DAILY_CHECKS:
            self.locked_until[ALL_SYMBOLS] = verdict.until or self.trading_day.next_start(now)
        else:
            self.locked_until[symbol] = verdict.until or now + ENTRY_RETRY_MS

    def lock_all_until(self, until: int) -> None:
        """The strategy is not asked again before `until`: one denial, not one a bar."""
        self.locked_until[ALL_SYMBOLS] = max(self.locked_until.get(ALL_SYMBOLS, 0), until)

    def entries_locked(self, symbol: str, now: int) -> bool:
        if self.portfolio.position(symbol) is not None:
            return False  # the strategy must still be asked about exits
        if self._model_loading():
            return True  # the champion the strategy trades on is still loading
        until = max(self.locked_until.get(symbol, 0), self.locked_until.get(ALL_SYMBOLS, 0))
        return until > now


def _distinct_run(intents: list[Intent], start: int) -> int:
    """Where the run of intents from `start` meets a symbol it already holds."""
    seen: set[str] = set()
    for i in range(start, len(intents)):
        if intents[i].symbol in seen:
            return i
        seen.add(intents[i].symbol)
    return len(intents)


def _signal_row(
    intent: Intent, verdict: Verdict, cycle_id: int | None, now: int
) -> tuple[Any, ...]:
    """The intent's `signals` row (store.orders.insert_signal's columns)."""
    return (
        cycle_id,
        now,
        intent.symbol,
        intent.side.value,
        intent.qty,
        intent.purpose.value,
        intent.strength,
        intent.model_version,
        "allowed" if verdict.allowed else "denied",
        verdict.check,
        verdict.reason if not verdict.allowed else intent.reason,
    )
