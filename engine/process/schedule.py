"""The scheduler and the signals: APScheduler's BackgroundScheduler with one
"trading" executor thread (commands, cycle, monitor, heartbeat, daily, digest
never interleave and the writer connection has one user) and a "watchdog"
executor of its own, and SIGINT/SIGTERM turned into a stop request."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
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
    on_event: Callable[[JobExecutionEvent], None]
    digest: tuple[Callable[[], Any], BaseTrigger] | None = None
    retrain: tuple[Callable[[str], Any], BaseTrigger] | None = None


def build_scheduler(cfg: EngineSettings, jobs: JobTable) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        executors={TRADING: ThreadPoolExecutor(1), WATCHDOG: ThreadPoolExecutor(1)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone="UTC",
    )
    scheduler.add_listener(jobs.on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
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
