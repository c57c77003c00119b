"""The engine process: one lease, one writer, one trading thread.

`Engine` puts the parts together and runs them: it takes the lock and the lease,
builds the trader from `wiring` (feed, broker, strategy, ML) with the notifier
and the store guard, and runs `jobs` on the scheduler (`schedule`) with the
`watchdog` on its own thread and connection, precisely so it still works when
the trading thread is stuck.

`Engine.step()` runs the same jobs synchronously, for backtests and tests with a
simulated clock; `Engine.run()` runs them on the scheduler in real time.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from apscheduler.events import JobEvent
from sqlite_utils import Database

from engine.alerts.digest import digest_trigger
from engine.alerts.notify import Notifier
from engine.config import Settings, with_stored_secrets
from engine.cycle import CycleResult, Trader
from engine.domain import Bar
from engine.execution.brokers.base import Broker
from engine.market.feeds import Feed
from engine.ml.jobs import retrain_trigger
from engine.process import lease as lease_mod
from engine.process.jobs import Jobs
from engine.process.metrics import EngineMetrics, MetricsServer, serve_metrics
from engine.process.schedule import (
    BURST_SECONDS,
    JobTable,
    build_scheduler,
    daily_trigger,
    install_signals,
)
from engine.process.storeguard import StoreGuard
from engine.process.watchdog import Watchdog
from engine.process.wiring import Given, MlParts, open_engine
from store.checkpoint import Checkpointer
from store.db import db_path, in_memory, now_ms

# While the engine runs in real time the trading thread gives up the GIL at every SQLite
# statement, and another Python thread (the shadow, the scheduler, a page of metrics)
# may keep it up to the switch interval before handing it back: 5 ms by default, a
# cycle's whole budget. bench/cycle.py at 100 symbols, two alternating pairs: p99
# 56.7 / 64.6 ms at 5 ms, 41.6 / 59.2 ms at 1 ms, p50 about 2 ms lower.
SWITCH_INTERVAL_SECONDS = 0.001

__all__ = ["Engine", "daily_trigger"]

log = logging.getLogger(__name__)
# urllib3 logs each request line at DEBUG, path and query included: a webhook's
# token lives there, so its debug lines never reach the engine's logs.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)


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
        self._given = Given(broker, feed, history)
        self.db: Database | None = None
        self.trader: Trader | None = None
        self.jobs: Jobs | None = None
        self.lease: lease_mod.Lease | None = None
        self.notifier: Notifier | None = None
        self.guard: StoreGuard | None = None
        self.ml: MlParts | None = None
        self.metrics: EngineMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.lock: lease_mod.DatabaseLock | None = None
        self.watchdog: Watchdog | None = None
        self._stop = threading.Event()

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
        opened = open_engine(self.settings, self.path, self.clock, self._given)
        self.db, self.lease, self.trader = opened.db, opened.lease, opened.trader
        self.notifier, self.guard, self.ml = opened.notifier, opened.guard, opened.ml
        self.watchdog = Watchdog(self.settings, self.path, self.clock, self.notifier, self.guard)
        self.jobs = Jobs(
            self.settings,
            self.path,
            self.clock,
            trader=opened.trader,
            lease=opened.lease,
            guard=opened.guard,
            notifier=opened.notifier,
            retrainer=opened.ml.retrainer if opened.ml else None,
            model=opened.ml.model if opened.ml else None,
            request_stop=self.request_stop,
        )
        self.jobs.anchored = opened.anchored
        try:
            self.jobs.start_trading()
        except BaseException:
            self._abandon()
            raise
        return opened.trader

    def _abandon(self) -> None:
        """A start that failed half-way: release what it took, trade nothing."""
        if self.ml is not None:
            self.ml.shutdown()
            self.ml = None
        if self.notifier is not None:
            self.notifier.close(timeout=1.0)
            self.notifier = None
        if self.db is not None:
            if self.lease is not None:
                lease_mod.release(self.db, self.lease, self.clock())
            self.db.conn.close()
            self.db = None

    def close(self) -> None:
        if self.ml is not None:
            self.ml.shutdown()
            self.ml = None
        if self.db is None or self.jobs is None:
            return
        self.jobs.shutdown()
        self.notifier = None
        self.db.conn.close()
        self.db = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        log.info("engine stopped")

    # ----------------------------------------------------------------- jobs

    def _trader(self) -> Trader:
        if self.trader is None:
            raise RuntimeError("engine is not open")
        return self.trader

    def _jobs(self) -> Jobs:
        if self.jobs is None:
            raise RuntimeError("engine is not open")
        return self.jobs

    @property
    def backup_dir(self) -> Path:
        return self._jobs().backup_dir

    def cycle_job(self) -> CycleResult | None:
        jobs = self._jobs()
        return jobs.guarded(jobs.cycle)

    def command_job(self) -> int | None:
        jobs = self._jobs()
        return jobs.guarded(jobs.run_commands)

    def monitor_job(self) -> None:
        jobs = self._jobs()
        jobs.guarded(jobs.monitor)

    def heartbeat_job(self) -> None:
        self._jobs().heartbeat()

    def daily_job(self) -> None:
        jobs = self._jobs()
        jobs.guarded(jobs.daily)

    def digest_job(self) -> None:
        self._jobs().digest()

    def watchdog_job(self) -> None:
        """Dead-man's switch, on its own thread and connection (see `Watchdog`)."""
        if self.watchdog is not None:
            self.watchdog.check()

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

    def _on_job_event(self, event: JobEvent) -> None:
        if self.jobs is not None:
            self.jobs.job_event(event)

    def _start_metrics(self) -> None:
        stats = self.notifier.channel_stats if self.notifier is not None else None
        served = serve_metrics(self.settings, self.path, self.clock, stats)
        if served is not None:
            self.metrics, self.metrics_server = served
            self._jobs().metrics = self.metrics

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

    def _job_table(self) -> JobTable:
        notifier = self.notifier
        retrainer = self.ml.retrainer if self.ml else None
        digest = digest_trigger(self.settings.alerts)
        return JobTable(
            commands=self.command_job,
            # Unpaced (speed = max): short bursts of cycles, each followed by its monitor
            # step, so commands and the heartbeat still get the trading thread in between.
            cycle=self._burst if self.settings.engine.cycle_period == 0 else self.cycle_job,
            monitor=self.monitor_job,
            heartbeat=self.heartbeat_job,
            watchdog=self.watchdog_job,
            daily=self.daily_job,
            on_event=self._on_job_event,
            digest=(
                (self.digest_job, digest)
                if digest is not None and notifier is not None and notifier.enabled
                else None
            ),
            retrain=(
                (retrainer.request, retrain_trigger(self.settings.ml))
                if retrainer is not None
                else None
            ),
        )

    def run(self, for_seconds: float | None = None, *, install_signals: bool = True) -> None:
        """Run on the scheduler until stopped (SIGINT, SIGTERM, request_stop) or for a while."""
        if self.trader is None:
            self.open()
        cfg = self.settings.engine
        scheduler = build_scheduler(cfg, self._job_table())
        self._jobs().bootstrap_ml()
        # What start-up built (models, history, caches) lives as long as the engine: out
        # of the collector's generations, a full collection no longer walks it mid-cycle.
        gc.freeze()
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        restore = _signals(self._stop) if install_signals else _nothing
        self._start_metrics()
        checkpointer = Checkpointer(self.path)
        checkpointer.start()
        scheduler.start()
        period = cfg.cycle_period
        log.info(
            "engine running: %s, %s bars, market %s",
            f"cycle every {period:.2f} s" if period else "unpaced",
            cfg.bar_interval,
            "simulated" if cfg.simulated else "live",
        )
        try:
            _wait(self._stop, for_seconds, self.replay_done)
        finally:
            scheduler.shutdown(wait=True)
            checkpointer.stop()
            if self.metrics_server is not None:
                self.metrics_server.close()
                self.metrics_server = None
            restore()
            self.close()
            gc.unfreeze()
            sys.setswitchinterval(switch_interval)


def _wait(
    stop: threading.Event, for_seconds: float | None, replay_done: Callable[[], bool]
) -> None:
    deadline = None if for_seconds is None else time.monotonic() + for_seconds
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            return
        if replay_done():
            log.info("end of the replayed data")
            return
        stop.wait(0.1)


def _nothing() -> None:
    return None


_signals = install_signals
