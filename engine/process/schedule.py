"""The scheduler and the signals: APScheduler's BackgroundScheduler with one
"trading" executor thread (commands, cycle, monitor, heartbeat, daily, digest
never interleave and the writer connection has one user) and a "watchdog"
executor of its own, and SIGINT/SIGTERM turned into a stop request."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from engine.config import EngineSettings

log = logging.getLogger(__name__)

TRADING = "trading"
WATCHDOG = "watchdog"
BURST_SECONDS = 0.2
# The command job only compares a number when nothing is queued (handlers.run_if_queued),
# so it can look often: a command waits for the job in hand, not for a polling period.
COMMAND_POLL_SECONDS = 0.05
# The watchdog waits for a first cycle.
DELAYED_START = {"watchdog": 1.0}


def daily_trigger(settings: EngineSettings) -> CronTrigger:
    """Prune and back up every day at `engine.backup_at` (UTC)."""
    hour, minute = settings.backup_hour_minute
    return CronTrigger(hour=hour, minute=minute, timezone="UTC")


@dataclass
class JobTable:
    """What the scheduler runs: the interval jobs and the triggered ones."""

    commands: Callable[[], Any]
    cycle: Callable[[], Any]
    monitor: Callable[[], Any]
    heartbeat: Callable[[], Any]
    watchdog: Callable[[], Any]
    daily: Callable[[], Any]
    on_event: Callable[[JobEvent], None]
    digest: tuple[Callable[[], Any], BaseTrigger] | None = None
    retrain: tuple[Callable[[str], Any], BaseTrigger] | None = None


# A job whose previous run has not finished skips its turn (max_instances 1). The
# commands job polls every 50 ms on the trading thread and skips whenever a cycle is in
# hand: by design, so it is counted, never logged.
SILENT_SKIPS = frozenset({"commands"})
SKIP_LOG_SECONDS = 60.0
_SKIP_WARNING = "maximum number of running instances reached"


class _DropSkipWarnings(logging.Filter):
    """APScheduler warns at every skipped run: at 100 symbols and 0.05 s cycles, tens of
    lines a second. `SkippedRuns` counts them and says so once a minute instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _SKIP_WARNING not in str(record.msg)


_DROP_SKIP_WARNINGS = _DropSkipWarnings()


def _quiet_skip_warnings() -> None:
    logger = logging.getLogger("apscheduler.scheduler")
    if _DROP_SKIP_WARNINGS not in logger.filters:
        logger.addFilter(_DROP_SKIP_WARNINGS)


class SkippedRuns:
    """Runs the scheduler skipped because the job's previous run was still going (a
    cycle longer than its period skips the next one): counted per job, and logged at
    most once per `every_seconds` per job, with the count since the last line.
    Called on the scheduler's thread."""

    def __init__(
        self,
        every_seconds: float = SKIP_LOG_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_seconds = every_seconds
        self._monotonic = monotonic
        self.total: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    def skipped(self, job_id: str) -> None:
        self.total[job_id] = self.total.get(job_id, 0) + 1
        if job_id in SILENT_SKIPS:
            return
        self._unlogged[job_id] = self._unlogged.get(job_id, 0) + 1
        now = self._monotonic()
        last = self._logged_at.get(job_id)
        if last is not None and now - last < self.every_seconds:
            return
        n = self._unlogged.pop(job_id)
        self._logged_at[job_id] = now
        log.warning(
            "job %s skipped %d run%s: its previous run was still going (%d skipped since"
            " start; the next line comes after %.0f s at the earliest)",
            job_id,
            n,
            "" if n == 1 else "s",
            self.total[job_id],
            self.every_seconds,
        )


def build_scheduler(cfg: EngineSettings, jobs: JobTable) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        executors={TRADING: ThreadPoolExecutor(1), WATCHDOG: ThreadPoolExecutor(1)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone="UTC",
    )
    scheduler.add_listener(
        jobs.on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
    )
    _quiet_skip_warnings()
    period = cfg.cycle_period
    grace = max(1, int(period * 2))
    interval: list[tuple[str, Callable[[], Any], float, str]] = [
        ("commands", jobs.commands, COMMAND_POLL_SECONDS, TRADING),
        ("cycle", jobs.cycle, period or BURST_SECONDS, TRADING),
        ("monitor", jobs.monitor, 1.0, TRADING),
        ("heartbeat", jobs.heartbeat, cfg.heartbeat_seconds, TRADING),
        ("watchdog", jobs.watchdog, 1.0, WATCHDOG),
    ]
    for job_id, func, seconds, executor in interval:
        scheduler.add_job(
            func,
            "interval",
            seconds=seconds,
            id=job_id,
            executor=executor,
            misfire_grace_time=grace,
            next_run_time=datetime.now(UTC) + timedelta(seconds=DELAYED_START.get(job_id, 0.0)),
        )
    if jobs.digest is not None:
        scheduler.add_job(jobs.digest[0], jobs.digest[1], id="digest", executor=TRADING)
    scheduler.add_job(
        jobs.daily,
        daily_trigger(cfg),
        id="daily",
        executor=TRADING,
        misfire_grace_time=3_600,  # a late backup beats none
    )
    if jobs.retrain is not None:
        request, trigger = jobs.retrain
        scheduler.add_job(
            request,
            trigger,
            args=["scheduled"],
            id="retrain",
            executor=WATCHDOG,  # only queues the run; training happens on the ML pool
        )
    return scheduler


def install_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set `stop` (on the main thread only); returns the undo."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[int(sig)] = signal.signal(sig, _handle)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
