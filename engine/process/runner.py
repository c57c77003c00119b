"""The engine process: one lease, one writer, one trading thread.

APScheduler's BackgroundScheduler runs the jobs. Every job that touches trading
state (cycle, commands, monitor, heartbeat) runs on the single-thread "trading"
executor, so they never interleave and the writer connection has one user. The
watchdog (dead-man's switch) runs on its own executor with its own short-lived
connection, precisely so it still works when the trading thread is stuck.

`Engine.step()` runs the same jobs synchronously, for backtests and tests with a
simulated clock; `Engine.run()` runs them on the scheduler in real time.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlite_utils import Database

from engine.alerts import audit
from engine.alerts.alerts import Alerts
from engine.alerts.deliveries import apply_migrations as apply_delivery_migrations
from engine.alerts.deliveries import record as record_deliveries
from engine.alerts.deliveries import take_and_record
from engine.alerts.digest import digest_facts, digest_message, digest_trigger
from engine.alerts.notify import Notifier
from engine.backtest.launch import Launcher
from engine.config import ConfigError, EngineSettings, Settings, with_stored_secrets
from engine.cycle import CycleResult, Trader, store_bars
from engine.decide.strategy import Strategy
from engine.domain import Bar, Regime, Severity, TradingState
from engine.execution.brokers.base import Broker, BrokerUnavailable
from engine.execution.reconcile import adopt_broker, reconcile
from engine.market.feeds import CsvReplayFeed, Feed, SimulatedFeed, default_symbols
from engine.ml import registry
from engine.ml.jobs import Retrainer, retrain_trigger
from engine.ml.registry import RegistryError, needs_bootstrap
from engine.ml.service import ModelService
from engine.ml.train import resolve_artifacts_dir
from engine.process import lease as lease_mod
from engine.process.backup import BackupError, take_backup
from engine.process.handlers import CommandFailed, ExtraHandler, recover_interrupted, run_pending
from engine.process.housekeeping import prune
from engine.process.lease import file_identity
from engine.process.metrics import EngineMetrics, MetricsServer
from engine.process.storeguard import FULL_BLOCK, StoreGuard
from engine.risk.monitor import deadman_alert
from store.commands import ENGINE_ACTOR, Command, CommandKind
from store.db import db_path, in_memory, is_store_full, now_ms, open_writer

log = logging.getLogger(__name__)
T = TypeVar("T")
# urllib3 logs each request line at DEBUG, path and query included: a webhook's
# token lives there, so its debug lines never reach the engine's logs.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

TRADING = "trading"
BURST_SECONDS = 0.2
WATCHDOG = "watchdog"
# The watchdog waits for a first cycle.
DELAYED_START = {"watchdog": 1.0}


def symbols_of(settings: Settings) -> tuple[str, ...]:
    s = settings.engine.symbols
    return default_symbols(s) if isinstance(s, int) else tuple(s)


def _stored_history(db: Database, symbols: tuple[str, ...], n: int) -> dict[str, list[Bar]]:
    history: dict[str, list[Bar]] = {}
    for symbol in symbols:
        rows = db.conn.execute(
            "SELECT ts, open, high, low, close, volume, true_regime FROM bars"
            " WHERE symbol = ? ORDER BY ts DESC LIMIT ?",
            (symbol, max(n, 1)),
        ).fetchall()
        history[symbol] = [
            Bar(symbol, r[0], r[1], r[2], r[3], r[4], r[5], Regime(r[6]) if r[6] else None)
            for r in reversed(rows)
        ]
    return history


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


def daily_trigger(settings: EngineSettings) -> CronTrigger:
    """Prune and back up every day at `engine.backup_at` (UTC)."""
    hour, minute = settings.backup_hour_minute
    return CronTrigger(hour=hour, minute=minute, timezone="UTC")


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


class Engine:
    def __init__(
        self,
        settings: Settings,
        path: str | Path | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        broker: Broker | None = None,
        feed: Feed | None = None,
        history: dict[str, list[Bar]] | None = None,
    ) -> None:
        self.settings = settings
        self.path = db_path(path)
        self.clock = clock
        self._broker = broker
        self._feed = feed
        self._history = history
        self.db: Database | None = None
        self.trader: Trader | None = None
        self.lease: lease_mod.Lease | None = None
        self.extra_handlers: dict[str, ExtraHandler] = {
            CommandKind.RECONCILE: self._reconcile_command,
            CommandKind.ADOPT_BROKER: self._adopt_command,
            # Backtests and sweeps run in their own processes; the handler only starts them.
            CommandKind.BACKTEST: Launcher(self.path).handle,
        }
        self._reconcile_due: str | None = None
        self._reconnects_seen = 0
        self.notifier: Notifier | None = None
        self.retrainer: Retrainer | None = None
        self._ml_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._model_loader: concurrent.futures.ThreadPoolExecutor | None = None
        self._scheduler: BackgroundScheduler | None = None
        self.metrics: EngineMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.lock: lease_mod.DatabaseLock | None = None
        self.guard: StoreGuard | None = None
        self._deadman_sent: int | None = None  # the stall the watchdog sent from memory
        self._stop = threading.Event()
        self._events: deque[tuple[Severity, str, str, str]] = deque(maxlen=1000)
        self._anchored: audit.Head | None = None

    # ------------------------------------------------------------ lifecycle

    def open(self) -> Trader:
        """Take the lock and the lease, build the trader, warm up and reconcile.

        Raises LeaseHeld when another engine runs on this database."""
        if in_memory(self.path):
            return self._open()  # nothing on disk to lock, lose or fill
        self.lock = lease_mod.DatabaseLock.acquire(self.path)
        try:
            return self._open()
        except BaseException:
            self.lock.release()
            self.lock = None
            raise

    def _open(self) -> Trader:
        self.settings = with_stored_secrets(self.settings, self.path)
        db = open_writer(self.path)
        self.db = db
        try:
            # Keys the audit chain on first start (re-hashing older plain-hashed rows).
            audit.ensure_key(db)
            db.conn.commit()
            self._anchored = audit.write_anchor(db.conn)
            now = self.clock()
            stale_ms = int(self.settings.engine.lease_stale_seconds * 1000)
            broker_name = self.settings.engine.broker
            self.lease = lease_mod.acquire(
                db, now, stale_ms, trading_mode(self.settings), broker_name
            )
            cfg = self.settings.engine
            db.conn.execute(
                "UPDATE engine SET cycle_seconds = ?, speed = ?, simulated = ?, bar_interval = ?,"
                " heartbeat_seconds = ? WHERE id = 1",
                (
                    max(cfg.cycle_period, 0.05),
                    cfg.effective_speed,
                    int(cfg.simulated),
                    cfg.bar_interval,
                    cfg.heartbeat_seconds,
                ),
            )
            if self._feed is not None:
                feed, history = self._feed, self._history or {}
            else:
                feed, history = build_feed(self.settings, db, now)
            broker = self._broker or build_broker(self.settings, db)
            self.notifier = Notifier.from_settings(self.settings.alerts)
            apply_delivery_migrations(db)
            self.guard = StoreGuard(self.path, self.clock, self.notifier.submit)
            alerts = Alerts(db, self.clock, deliver=self.notifier.submit)
            model = self._build_ml(db, alerts)
            self.trader = Trader(
                self.settings,
                db,
                feed,
                broker,
                self.clock,
                strategy=configured_strategy(self.settings),
                alerts=alerts,
                model=model,
            )
            self.trader.start(history)
            self._reconcile_due = "at start"
            self.reconcile_broker(self.trader)
            recover_interrupted(self.trader)
            db.conn.execute(
                "UPDATE engine SET trading_day = ?, market_time = ? WHERE id = 1",
                (self.trader.trading_day.spec, self.trader.market_now),
            )
            alerts.raise_(
                Severity.INFO,
                "engine",
                "Engine started",
                f"pid {self.lease.pid}, {len(feed.symbols)} symbols, {broker.name} broker,"
                f" trading state {self.trader.state}",
            )
            db.conn.commit()
        except BaseException:
            if self.lease is not None:
                lease_mod.release(db, self.lease, self.clock())
            db.conn.close()
            self.db = None
            raise
        return self.trader

    def _build_ml(self, db: Database, alerts: Alerts) -> ModelService | None:
        ml = self.settings.ml
        if not ml.enabled:
            return None
        if ml.artifacts_dir is None:
            registry.localize_artifacts(db)
        # loading a champion (LightGBM import and parse) must not delay the first cycle
        self._model_loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
        model = ModelService(
            db,
            ml,
            resolve_artifacts_dir(ml, self.path),
            alerts.raise_,
            bar_ms=self.settings.engine.bar_ms,
            clock=self.clock,
            loader=self._model_loader,
        )
        self._ml_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ml")
        self.retrainer = Retrainer(self.path, ml, self._ml_pool, alerts.raise_, clock=self.clock)
        retrainer = self.retrainer

        def train(cmd: Command) -> str:
            if retrainer.request(f"requested by {cmd.requested_by}"):
                return "training started off the trading thread; the model registers when done"
            return "a training run is already in progress"

        def registry_command(cmd: Command) -> str:
            try:
                return model.handle_command(cmd.kind, cmd.args, actor=cmd.requested_by)
            except RegistryError as exc:
                raise CommandFailed(str(exc)) from None

        self.extra_handlers.update(
            {
                CommandKind.TRAIN: train,
                CommandKind.PROMOTE: registry_command,
                CommandKind.ROLLBACK: registry_command,
                CommandKind.RETIRE: registry_command,
            }
        )
        return model

    def _collect_training(self) -> None:
        trader = self._trader()
        if self.retrainer is None:
            return
        version = self.retrainer.collect(trader.db)
        if version is None:
            return
        if trader.model is not None:
            trader.model.sync()
        trader.alerts.raise_(
            Severity.INFO, "ml", "Model registered", f"{version} is in the registry"
        )
        trader.db.conn.commit()

    def close(self) -> None:
        if self._model_loader is not None:
            self._model_loader.shutdown(wait=True, cancel_futures=True)
            self._model_loader = None
        if self._ml_pool is not None:
            self._ml_pool.shutdown(wait=False, cancel_futures=True)
            self._ml_pool = None
        if self.notifier is not None:
            self.notifier.close(timeout=5.0)
            if self.db is not None:
                self._record_last_deliveries(self.db, self.notifier)
            self.notifier = None
        if self.db is None:
            return
        trader = self.trader
        if trader is not None:
            try:
                if trader.model is not None:
                    trader.model.close()
                trader.db.conn.commit()
                trader.broker.close()
            except Exception:
                log.exception("closing the broker failed")
        if self.lease is not None:
            try:
                lease_mod.release(self.db, self.lease, self.clock())
            except sqlite3.Error as exc:
                log.warning("the lease could not be released in the database: %s", exc)
        try:
            audit.write_anchor(self.db.conn, self._anchored)
        except (sqlite3.Error, OSError) as exc:
            log.warning("the audit head could not be anchored at close: %s", exc)
        self.db.conn.close()
        self.db = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        log.info("engine stopped")

    @staticmethod
    def _record_last_deliveries(db: Database, notifier: Notifier) -> None:
        """What the notifier finished while closing; a full disk costs the record only."""
        try:
            record_deliveries(db, notifier.take_deliveries())
            db.conn.commit()
        except sqlite3.Error as exc:
            log.warning("alert deliveries at shutdown not recorded: %s", exc)

    # ----------------------------------------------------------------- jobs

    def _trader(self) -> Trader:
        if self.trader is None:
            raise RuntimeError("engine is not open")
        return self.trader

    def _guarded(self, job: Callable[[], T]) -> T | None:
        """Run a trading job; a store with no room to write is one condition, not an error."""
        try:
            return job()
        except (sqlite3.OperationalError, OSError) as exc:
            if not is_store_full(exc):
                raise
            trader = self._trader()
            trader.db.conn.rollback()
            assert self.guard is not None
            if self.guard.on_full(exc):
                trader.store_block = FULL_BLOCK
            return None

    def cycle_job(self) -> CycleResult | None:
        return self._guarded(self._cycle)

    def _cycle(self) -> CycleResult:
        trader = self._trader()
        result = trader.cycle()
        assert self.guard is not None
        lasted = self.guard.on_write_ok()  # the cycle's row is committed: there is room
        if lasted is not None:
            trader.store_block = ""
            trader.alerts.raise_(
                Severity.HIGH,
                "store",
                "Disk space returned: entries allowed again",
                f"the database refused writes for {lasted / 1000:.0f} s; what the engine"
                " could not record in that time is missing from the record",
            )
            trader.db.conn.commit()
        if self.metrics is not None:
            self.metrics.cycle_done(result, trader)
        return result

    def command_job(self) -> int | None:
        return self._guarded(self._commands)

    def _commands(self) -> int:
        self._collect_training()
        return run_pending(self._trader(), self.extra_handlers)

    def monitor_job(self) -> None:
        self._guarded(self._monitor)

    def _monitor(self) -> None:
        trader = self._trader()
        self.broker_events(trader)
        self.reconcile_broker(trader)
        trader.monitor_step()

    def reconcile_broker(self, trader: Trader) -> None:
        """Positions against the broker at start and after every reconnect; a broker
        that cannot answer now is asked again on the next monitor step."""
        reconnects = int(getattr(trader.broker, "reconnects", 0))
        if reconnects > self._reconnects_seen:
            self._reconnects_seen = reconnects
            self._reconcile_due = "after a reconnect"
        why = self._reconcile_due
        if why is None or not trader.broker.connected:
            return
        try:
            reconcile(trader, why, orders=why != "at start")
        except BrokerUnavailable as exc:
            log.warning("reconciliation %s postponed: %s", why, exc)
            return
        self._reconcile_due = None

    def _reconcile_command(self, cmd: Command) -> str:
        trader = self._trader()
        try:
            found = reconcile(trader, f"asked by {cmd.requested_by}")
        except BrokerUnavailable as exc:
            raise CommandFailed(f"the broker cannot answer: {exc}") from None
        if not found:
            return "the engine and the broker agree"
        return "trading halted; differences: " + "; ".join(d.describe() for d in found)

    def _adopt_command(self, cmd: Command) -> str:
        try:
            return adopt_broker(self._trader(), cmd.requested_by, str(cmd.args.get("reason", "")))
        except (BrokerUnavailable, ValueError) as exc:
            raise CommandFailed(str(exc)) from None

    @staticmethod
    def broker_events(trader: Trader) -> None:
        """A live broker's and feed's connectivity events become alerts here, on the
        trading thread (the only writer)."""
        for source, side in (("broker", trader.broker), ("feed", trader.feed)):
            drain = getattr(side, "drain_events", None)
            if drain is None:
                continue
            for severity, title, message in drain():
                trader.alerts.raise_(
                    severity, source, title, message, dedupe_key=f"{source}:{title}"
                )

    def heartbeat_job(self) -> None:
        assert self.guard is not None
        lost = self.guard.file_problem()
        if lost is not None:
            self._on_store_lost(lost)
            return
        self._guarded(self._heartbeat)

    def _heartbeat(self) -> None:
        trader = self._trader()
        if self.metrics is not None:
            self.metrics.tick()
        assert self.lease is not None and self.db is not None
        now = self.clock()
        lease_mod.heartbeat(self.db, self.lease, now)
        market_now = trader.advance_market(now)
        calendar = trader.gate.calendar
        market_open = calendar is None or any(
            calendar.is_open(symbol, market_now) for symbol in trader.feed.symbols
        )
        self.db.conn.execute(
            "UPDATE engine SET broker_connected = ?, market_open = ?, market_time = ? WHERE id = 1",
            (int(trader.broker.connected), int(market_open), market_now),
        )
        while self._events:
            severity, source, title, message = self._events.popleft()
            trader.alerts.raise_(severity, source, title, message, dedupe_key=f"job:{title}")
        if self.notifier is not None:
            take_and_record(self.notifier, self.db, trader.alerts.raise_)
        self.db.conn.commit()
        self._anchored = audit.write_anchor(self.db.conn, self._anchored)

    def digest_job(self) -> None:
        """The daily digest on every channel, whatever the severity floor."""
        if self.notifier is None or not self.notifier.enabled:
            return
        trader = self._trader()
        self.notifier.submit(
            digest_message(digest_facts(trader.db.conn, self.clock())), always=True
        )

    @property
    def backup_dir(self) -> Path:
        configured = self.settings.engine.backup_dir
        return Path(configured) if configured else self.path.parent / "backups"

    def _on_store_lost(self, reason: str) -> None:
        """The database file was deleted or replaced: halt, tell the operator, stop.

        Running on would trade on a file nobody can read, and hold the lock that
        keeps a new engine off the path."""
        assert self.guard is not None
        if not self.guard.on_lost(reason):
            return
        trader = self._trader()
        try:
            if trader.state is not TradingState.HALTED:
                trader.set_state(TradingState.HALTED, reason, ENGINE_ACTOR)
            trader.db.conn.commit()
        except sqlite3.Error as exc:
            trader.db.conn.rollback()
            trader.state = TradingState.HALTED  # at least nothing new trades before the stop
            log.warning("HALTED could not be recorded: %s", exc)
        self.request_stop()

    def daily_job(self) -> None:
        self._guarded(self._daily)

    def _daily(self) -> None:
        """Prune per-cycle facts past `engine.keep_cycles_days`, then back up."""
        trader = self._trader()
        now = self.clock()
        deleted = prune(
            trader.db, now, self.settings.engine.keep_cycles_days, market_now=trader.market_now
        )
        try:
            target = take_backup(
                trader.db.conn,
                self.path,
                self.backup_dir,
                now,
                keep=self.settings.engine.keep_backups,
            )
            done = f"backup {target}"
        except (BackupError, OSError, sqlite3.Error) as exc:
            log.error("daily backup into %s failed: %s", self.backup_dir, exc)
            trader.alerts.raise_(
                Severity.HIGH, "engine", "Daily backup failed", f"{self.backup_dir}: {exc}"
            )
            done = "backup FAILED"
        # The head leaves the machine with the alert: a third anchor for the audit chain.
        top = audit.head(trader.db.conn)
        anchor = f"audit head #{top.id} {top.hash}" if top else "audit chain empty"
        trader.alerts.raise_(
            Severity.INFO,
            "engine",
            "Daily housekeeping",
            f"pruned {sum(deleted.values())} per-cycle rows; {done}; {anchor}",
        )
        trader.db.conn.commit()

    def step(self, cycles: int = 1) -> list[CycleResult]:
        """Run the jobs synchronously: commands, cycle, monitor, heartbeat."""
        results = []
        for _ in range(cycles):
            self.command_job()
            result = self.cycle_job()
            if result is not None:
                results.append(result)
            self.monitor_job()
            self.heartbeat_job()
        return results

    # ------------------------------------------------------------ real time

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        # Runs on the scheduler's thread: never touch the writer here; queue it.
        if event.code == EVENT_JOB_MISSED:
            self._events.append(
                (Severity.WARNING, "scheduler", f"Job {event.job_id} missed", "the run was late")
            )
        elif event.exception is not None:
            self._events.append(
                (
                    Severity.HIGH,
                    "scheduler",
                    f"Job {event.job_id} failed",
                    f"{type(event.exception).__name__}: {event.exception}",
                )
            )

    def watchdog_job(self) -> None:
        """Dead-man's switch, on its own thread and connection.

        The monitor watches the same condition from the trading thread with the same
        rule (`deadman_alert`), so one stall is one alert whichever sees it first. The
        alert goes through `Alerts`, so it reaches every channel; when the stuck
        thread holds the write lock, it is sent from memory instead, once per stall.
        """
        if file_identity(self.path) is None:
            return  # the heartbeat deals with a missing file; never create one here
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=0.5)  # never wait long on a stuck writer
        try:
            row = conn.execute(
                "SELECT last_cycle_at, started_at FROM engine WHERE id = 1"
            ).fetchone()
            if row is None:
                return
            alert = deadman_alert(
                row[0],
                row[1],
                self.clock(),
                int(max(self.settings.engine.cycle_period, 0.05) * 1000),
                self.settings.risk.deadman_intervals,
            )
            if alert is None:
                return
            send = self.notifier.submit if self.notifier is not None else None
            alerts = Alerts(Database(conn), self.clock, deliver=send)
            if alerts.is_open(alert.dedupe_key):
                return
            try:
                alerts.raise_(
                    alert.severity,
                    alert.source,
                    alert.title,
                    alert.message,
                    dedupe_key=alert.dedupe_key,
                )
                conn.commit()
            except sqlite3.OperationalError as exc:
                conn.rollback()
                stall = row[0] if row[0] is not None else row[1]
                if self._deadman_sent != stall and self.guard is not None:
                    self._deadman_sent = stall
                    self.guard.send(alert.severity, alert.title, f"{alert.message} ({exc})")
        finally:
            conn.close()

    def _start_metrics(self) -> None:
        """Serve /metrics and /healthz; a taken port costs the metrics, never the engine."""
        cfg = self.settings.metrics
        if cfg.port == 0:
            return
        metrics = EngineMetrics(
            self.path,
            cycle_seconds=max(self.settings.engine.cycle_period, 0.05),
            stale_seconds=cfg.stale_seconds,
            stale_intervals=self.settings.risk.deadman_intervals,
            failures_limit=self.settings.engine.failure_pause_after,
            clock=self.clock,
        )
        if self.notifier is not None:
            metrics.watch_notifier(self.notifier.channel_stats)
        try:
            metrics.store.start()
            server = MetricsServer(metrics, cfg.address, cfg.port)
        except (OSError, sqlite3.Error) as exc:
            log.warning("metrics not served on %s:%d: %s", cfg.address, cfg.port, exc)
            metrics.store.close()
            return
        self.metrics, self.metrics_server = metrics, server
        server.start()

    def request_stop(self) -> None:
        self._stop.set()

    def _burst(self) -> None:
        deadline = time.monotonic() + BURST_SECONDS
        trader = self._trader()
        while time.monotonic() < deadline and not self._stop.is_set():
            trader.cycle()
            trader.monitor_step()
            if self.replay_done():
                return

    def replay_done(self) -> bool:
        """A replay has run out of data (a live or simulated market never does)."""
        trader = self.trader
        return trader is not None and bool(getattr(trader.feed, "exhausted", False))

    def run(self, for_seconds: float | None = None, *, install_signals: bool = True) -> None:
        """Run on the scheduler until stopped (SIGINT, SIGTERM, request_stop) or for a while."""
        if self.trader is None:
            self.open()
        cfg = self.settings.engine
        scheduler = BackgroundScheduler(
            executors={TRADING: ThreadPoolExecutor(1), WATCHDOG: ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        period = cfg.cycle_period
        grace = max(1, int(period * 2))
        # Unpaced (speed = max): short bursts of cycles, each followed by its monitor
        # step, so commands and the heartbeat still get the trading thread in between.
        cycle = self._burst if period == 0 else self.cycle_job
        jobs: list[tuple[str, Callable[[], Any], float, str]] = [
            ("commands", self.command_job, 0.25, TRADING),
            ("cycle", cycle, period or BURST_SECONDS, TRADING),
            ("monitor", self.monitor_job, 1.0, TRADING),
            ("heartbeat", self.heartbeat_job, cfg.heartbeat_seconds, TRADING),
            ("watchdog", self.watchdog_job, 1.0, WATCHDOG),
        ]
        for job_id, func, seconds, executor in jobs:
            scheduler.add_job(
                func,
                "interval",
                seconds=seconds,
                id=job_id,
                executor=executor,
                misfire_grace_time=grace,
                next_run_time=_now_dt(delay=DELAYED_START.get(job_id, 0.0)),
            )
        digest = digest_trigger(self.settings.alerts)
        if digest is not None and self.notifier is not None and self.notifier.enabled:
            scheduler.add_job(self.digest_job, digest, id="digest", executor=TRADING)
        scheduler.add_job(
            self.daily_job,
            daily_trigger(cfg),
            id="daily",
            executor=TRADING,
            misfire_grace_time=3_600,  # a late backup beats none
        )
        if self.retrainer is not None and self.db is not None:
            retrainer = self.retrainer
            scheduler.add_job(
                retrainer.request,
                retrain_trigger(self.settings.ml),
                args=["scheduled"],
                id="retrain",
                executor=WATCHDOG,  # only queues the run; training happens on the ML pool
            )
            if self.settings.ml.bootstrap and needs_bootstrap(self.db.conn):
                retrainer.request("bootstrap", simulated=True)
                self._trader().alerts.raise_(
                    Severity.INFO,
                    "ml",
                    "Training a first model",
                    "the registry is empty: a bootstrap model is training on simulated"
                    " history in the background; until it registers the engine trades on rules",
                )
                self.db.conn.commit()
        previous: dict[int, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():

            def _handle(signum: int, frame: FrameType | None) -> None:
                log.info("signal %d: stopping", signum)
                self._stop.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[int(sig)] = signal.signal(sig, _handle)
        self._scheduler = scheduler
        self._start_metrics()
        scheduler.start()
        log.info(
            "engine running: %s, %s bars, market %s",
            f"cycle every {period:.2f} s" if period else "unpaced",
            cfg.bar_interval,
            "simulated" if cfg.simulated else "live",
        )
        deadline = None if for_seconds is None else time.monotonic() + for_seconds
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self.replay_done():
                    log.info("end of the replayed data")
                    break
                self._stop.wait(0.1)
        finally:
            scheduler.shutdown(wait=True)
            self._scheduler = None
            if self.metrics_server is not None:
                self.metrics_server.close()
                self.metrics_server = None
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.close()


def _now_dt(delay: float = 0.0) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=delay)
