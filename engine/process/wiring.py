"""Wiring: what the engine is built from. The configured feed and the history to
warm up from, the broker, the strategy, the ML parts (the live model service,
its loader thread, the training pool and the retrainer) and the trading mode.

Nothing here runs a job; `engine.process.runner.Engine` puts the parts together.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from engine.alerts import audit
from engine.alerts.alerts import Alerts
from engine.alerts.notify import Notifier
from engine.config import ConfigError, Settings
from engine.cycle import Trader, store_bars
from engine.decide.strategy import Strategy
from engine.domain import Bar, Regime
from engine.execution.brokers.base import Broker, BrokerUnavailable
from engine.market.feeds import CsvReplayFeed, Feed, SimulatedFeed, default_symbols
from engine.ml import registry
from engine.ml.artifact import resolve_artifacts_dir
from engine.ml.jobs import Retrainer
from engine.ml.service import ModelService
from engine.process import lease as lease_mod
from engine.process.storeguard import StoreGuard
from store import engine_row
from store.cycles import recent_bars
from store.db import open_writer


def symbols_of(settings: Settings) -> tuple[str, ...]:
    s = settings.engine.symbols
    return default_symbols(s) if isinstance(s, int) else tuple(s)


def _stored_history(db: Database, symbols: tuple[str, ...], n: int) -> dict[str, list[Bar]]:
    return {
        symbol: [
            Bar(symbol, r[0], r[1], r[2], r[3], r[4], r[5], Regime(r[6]) if r[6] else None)
            for r in recent_bars(db.conn, symbol, n)
        ]
        for symbol in symbols
    }


class _AfterStored:
    """A replay feed that silently skips rows already stored before a restart."""

    def __init__(self, feed: Feed, last_ts: dict[str, int]) -> None:
        self._feed = feed
        self._last = last_ts
        self.symbols = feed.symbols

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        return {}

    def next_bars(self, now_ms: int) -> list[Bar]:
        out = []
        for bar in self._feed.next_bars(now_ms):
            if bar.ts > self._last.get(bar.symbol, -1):
                out.append(bar)
        return out

    def market_time(self, wall_ms: int) -> int | None:
        return self._feed.market_time(wall_ms)

    @property
    def exhausted(self) -> bool:
        return bool(getattr(self._feed, "exhausted", False))


def build_feed(settings: Settings, db: Database, now: int) -> tuple[Feed, dict[str, list[Bar]]]:
    """The configured feed and the history to warm up from: stored bars after a
    restart, fresh warm-up bars (stored now) on a first start."""
    cfg = settings.engine
    interval = cfg.bar_ms
    feed: Feed
    if cfg.feed == "csv":
        assert cfg.data_dir is not None  # checked by load_settings
        csv = CsvReplayFeed(
            cfg.data_dir, None if isinstance(cfg.symbols, int) else cfg.symbols, bar_ms=interval
        )
        symbols = csv.symbols
        history = _stored_history(db, symbols, cfg.warmup_bars)
        if any(history.values()):
            last_ts = {s: bars[-1].ts for s, bars in history.items() if bars}
            return _AfterStored(csv, last_ts), history
        feed = csv
    elif cfg.feed == "ccxt":
        from engine.market.ccxt_feed import CcxtFeed, make_exchange

        symbols = symbols_of(settings)
        history = _stored_history(db, symbols, cfg.warmup_bars)
        exchange = make_exchange(settings.ccxt.exchange, settings.ccxt.timeout_seconds)
        last_ts = {s: bars[-1].ts for s, bars in history.items() if bars}
        # After a restart the feed fetches the candles missed while down, after the stored ones.
        candles = CcxtFeed(exchange, symbols, settings.ccxt.timeframe, resume_from=last_ts)
        if last_ts:
            return candles, history
        interval = candles.interval_ms
        feed = candles
    elif cfg.feed == "ib":
        from engine.market.ib_feed import IbFeed

        symbols = symbols_of(settings)
        history = _stored_history(db, symbols, cfg.warmup_bars)
        last_ts = {s: bars[-1].ts for s, bars in history.items() if bars}
        # After a restart the subscription reaches back to the last stored bar.
        ib_feed = IbFeed(settings.ib, interval, resume_from=last_ts)
        if last_ts:
            ib_feed.start_live()
            return ib_feed, history
        feed = ib_feed
    else:
        symbols = symbols_of(settings)
        history = _stored_history(db, symbols, cfg.warmup_bars)
        last = {s: bars[-1] for s, bars in history.items() if bars}
        if last:
            # The simulated market goes on from its last stored bar, not from today.
            resumed = SimulatedFeed.resume(
                last, cfg.seed, symbols=symbols, bar_ms=interval, calendar=cfg.sim_calendar
            )
            return resumed, history
        feed = SimulatedFeed(symbols, cfg.seed, bar_ms=interval, calendar=cfg.sim_calendar)
    # A first start's simulated market begins now, its history just behind it.
    end = now - now % interval - interval
    history = feed.warmup(cfg.warmup_bars, end, interval) if cfg.warmup_bars else {}
    store_bars(db, [b for bars in history.values() for b in bars])
    db.conn.commit()
    return feed, history


def build_broker(settings: Settings, db: Database) -> Broker:
    if settings.engine.broker == "ib":
        from engine.execution.brokers.ib import IbBroker

        ib = IbBroker(settings.ib)
        if not ib.connected:
            # Reconnecting with backoff is for a link that drops while trading: a start
            # that finds no gateway says what to fix instead of trading blind.
            why = ib.connect_error or "no answer"
            ib.close()
            s = settings.ib
            raise BrokerUnavailable(
                f"no IB API at {s.host}:{s.port} for orders ({why}): start IB Gateway (or"
                " TWS) logged in, enable the API, check ib.port (4002 paper gateway, 7497"
                " paper TWS) and ib.client_id"
            )
        broker: Broker = ib
        return broker
    from engine.execution.brokers.paper import PaperBroker

    return PaperBroker(db, settings.paper, settings.engine.starting_cash)


def configured_strategy(settings: Settings) -> Strategy:
    """`engine.decide.strategy` with `engine.strategy_params`; a bad one stops the start."""
    from engine.backtest.strategies import StrategyError, load_strategy

    cfg = settings.engine
    try:
        return load_strategy(cfg.strategy, cfg.strategy_params, settings)
    except StrategyError as exc:
        raise ConfigError(f"engine.decide.strategy = {cfg.strategy!r}: {exc}") from None


def trading_mode(settings: Settings) -> str:
    live_ports = {7496, 4001}
    is_live = settings.engine.broker == "ib" and settings.ib.port in live_ports
    return "LIVE" if is_live else "PAPER"


@dataclass
class MlParts:
    model: ModelService
    retrainer: Retrainer
    loader: concurrent.futures.ThreadPoolExecutor  # loads a champion off the trading thread
    pool: concurrent.futures.ThreadPoolExecutor  # trains off the trading thread

    def shutdown(self) -> None:
        self.loader.shutdown(wait=True, cancel_futures=True)
        self.pool.shutdown(wait=False, cancel_futures=True)


def build_ml(
    settings: Settings, db: Database, path: Path, alerts: Alerts, clock: Callable[[], int]
) -> MlParts | None:
    ml = settings.ml
    if not ml.enabled:
        return None
    if ml.artifacts_dir is None:
        registry.localize_artifacts(db)
    # loading a champion (LightGBM import and parse) must not delay the first cycle
    loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
    model = ModelService(
        db,
        ml,
        resolve_artifacts_dir(ml, path),
        alerts.raise_,
        bar_ms=settings.engine.bar_ms,
        clock=clock,
        loader=loader,
    )
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ml")
    retrainer = Retrainer(path, ml, pool, alerts.raise_, clock=clock)
    return MlParts(model, retrainer, loader, pool)


@dataclass
class Opened:
    """An engine's parts once it holds the lease, warmed up and ready to trade."""

    db: Database
    lease: lease_mod.Lease
    trader: Trader
    notifier: Notifier
    guard: StoreGuard
    ml: MlParts | None
    anchored: audit.Head | None


