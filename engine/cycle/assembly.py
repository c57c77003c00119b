"""The Trader's collaborators, built and wired in one place.

The order matters and is kept here once: the gate reads the events file first (a
bad row stops the start), the portfolio fixes the account's starting cash, the
daily facts are loaded at the market's time, and the OMS reports to them. The
`Trader` takes the result and only runs the cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.config import Settings
from engine.cycle.controls import Controls
from engine.cycle.failures import FailurePolicy
from engine.cycle.market import MarketClock, MarketData
from engine.cycle.monitor_actions import MonitorActions
from engine.cycle.regime_step import RegimeStep
from engine.cycle.router import OrderRouter
from engine.decide.regime import RegimeParams
from engine.execution.account import fix_starting_cash
from engine.execution.brokers.base import Broker
from engine.execution.oms import Oms
from engine.execution.portfolio import Portfolio
from engine.market.calendar import TradingDay, symbol_exchanges
from engine.market.feeds import Feed
from engine.ml.service import CycleModel
from engine.risk import RiskGate
from engine.risk.daily import DailyFacts
from engine.risk.monitor import Monitor


@dataclass(frozen=True)
class Inputs:
    """What the Trader is given: the outside world it trades through."""

    settings: Settings
    db: Database
    feed: Feed
    broker: Broker
    clock: Callable[[], int]
    alerts: Alerts


@dataclass(frozen=True)
class Book:
    """Market time, prices and the account: what every later part reads."""

    gate: RiskGate
    trading_day: TradingDay
    market_clock: MarketClock
    market: MarketData
    portfolio: Portfolio
    daily: DailyFacts
    oms: Oms


@dataclass(frozen=True)
class Actors:
    """The parts that act: on the trading state, the order path and the monitor."""

    controls: Controls
    router: OrderRouter
    failures: FailurePolicy
    monitor_actions: MonitorActions


def build_book(given: Inputs) -> Book:
    settings, db, feed, clock = given.settings, given.db, given.feed, given.clock
    cfg = settings.engine
    exchanges = symbol_exchanges(
        settings.risk.exchanges, feed.symbols, cfg.sim_calendar if cfg.feed == "sim" else None
    )
    # from_settings reads the events file now: a bad row stops the start.
    gate = RiskGate.from_settings(settings.risk, exchanges)
    trading_day = TradingDay.for_symbols(
        exchanges, feed.symbols, settings.risk.day_boundary_minutes
    )
    market_clock = MarketClock(feed, clock())  # until the first bar says otherwise
    market = MarketData(cfg, exchanges, db, given.alerts)
    portfolio = Portfolio.load(db, fix_starting_cash(db, cfg.starting_cash, clock()))
    # The gate's view of today, kept in memory and followed from the OMS's events.
    daily = DailyFacts(db.conn, market_clock.now, trading_day)
    oms = Oms(
        db,
        given.broker,
        portfolio,
        market_clock,
        order_timeout_ms=int(cfg.order_timeout_seconds * 1000),
        day_end=trading_day.next_start,
    )
    oms.listen(daily)
    return Book(gate, trading_day, market_clock, market, portfolio, daily, oms)


def regime_step(given: Inputs, model: CycleModel | None) -> RegimeStep:
    ml = given.settings.ml
    params = RegimeParams.for_bar(given.settings.engine.bar_ms)
    return RegimeStep(given.db, params, ml.override_confidence, model)


def wire_actors(given: Inputs, book: Book, regime: RegimeStep, actor: str) -> Actors:
    settings, db = given.settings, given.db
    controls = Controls(
        db,
        given.clock,
        book.market_clock,
        oms=book.oms,
        portfolio=book.portfolio,
        daily=book.daily,
        alerts=given.alerts,
        symbols=tuple(given.feed.symbols),
    )
    router = OrderRouter(
        settings.risk,
        db,
        gate=book.gate,
        oms=book.oms,
        broker=given.broker,
        portfolio=book.portfolio,
        daily=book.daily,
        market=book.market,
        clock=book.market_clock,
        trading_day=book.trading_day,
        alerts=given.alerts,
        trading_state=controls.effective_state,
        model_loading=lambda: regime.loading,
    )
    controls.router = router
    failures = FailurePolicy(controls, given.alerts, settings.engine.failure_pause_after, actor)
    monitor_actions = MonitorActions(
        settings,
        db,
        given.clock,
        monitor=Monitor(settings.risk, book.gate.calendar),
        clock=book.market_clock,
        market=book.market,
        feed=given.feed,
        trading_day=book.trading_day,
        router=router,
        controls=controls,
        regime=regime,
        oms=book.oms,
        portfolio=book.portfolio,
        alerts=given.alerts,
    )
    return Actors(controls, router, failures, monitor_actions)
