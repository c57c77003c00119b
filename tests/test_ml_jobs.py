"""Retraining off the trading thread: the cron trigger, one run at a time, collection."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError, MlSettings
from engine.domain import Severity
from engine.ml import registry
from engine.ml.jobs import Retrainer, retrain_trigger
from engine.ml.registry import ModelStatus
from engine.ml.train import TrainParams
from store.db import open_writer

NOW = 1_767_225_600_000
TINY = TrainParams(n_folds=2, rounds=10)
SMALL = MlSettings(bootstrap_bars=700)


class HeldExecutor(Executor):
    """Runs submitted work only when the test says so."""

    def __init__(self) -> None:
        self.work: list[tuple[Future[Any], Callable[[], Any]]] = []

    def submit(self, fn, /, *args, **kwargs) -> Future[Any]:  # type: ignore[override]
        future: Future[Any] = Future()
        self.work.append((future, lambda: fn(*args, **kwargs)))
        return future

    def run_all(self) -> None:
        for future, job in self.work:
            try:
                future.set_result(job())
            except Exception as exc:
                future.set_exception(exc)


@pytest.fixture
def db(tmp_path: Path):
    database = open_writer(tmp_path / "cockpit.db")
    yield database
    database.conn.close()


def test_a_bad_cron_expression_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"ml\.retrain_cron = 'every night'"):
        retrain_trigger(MlSettings(retrain_cron="every night"))


def test_the_default_schedule_fires_at_three_utc() -> None:
    trigger = retrain_trigger(MlSettings())
    fire = trigger.get_next_fire_time(None, datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert fire == datetime(2026, 1, 2, 3, tzinfo=UTC)


def test_bootstrap_run_is_registered_as_champion_on_collect(db, tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as pool:
        retrainer = Retrainer(
            tmp_path / "cockpit.db", SMALL, pool, lambda *a: None,
            artifacts_dir=tmp_path / "m", params=TINY, clock=lambda: NOW,
        )  # fmt: skip
        retrainer.request("bootstrap", simulated=True)
    version = retrainer.collect(db)
    assert registry.champion(db.conn).version == version


def test_a_second_request_while_training_is_refused(db, tmp_path: Path) -> None:
    held = HeldExecutor()
    retrainer = Retrainer(None, SMALL, held, lambda *a: None, artifacts_dir=tmp_path / "m")
    assert (retrainer.request("first"), retrainer.request("second")) == (True, False)


def test_nothing_is_collected_before_the_run_finishes(db, tmp_path: Path) -> None:
    held = HeldExecutor()
    retrainer = Retrainer(None, SMALL, held, lambda *a: None, artifacts_dir=tmp_path / "m")
    retrainer.request("scheduled", simulated=True)
    assert retrainer.collect(db) is None and registry.needs_bootstrap(db.conn)


def test_a_later_run_becomes_challenger(db, tmp_path: Path) -> None:
    held = HeldExecutor()
    clock = iter([NOW, NOW, NOW + 60_000, NOW + 60_000])
    retrainer = Retrainer(
        None, SMALL, held, lambda *a: None, artifacts_dir=tmp_path / "m", params=TINY,
        clock=lambda: next(clock),
    )  # fmt: skip
    versions = []
    for _ in range(2):
        retrainer.request("scheduled", simulated=True)
        held.run_all()
        held.work.clear()
        versions.append(retrainer.collect(db))
    assert registry.get(db.conn, versions[1]).status is ModelStatus.CHALLENGER


def test_a_failed_run_alerts_and_registers_nothing(db, tmp_path: Path) -> None:
    alerts: list[tuple] = []
    held = HeldExecutor()
    retrainer = Retrainer(
        tmp_path / "cockpit.db", MlSettings(bootstrap=False), held, lambda *a: alerts.append(a),
        artifacts_dir=tmp_path / "m",
    )  # fmt: skip
    retrainer.request("scheduled")
    held.run_all()
    assert retrainer.collect(db) is None and registry.needs_bootstrap(db.conn)
    assert alerts[0][0] is Severity.WARNING and "bootstrap is off" in alerts[0][3]
