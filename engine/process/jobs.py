"""The engine's jobs: what runs on the trading thread, on the scheduler or
stepped by `Engine.step()`.

Commands (every 50 ms and before each cycle), the cycle, the monitor (every
second, after the broker's link is followed by `broker_watch`), the heartbeat,
the daily housekeeping and the digest. Each trading job runs guarded: a store
with no room to write is one condition (`StoreGuard`), not an error. Scheduler
events (a missed or failed job) are queued from the scheduler's thread and
raised as alerts by the next heartbeat, on the trading thread, the only writer.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)

from engine.alerts import audit
from engine.alerts.deliveries import record as record_deliveries
from engine.alerts.deliveries import take_and_record
from engine.alerts.digest import digest_facts, digest_message
from engine.alerts.notify import Notifier
from engine.backtest.launch import Launcher
from engine.config import Settings
from engine.cycle import CycleResult, Trader
from engine.domain import Severity
from engine.execution.portfolio import CHECKPOINT_FILLS, write_checkpoint
from engine.ml.jobs import Retrainer
from engine.ml.registry import needs_bootstrap
from engine.ml.service import ModelService
from engine.process import lease as lease_mod
from engine.process.broker_watch import BrokerWatch
from engine.process.handlers import CommandContext, recover_interrupted, run_if_queued
from engine.process.housekeeping import backup_dir, daily_housekeeping
from engine.process.metrics import EngineMetrics
from engine.process.schedule import SkippedRuns
from engine.process.storeguard import FULL_BLOCK, StoreGuard
from store import engine_row
from store.commands import ENGINE_ACTOR
from store.db import is_store_full

log = logging.getLogger(__name__)
T = TypeVar("T")


class Jobs:
    def __init__(
        self,
        settings: Settings,
        path: Path,
        clock: Callable[[], int],
        *,
        trader: Trader,
        lease: lease_mod.Lease,
        guard: StoreGuard,
        notifier: Notifier,
        retrainer: Retrainer | None,
        model: ModelService | None,
        request_stop: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.path = path
        self.clock = clock
        self.trader = trader
        self.db = trader.db
        self.lease = lease
        self.guard = guard
        self.notifier = notifier
        self.retrainer = retrainer
        self.request_stop = request_stop
        self.metrics: EngineMetrics | None = None
        self.skipped = SkippedRuns()
        self.anchored: audit.Head | None = None
        self.commands = CommandContext(trader, retrainer, model, Launcher(path).handle)
        self._events: deque[tuple[Severity, str, str, str]] = deque(maxlen=1000)
        self.broker_watch = BrokerWatch(trader)

    def start_trading(self) -> None:
        """Reconcile with the broker, fail commands a crash interrupted, say so."""
        trader = self.trader
        self.broker_watch.reconcile()
        recover_interrupted(trader)
        engine_row.write_market(self.db.conn, trader.trading_day.spec, trader.market_now)
        trader.alerts.raise_(
            Severity.INFO,
            "engine",
            "Engine started",
            f"pid {self.lease.pid}, {len(trader.feed.symbols)} symbols,"
            f" {trader.broker.name} broker, trading state {trader.state}",
        )
        self.db.conn.commit()

    def bootstrap_ml(self) -> None:
        """An empty registry: train a first model on simulated history, in the background."""
        if self.retrainer is None:
            return
        if not (self.settings.ml.bootstrap and needs_bootstrap(self.db.conn)):
            return
        self.retrainer.request("bootstrap", simulated=True)
        self.trader.alerts.raise_(
            Severity.INFO,
            "ml",
            "Training a first model",
            "the registry is empty: a bootstrap model is training on simulated"
            " history in the background; until it registers the engine trades on rules",
        )
        self.db.conn.commit()

    def shutdown(self) -> None:
        """Flush the notifier, close the model and the broker, keep the portfolio's
        checkpoint, release the lease and anchor the audit head; the writer stays
        open for the caller to close."""
        self.notifier.close(timeout=5.0)
        try:
            record_deliveries(self.db, self.notifier.take_deliveries())
            self.db.conn.commit()
        except sqlite3.Error as exc:
            log.warning("alert deliveries at shutdown not recorded: %s", exc)
        try:
            if self.trader.model is not None:
                self.trader.model.close()
            self.db.conn.commit()
            self.trader.broker.close()
        except Exception:
            log.exception("closing the broker failed")
        try:
            # The next start replays no fill: the portfolio as it stands is kept.
            if self.trader.portfolio.fills_since_checkpoint:
                write_checkpoint(self.db, self.trader.portfolio, self.clock())
                self.db.conn.commit()
        except sqlite3.Error as exc:
            self.db.conn.rollback()
            log.warning("the portfolio checkpoint at shutdown not written: %s", exc)
        try:
            lease_mod.release(self.db, self.lease, self.clock())
        except sqlite3.Error as exc:
            log.warning("the lease could not be released in the database: %s", exc)
        try:
            audit.write_anchor(self.db.conn, self.anchored)
        except (sqlite3.Error, OSError) as exc:
            log.warning("the audit head could not be anchored at close: %s", exc)

    def guarded(self, job: Callable[[], T]) -> T | None:
        """Run a trading job; a store with no room to write is one condition, not an error."""
        try:
            return job()
        except (sqlite3.OperationalError, OSError) as exc:
            if not is_store_full(exc):
                raise
            self.db.conn.rollback()
            if self.guard.on_full(exc):
                self.trader.router.store_block = FULL_BLOCK
            return None

    # ------------------------------------------------------------ the cycle

    def cycle(self) -> CycleResult:
        trader = self.trader
        # A command queued while the thread was busy is applied before this cycle
        # trades, instead of after it (a pause or a stop must not wait a cycle).
        self.guarded(self._queued_commands)
        result = trader.cycle()
        lasted = self.guard.on_write_ok()  # the cycle's row is committed: there is room
        if lasted is not None:
            trader.router.store_block = ""
            trader.alerts.raise_(
                Severity.HIGH,
                "store",
                "Disk space returned: entries allowed again",
                f"the database refused writes for {lasted / 1000:.0f} s; what the engine"
                " could not record in that time is missing from the record",
            )
            self.db.conn.commit()
        if self.metrics is not None:
            self.metrics.cycle_done(result, trader)
        return result

    def run_commands(self) -> int:
        self._collect_training()
        return run_if_queued(self.commands)

    def _queued_commands(self) -> int:
        return run_if_queued(self.commands)

    def _collect_training(self) -> None:
        if self.retrainer is None:
            return
        version = self.retrainer.collect(self.db)
        if version is None:
            return
        if self.trader.model is not None:
            self.trader.model.sync()
        self.trader.alerts.raise_(
            Severity.INFO, "ml", "Model registered", f"{version} is in the registry"
        )
        self.db.conn.commit()

    def monitor(self) -> None:
        self.broker_watch.raise_events()
        self.broker_watch.reconcile()
        self.trader.monitor_step()

    # ------------------------------------------------------------ liveness

    def heartbeat(self) -> None:
        lost = self.guard.file_problem()
        if lost is not None:
            self._on_store_lost(lost)
            return
        self.guarded(self._heartbeat)

    def _heartbeat(self) -> None:
        trader = self.trader
        if self.metrics is not None:
            self.metrics.tick()
        now = self.clock()
        lease_mod.heartbeat(self.db, self.lease, now)
        market_now = trader.advance_market(now)
        calendar = trader.gate.calendar
        market_open = calendar is None or any(
            calendar.is_open(symbol, market_now) for symbol in trader.feed.symbols
        )
        engine_row.write_links(
            self.db.conn,
            broker_connected=trader.broker.connected,
            market_open=market_open,
            market_now=market_now,
        )
        while self._events:
            severity, source, title, message = self._events.popleft()
            trader.alerts.raise_(severity, source, title, message, dedupe_key=f"job:{title}")
        take_and_record(self.notifier, self.db, trader.alerts.raise_)
        if trader.portfolio.fills_since_checkpoint >= CHECKPOINT_FILLS:
            write_checkpoint(self.db, trader.portfolio, now)
        self.db.conn.commit()
        self.anchored = audit.write_anchor(self.db.conn, self.anchored)

    def job_event(self, event: JobEvent) -> None:
        # Runs on the scheduler's thread: never touch the writer here; queue it.
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self.skipped.skipped(event.job_id)
            if self.metrics is not None:
                self.metrics.job_skipped(event.job_id)
        elif event.code == EVENT_JOB_MISSED:
            self._events.append(
                (Severity.WARNING, "scheduler", f"Job {event.job_id} missed", "the run was late")
            )
        elif isinstance(event, JobExecutionEvent) and event.exception is not None:
            self._events.append(
                (
                    Severity.HIGH,
                    "scheduler",
                    f"Job {event.job_id} failed",
                    f"{type(event.exception).__name__}: {event.exception}",
                )
            )

    def _on_store_lost(self, reason: str) -> None:
        """The database file was deleted or replaced: halt, tell the operator, stop.

        Running on would trade on a file nobody can read, and hold the lock that
        keeps a new engine off the path."""
        if not self.guard.on_lost(reason):
            return
        controls = self.trader.controls
        try:
            controls.halt(reason, ENGINE_ACTOR)
            self.db.conn.commit()
        except sqlite3.Error as exc:
            self.db.conn.rollback()
            controls.halt_in_memory(reason)  # at least nothing new trades before the stop
            log.warning("HALTED could not be recorded: %s", exc)
        self.request_stop()

    # ------------------------------------------------------------ daily

    @property
    def backup_dir(self) -> Path:
        return backup_dir(self.settings, self.path)

    def digest(self) -> None:
        """The daily digest on every channel, whatever the severity floor."""
        if self.notifier.enabled:
            self.notifier.submit(
                digest_message(digest_facts(self.db.conn, self.clock())), always=True
            )

    def daily(self) -> None:
        daily_housekeeping(self.settings, self.path, self.trader, self.clock())
