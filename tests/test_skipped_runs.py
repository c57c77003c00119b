"""Runs the scheduler skips because the job's previous run is still going: counted per
job and exported, said once a minute per job, and not one APScheduler line each."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from prometheus_client import generate_latest

from engine.process.metrics import EngineMetrics
from engine.process.schedule import JobTable, SkippedRuns, build_scheduler
from tests.conftest import engine_settings
from tests.test_metrics import samples


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "engine.process.schedule"]


def test_a_job_is_said_skipped_once_a_minute_with_the_count_since(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="engine.process.schedule")
    ticks = Ticks()
    skipped = SkippedRuns(every_seconds=60, monotonic=ticks)
    for _ in range(5):
        skipped.skipped("cycle")
        ticks.now += 1
    assert len(_warnings(caplog)) == 1
    assert "cycle skipped 1 run:" in _warnings(caplog)[0]
    ticks.now = 61
    skipped.skipped("cycle")
    assert len(_warnings(caplog)) == 2
    assert "cycle skipped 5 runs" in _warnings(caplog)[1]
    assert "(6 skipped since start" in _warnings(caplog)[1]
    assert skipped.total == {"cycle": 6}


def test_the_command_poll_skipping_behind_a_cycle_is_counted_not_said(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="engine.process.schedule")
    skipped = SkippedRuns()
    for _ in range(3):
        skipped.skipped("commands")
    assert skipped.total == {"commands": 3}
    assert _warnings(caplog) == []


def test_the_real_scheduler_skips_a_long_cycle_once_said_and_counted(
    caplog, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING)
    metrics = EngineMetrics(
        tmp_path / "none.db",
        cycle_seconds=0.05,
        stale_seconds=None,
        stale_intervals=10,
        failures_limit=5,
        clock=lambda: 0,
    )
    skipped = SkippedRuns()
    release = threading.Event()
    started = threading.Event()

    def cycle() -> None:  # the first run outlasts many periods
        started.set()
        release.wait(30)

    def on_event(event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            skipped.skipped(event.job_id)
            metrics.job_skipped(event.job_id)

    def nothing() -> None:
        return None

    table = JobTable(
        commands=nothing,
        cycle=cycle,
        monitor=nothing,
        heartbeat=nothing,
        watchdog=nothing,
        daily=nothing,
        on_event=on_event,
    )
    scheduler = build_scheduler(engine_settings(cycle_seconds=0.05).engine, table)
    scheduler.start()
    try:
        assert started.wait(30)
        deadline = time.monotonic() + 30
        while skipped.total.get("cycle", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        release.set()
        scheduler.shutdown(wait=True)

    assert skipped.total["cycle"] >= 3
    text = generate_latest(metrics.registry).decode()
    exported = samples(text)[("cockpit_job_runs_skipped_total", (("job", "cycle"),))]
    assert exported == skipped.total["cycle"]
    said = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert [r.name for r in said] == ["engine.process.schedule"]  # none from APScheduler