@dataclass
class Given:
    """What a backtest or a test hands the engine instead of building it."""

    broker: Broker | None = None
    feed: Feed | None = None
    history: dict[str, list[Bar]] | None = None


def open_engine(settings: Settings, path: Path, clock: Callable[[], int], given: Given) -> Opened:
    """Open the writer, take the lease, build and warm the trader. On failure the
    lease is released and the writer closed."""
    db = open_writer(path)
    lease: lease_mod.Lease | None = None
    notifier: Notifier | None = None
    ml: MlParts | None = None
    try:
        # Keys the audit chain on first start (re-hashing older plain-hashed rows).
        audit.ensure_key(db)
        db.conn.commit()
        anchored = audit.write_anchor(db.conn)
        lease = _take_lease(settings, db, clock())
        if given.feed is not None:
            feed, history = given.feed, given.history or {}
        else:
            feed, history = build_feed(settings, db, clock())
        broker = given.broker or build_broker(settings, db)
        notifier = Notifier.from_settings(settings.alerts)
        guard = StoreGuard(path, clock, notifier.submit)
        alerts = Alerts(db, clock, deliver=notifier.submit)
        ml = build_ml(settings, db, path, alerts, clock)
        trader = Trader(
            settings,
            db,
            feed,
            broker,
            clock,
            strategy=configured_strategy(settings),
            alerts=alerts,
            model=ml.model if ml else None,
        )
        trader.start(history)
    except BaseException:
        if ml is not None:
            ml.shutdown()
        if notifier is not None:
            notifier.close(timeout=1.0)
        if lease is not None:
            lease_mod.release(db, lease, clock())
        db.conn.close()
        raise
    return Opened(db, lease, trader, notifier, guard, ml, anchored)


def _take_lease(settings: Settings, db: Database, now: int) -> lease_mod.Lease:
    cfg = settings.engine
    stale_ms = int(cfg.lease_stale_seconds * 1000)
    lease = lease_mod.acquire(db, now, stale_ms, trading_mode(settings), cfg.broker)
    engine_row.write_pace(
        db.conn,
        cycle_seconds=max(cfg.cycle_period, 0.05),
        speed=cfg.effective_speed,
        simulated=cfg.simulated,
        bar_interval=cfg.bar_interval,
        heartbeat_seconds=cfg.heartbeat_seconds,
    )
    return lease
