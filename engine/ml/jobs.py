"""Retraining off the trading thread, and handing the result back to it.

The runner owns two executors: the trading one (cycle, commands, monitor) and a
separate one for ML. `Retrainer.request` submits `train_model` to the ML executor
(heavy: reads through a read-only connection, writes only the artifact folder);
`Retrainer.collect`, called on the trading thread, registers a finished model with
the engine's single writer. So the writer is never touched off its thread, and a
training run never delays a cycle.

    retrainer = Retrainer(db_path, settings.ml, ml_executor, alerts.raise_)
    scheduler.add_job(retrainer.request, retrain_trigger(settings.ml), args=["scheduled"])
    if settings.ml.bootstrap and registry.needs_bootstrap(db.conn):
        retrainer.request("bootstrap", simulated=True)
    # on the trading thread (command job or cycle), then service.sync():
    retrainer.collect(db)        # -> the version registered, or None
    # the TRAIN command:
    retrainer.request(f"requested by {cmd.requested_by}")
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.triggers.cron import CronTrigger
from sqlite_utils import Database

from engine.config import ConfigError, MlSettings
from engine.domain import Severity
from engine.ml import registry
from engine.ml.artifact import resolve_artifacts_dir
from store.db import now_ms

if TYPE_CHECKING:
    from engine.ml.train import TrainedModel, TrainParams

log = logging.getLogger(__name__)


def _train(
    path: str | Path | None,
    settings: MlSettings,
    *,
    artifacts_dir: Path,
    now: int,
    params: TrainParams | None,
    simulated: bool,
) -> TrainedModel:
    """Runs on the ML executor, so training's imports (pandas, lightgbm) load there and
    never on the engine's start path."""
    from engine.ml.train import TrainParams, train_model

    return train_model(
        path,
        settings,
        artifacts_dir=artifacts_dir,
        now=now,
        params=params or TrainParams(),
        simulated=simulated,
    )


AlertFn = Callable[[Severity, str, str, str, str | None], object]


def retrain_trigger(settings: MlSettings, timezone: str = "UTC") -> CronTrigger:
    """The cron trigger of `ml.retrain_cron`; a bad expression is a configuration error."""
    try:
        return CronTrigger.from_crontab(settings.retrain_cron, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(
            f"ml.retrain_cron = {settings.retrain_cron!r}: {exc}; use five cron fields"
            " (minute hour day month weekday), e.g. '0 3 * * *'"
        ) from None


class Retrainer:
    """One training run at a time on the ML executor; results collected by the writer."""

    def __init__(
        self,
        path: str | Path | None,
        settings: MlSettings,
        executor: Executor,
        alert: AlertFn,
        *,
        artifacts_dir: Path | None = None,
        params: TrainParams | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._path = path
        self._settings = settings
        self._executor = executor
        self._alert = alert
        self._artifacts_dir = artifacts_dir or resolve_artifacts_dir(settings, path)
        self._params = params
        self._clock = clock
        self._lock = threading.Lock()
        self._running: tuple[str, Future[TrainedModel]] | None = None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None and not self._running[1].done()

    def request(self, reason: str, *, simulated: bool = False) -> bool:
        """Start a training run; False (and nothing started) while one is in flight."""
        with self._lock:
            if self._running is not None:
                return False
            log.info("training a model (%s)", reason)
            future = self._executor.submit(
                _train,
                self._path,
                self._settings,
                artifacts_dir=self._artifacts_dir,
                now=self._clock(),
                params=self._params,
                simulated=simulated,
            )
            self._running = (reason, future)
            return True

    def collect(self, db: Database) -> str | None:
        """On the trading thread: register a finished run (champion if there is none,
        else challenger) and return its version; None while running or after a failure."""
        with self._lock:
            if self._running is None or not self._running[1].done():
                return None
            reason, future = self._running
            self._running = None
        try:
            trained = future.result()
        except Exception as exc:  # a failed run must not stop the engine
            log.exception("training (%s) failed", reason)
            self._alert(
                Severity.WARNING, "ml", "Model training failed", f"{reason}: {exc}", "ml.train"
            )
            return None
        actor = "bootstrap" if reason == "bootstrap" else "engine"
        version = registry.adopt(db, trained, now=self._clock(), actor=actor)
        log.info("registered %s (%s)", version, reason)
        return version
