"""The Trader: one cycle in order, and the collaborators that do each part.

`Trader.cycle()` runs feed -> features -> regime -> signal -> risk -> execution
-> portfolio -> state (docs/ARCHITECTURE.md, The cycle). The parts live beside
it: `market` (market time, bars, indicators, features), `regime_step` (rules and
model), `router` (size -> gate -> OMS), `controls` (the trading state, the
emergency stop, flatten), `monitor_actions` (acting on the monitor every
second), `failures` (the policy at the cycle boundary), `recorder` (the
`cycles` rows) and `assembly` (building and wiring them, in order). Every fact
is written through the single writer connection; the SQL lives in `store/`.

Two clocks. Market time (`market_now`) is the time of the bars being processed,
taken from the feed: every trading rule and every stamp on an order, fill,
signal or equity mark uses it, so a replay of 2006 trades in 2006. The wall
clock (`clock`) is for liveness only: cycles, heartbeat, alerts, commands and
state changes. The Trader is driven by the runner's jobs on one executor thread,
or stepped directly by a backtest or a test with a simulated clock: one code
path for both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.config import Settings
from engine.cycle.assembly import Inputs, build_book, regime_step, wire_actors
from engine.cycle.cash import move_cash
from engine.cycle.recorder import CycleRecorder, CycleResult, Stopwatch
from engine.cycle.signals import SignalStep
from engine.decide.strategy import RegimeStrategy, Strategy, StrategyParams
from engine.domain import Bar, Intent, Order, TradingState
from engine.execution.brokers.base import Broker
from engine.execution.portfolio import write_snapshot
from engine.market.feeds import Feed
from engine.ml.service import CycleModel
from engine.risk import RiskContext
from store.db import is_store_full

log = logging.getLogger(__name__)


def default_strategy(settings: Settings) -> Strategy:
    """The regime strategy, sized inside the risk limits so the gate rarely has to
    deny its entries: half the allowed risk per trade, 90% of the notional cap."""
    risk = settings.risk
    return RegimeStrategy(
        StrategyParams(
            risk_per_trade=min(0.01, risk.risk_per_trade / 2),
            reward_risk=max(2.5, risk.min_reward_risk * 1.1),
            max_notional_fraction=risk.max_position_notional * 0.9,
        )
    )


class Trader:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        feed: Feed,
        broker: Broker,
        clock: Callable[[], int],
        *,
        strategy: Strategy | None = None,
        alerts: Alerts | None = None,
        model: CycleModel | None = None,
        actor: str = "engine",
        record_usage: bool = True,
    ) -> None:
        """`record_usage` False: no Risk-page gauges (a backtest has no page to show them)."""
        self.settings = settings
        self.db = db
        self.feed = feed
        self.broker = broker
        self.clock = clock
        self.alerts = alerts or Alerts(db, clock)
        given = Inputs(settings, db, feed, broker, clock, self.alerts)
        book = build_book(given)
        self.gate, self.trading_day = book.gate, book.trading_day
        self.market_clock, self.market = book.market_clock, book.market
        self.portfolio, self.daily, self.oms = book.portfolio, book.daily, book.oms
        self.recorder = CycleRecorder(db)
        self.last_cycle_at: int | None = None
        self.cycles_run = 0
        self.regime_step = regime_step(given, model)
        actors = wire_actors(given, book, self.regime_step, actor)
        self.controls, self.router = actors.controls, actors.router
        self.failures, self.monitor_actions = actors.failures, actors.monitor_actions
        self.monitor_actions.record_usage = record_usage
        self.signals = SignalStep(
            strategy or default_strategy(settings),
            market=self.market,
            regime=self.regime_step,
            router=self.router,
            portfolio=self.portfolio,
            oms=self.oms,
            alerts=self.alerts,
        )

    # ------------------------------------------------------------ views

    @property
    def market_now(self) -> int:
        return self.market_clock.now

    @market_now.setter
    def market_now(self, ts: int) -> None:
        self.market_clock.now = ts

    @property
    def state(self) -> TradingState:
        return self.controls.state

    @property
    def state_reason(self) -> str:
        return self.controls.state_reason

    @property
    def strategy(self) -> Strategy:
        return self.signals.strategy

    @strategy.setter
    def strategy(self, strategy: Strategy) -> None:
        self.signals.strategy = strategy

    @property
    def consecutive_failures(self) -> int:
        return self.failures.consecutive

    @property
    def model(self) -> CycleModel | None:
        return self.regime_step.model

    @model.setter
    def model(self, model: CycleModel | None) -> None:
        self.regime_step.model = model

    @property
    def last_bar(self) -> dict[str, Bar]:
        return self.market.last_bar

    def risk_context(self, now: int) -> RiskContext:
        return self.router.risk_context(now)

    # ----------------------------------------------------------- start-up

    def start(self, history: Mapping[str, list[Bar]]) -> None:
        """Warm indicators and the validator from stored or fresh history, then
        reconcile open orders with the broker."""
        self.market.warm(self.feed.symbols, history)
        self.regime_step.seed(self.market.snapshots)
        if self.market.last_bar:
            # The market's time is its bars', even behind the wall clock it started from.
            self.market_clock.now = max(b.ts for b in self.market.last_bar.values())
        self.daily.reload(self.market_now)  # today is the market's, known from the bars
        for bar in self.market.last_bar.values():
            self.broker.on_bar(bar)  # the broker learns prices; resting orders match on new bars
        self.oms.reconcile()
        self.db.conn.commit()
        self.protect_positions()

    def protect_positions(self) -> int:
        """Put a resting stop and target in front of every held position that has
        levels but lost its orders (they never reached the broker before a restart,
        or the broker dropped them); returns how many positions were protected."""
        if self.state is TradingState.HALTED:
            return 0  # the emergency stop's flatten owns the book
        return sum(1 for p in self.portfolio.positions.values() if self.oms.protect(p))

    def advance_market(self, wall: int) -> int:
        """Move market time to the feed's own clock if it is newer; it never goes back."""
        return self.market_clock.advance(wall)

    # -------------------------------------------------------------- cycle

    def cycle(self) -> CycleResult:
        started = self.clock()
        watch = Stopwatch()
        result = CycleResult(0, started, 0.0)
        try:
            self.process(started, watch, result)
            self.failures.succeeded()
        except Exception as exc:
            self.db.conn.rollback()
            if is_store_full(exc):
                raise  # not this cycle's fault: the runner's store guard handles it once
            result.error = f"{type(exc).__name__}: {exc}"
            log.exception("cycle failed")
            self.failures.failed(exc, result.error)
        watch.lap("state")
        result.timings = watch.timings
        result.duration_ms = sum(watch.timings.values())
        result.cycle_id = self.recorder.record(result, self.market_now)
        self.last_cycle_at = started
        self.db.conn.commit()
        self.regime_step.after_cycle()
        self.cycles_run += 1
        return result

    def process(self, wall: int, watch: Stopwatch, result: CycleResult) -> None:
        """The stages in order, each charged to its stage of the stopwatch."""
        cycle_id = self.recorder.next_id()
        self.oms.retry_unsent(int(self.settings.engine.order_timeout_seconds * 1000))
        bars, result.rejected_bars = self.market.ingest(self.feed.next_bars(wall))
        result.bars = len(bars)
        now = self.market_clock.advance(wall, bars)
        watch.lap("feed")
        # Resting orders (stops, targets, limits) match on the new bars first.
        result.fills = sum(1 for r in self.oms.on_bars(bars) if r.fill is not None)
        watch.lap("execution")
        snaps, rows = self.market.features(bars)
        watch.lap("features")
        self.regime_step.step(cycle_id, bars, snaps, rows)
        # Market data and regimes are one transaction; orders are committed one by
        # one from here on, because each must be durable before the broker sees it.
        self.db.conn.commit()
        watch.lap("regime")
        intents = self.signals.step(bars, snaps, now)
        result.intents = len(intents)
        watch.lap("signal")
        result.orders, result.denied = self.router.route(intents, cycle_id, watch)
        self.oms.expire(now)
        if self.controls.flattening:
            self.controls.flatten_step()
        watch.lap("execution")
        self._mark(now)
        watch.lap("portfolio")

    def _mark(self, now: int) -> None:
        snapshot = self.portfolio.mark(self.market.prices(), now)
        write_snapshot(self.db, self.portfolio, snapshot)
        self.daily.marked(snapshot)

    # -------------------------------------------------- between cycles

    def monitor_step(self) -> None:
        """Every second, between cycles: see `MonitorActions`."""
        self.monitor_actions.step(self.last_cycle_at)

    def submit(self, intent: Intent, *, ctx: RiskContext | None = None) -> Order | None:
        """Gate, record and send one intent outside a cycle (see `OrderRouter.submit`)."""
        return self.router.submit(intent, ctx=ctx)

    def set_state(
        self, target: TradingState, reason: str, actor: str, *, confirm: bool = False
    ) -> TradingState:
        return self.controls.set_state(target, reason, actor, confirm=confirm)

    def emergency_stop(self, actor: str, reason: str) -> str:
        return self.controls.emergency_stop(actor, reason)

    def is_flat(self, symbols: set[str] | None = None) -> bool:
        return self.controls.is_flat(symbols)

    def move_cash(self, amount: float, reason: str, actor: str) -> str:
        """A deposit (> 0) or withdrawal (< 0); see `engine.cycle.cash.move_cash`."""
        return move_cash(
            self.db,
            self.broker,
            self.portfolio,
            self.daily,
            self.market.prices(),
            amount=amount,
            reason=reason,
            actor=actor,
            now=self.market_now,
        )
