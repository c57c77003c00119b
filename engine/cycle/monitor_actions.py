"""Monitor actions: every second, between cycles, the pure monitor decides
(protective exits, trailing stops, the kill switch, pauses, entry blocks,
alerts) and this acts on its decisions. Its rules run on market time; the
dead-man's switch and the broker's absence on wall time. The same step scores
the model's due predictions and paces its drift checks."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.config import Settings
from engine.cycle.controls import Controls
from engine.cycle.market import MarketClock, MarketData
from engine.cycle.regime_step import RegimeStep
from engine.cycle.router import OrderRouter
from engine.domain import ExitReason, TradingState
from engine.execution.brokers.base import BrokerUnavailable
from engine.execution.oms import Oms
from engine.execution.portfolio import Portfolio, write_position
from engine.market.calendar import TradingDay
from engine.market.feeds import Feed
from engine.risk.monitor import Monitor
from engine.risk.monitor_io import (
    BlockEntries,
    ExitPosition,
    KillSwitch,
    MonitorInput,
    MonitorState,
    MoveStop,
    Pause,
    RaiseAlert,
)
from engine.risk.usage import usage, write_usage

log = logging.getLogger(__name__)

DRIFT_CHECK_MS = 60_000
Action = BlockEntries | RaiseAlert | KillSwitch | ExitPosition | MoveStop | Pause


class MonitorActions:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        wall: Callable[[], int],
        *,
        monitor: Monitor,
        clock: MarketClock,
        market: MarketData,
        feed: Feed,
        trading_day: TradingDay,
        router: OrderRouter,
        controls: Controls,
        regime: RegimeStep,
        oms: Oms,
        portfolio: Portfolio,
        alerts: Alerts,
    ) -> None:
        self.settings = settings
        self.db = db
        self.wall = wall
        self.monitor = monitor
        self.clock = clock
        self.market = market
        self.feed = feed
        self.trading_day = trading_day
        self.router = router
        self.controls = controls
        self.regime = regime
        self.oms = oms
        self.portfolio = portfolio
        self.alerts = alerts
        self.state = MonitorState()
        self.record_usage = True  # the Risk page's gauges; a backtest shows none
        self.started_at = wall()
        self._next_drift_check = 0
        self._intervals_of: tuple[object, tuple[int, int]] | None = None

    def step(self, last_cycle_at: int | None) -> None:
        wall = self.wall()
        now = self.clock.advance(wall)
        ctx = self.router.risk_context(now)
        bar_ms, cycle_ms = self._intervals()
        snapshots = self.market.snapshots
        result = self.monitor.step(
            MonitorInput(
                ctx=ctx,
                # Read, not copied: the step is over before the next bar arrives.
                bars=self.market.last_bar,
                # Only held symbols' ATRs are read (their trailing stops).
                atr={s: snapshots[s].atr for s in ctx.positions if s in snapshots},
                bar_interval_ms=bar_ms,
                cycle_interval_ms=cycle_ms,
                last_cycle_at=last_cycle_at,
                started_at=self.started_at,
                state=self.state,
                wall_now=wall,
                next_day=self.trading_day.next_start(now),
            )
        )
        self.state = result.state
        blocks = [a for a in result.actions if isinstance(a, BlockEntries)]
        for action in result.actions:
            self._act(action)
        farm_down = frozenset(getattr(self.feed, "stale_symbols", ()))
        if farm_down:
            blocks.append(BlockEntries("market data farm lost", farm_down))
        self.router.entry_blocks = tuple(blocks)
        if self.record_usage:
            # Stamped on the wall clock: it says how fresh the figures are, not market facts.
            write_usage(self.db, usage(ctx, self.settings.risk), wall)
        self._model_upkeep(now, wall)
        self.db.conn.commit()
        self.controls.continue_flattening()

    def _intervals(self) -> tuple[int, int]:
        """The bar and cycle intervals in ms, worked out once per engine settings
        (properties that parse and compare on every read)."""
        engine = self.settings.engine
        if self._intervals_of is None or self._intervals_of[0] is not engine:
            cycle_ms = int(max(engine.cycle_period, 0.05) * 1000)
            self._intervals_of = (engine, (engine.bar_ms, cycle_ms))
        return self._intervals_of[1]

    def _act(self, action: Action) -> None:
        if isinstance(action, BlockEntries):
            if action.until is not None:
                self.router.lock_all_until(action.until)
        elif isinstance(action, RaiseAlert):
            self.alerts.raise_(
                action.severity,
                action.source,
                action.title,
                action.message,
                dedupe_key=action.dedupe_key,
            )
        elif isinstance(action, KillSwitch):
            if self.controls.state is not TradingState.HALTED:
                self.controls.emergency_stop(
                    "monitor", f"kill switch: {action.reason}", ExitReason.KILL_SWITCH
                )
        elif isinstance(action, ExitPosition):
            self.router.submit(action.intent())
        elif isinstance(action, MoveStop):
            self.move_stop(action)
        elif isinstance(action, Pause) and self.controls.state is TradingState.ACTIVE:
            self.controls.set_state(TradingState.PAUSED, action.reason, "monitor")

    def _model_upkeep(self, now: int, wall: int) -> None:
        model = self.regime.model
        if model is None:
            return
        model.score_due(now, self.market.prices())
        # Drift checks cost a query over thousands of rows: paced on the wall clock.
        if wall >= self._next_drift_check:
            model.check_drift(now)
            self._next_drift_check = wall + DRIFT_CHECK_MS

    def move_stop(self, action: MoveStop) -> None:
        """Trail the resting stop: modify the order at the broker, then the position's
        stop, so the screen shows the level the broker holds."""
        try:
            order = self.oms.modify_stop(action.client_order_id, action.stop, ExitReason.TRAILING)
        except BrokerUnavailable as exc:
            log.warning("trailing stop for %s not moved: %s", action.symbol, exc)
            return
        if order is None or order.stop_price != action.stop:
            return
        position = self.portfolio.position(action.symbol)
        if position is not None:
            self.portfolio.set_protection(action.symbol, action.stop, position.target)
            write_position(self.db, self.portfolio, action.symbol, self.clock.now)
        log.info("%s: %s", action.symbol, action.reason)
