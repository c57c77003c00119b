"""The model in the live cycle: verified loading, fast prediction, shadowing, scoring, drift.

What the cycle calls (all on the trading thread, through the engine's writer):

    service = ModelService(db, settings.ml, artifacts_dir, alerts.raise_, bar_ms=...)
    # once per cycle: installs a finished load; reads the registry once a second
    service.poll()
    # after a command changed the registry: read it now
    service.sync()
    # once per cycle, after the indicators (one model call per head for all symbols):
    rows = {symbol: live_features[symbol].update(bar, snap), ...}
    predictions = service.predict_batch(rows)         # a symbol missing: rules only
    call = regime.combine(rules_call, predictions[symbol].regime_call, override_confidence)
    service.record_batch(bars, predictions, rows)     # champion rows; shadow on its thread
    # once per cycle, with the closes of this cycle:
    service.score_due(now, {symbol: close})
    # every few minutes:
    service.check_drift(now)                          # drift, decay, shadow advice

A champion whose files do not match the registry's hashes is refused with a HIGH
alert; the service falls back to the champion before it, and so on, then to rules
only (predict returns None). It never predicts with a model it has not verified.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database

from engine.config import MlSettings
from engine.decide.regime import RegimeCall, Source
from engine.domain import Bar, Regime, Severity
from engine.ml import registry
from engine.ml.artifact import ArtifactError, LoadedModel, load_artifact
from engine.ml.drift import Reference
from engine.ml.features import FEATURES, N_FEATURES
from engine.ml.health import SOURCE, AlertFn, DriftWatch, HealthReport
from engine.ml.metrics import training_accuracy
from engine.ml.predictions import PredictionLog
from engine.ml.registry import ModelRecord
from engine.ml.shadow import PromotionAdvice
from store.db import now_ms

if TYPE_CHECKING:
    import lightgbm as lgb  # imported by the artifact loader, off the start-up path

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

# How often the cycle's `poll` reads the registry. Commands that change it call
# `sync` at once; this bounds how late a change made by another process is seen.
SYNC_EVERY_MS = 1_000


@dataclass(frozen=True, slots=True)
class Prediction:
    proba_up: float  # p(close higher after horizon_bars)
    regime_call: RegimeCall | None  # None when the model has no regime head
    version: str
    shadow: Prediction | None = None  # the challenger's view; recorded, never traded


class CycleModel(Protocol):
    """What the Trader's cycle and monitor ask of a model: `ModelService` live,
    `engine.backtest.model.BatchModel` in a backtest."""

    @property
    def loading(self) -> bool: ...

    def sync(self) -> bool: ...

    def poll(self) -> bool: ...

    def predict_batch(self, rows: Mapping[str, FloatArray]) -> dict[str, Prediction]: ...

    def record_batch(
        self,
        bars: Sequence[Bar],
        predictions: Mapping[str, Prediction],
        rows: Mapping[str, FloatArray],
    ) -> None: ...

    def start_shadow(self) -> None: ...

    def score_due(self, now: int, prices: Mapping[str, float]) -> int: ...

    def check_drift(self, now: int) -> object: ...

    def close(self) -> None: ...


# Below this many rows a second thread costs more in hand-over than it saves.
SPLIT_ROWS = 32


def core_to_spare() -> bool:
    """Whether a second core is likely free: the 1-minute load average is at least half
    a core below the CPU count. On a full machine the second half waits for a core and
    the hand-over costs more than it saves (100 rows under load 3 on 2 cores: p50 5.2
    ms on one thread, 6.8 ms split)."""
    return os.getloadavg()[0] < (os.cpu_count() or 1) - 0.5


class Runner:
    """A verified model with the per-row predict path (numpy in, Booster directly).

    With a `split` executor, a batch of at least SPLIT_ROWS rows is predicted in two
    halves at once while `spare()` says a core is free: the first on `split`'s thread
    with boosters of its own (LightGBM releases the GIL while it walks the trees), the
    second on the caller's. Each row's prediction depends on that row alone, so the
    halves equal the whole. The copies are made on `split`'s thread at the first large
    batch (a few hundred ms of parsing the loader need not pay); until they are
    ready, batches stay on the caller's thread."""

    __slots__ = (
        "_keys",
        "_spare",
        "_split",
        "_twin",
        "_twin_made",
        "classes",
        "model",
        "natural",
        "prediction_natural",
        "reference",
        "training_accuracy",
        "version",
    )

    def __init__(
        self,
        model: LoadedModel,
        split: Executor | None = None,
        spare: Callable[[], bool] = core_to_spare,
    ) -> None:
        self.model = model
        self.version = model.version
        self.classes = tuple(Regime(c) for c in model.regime_classes)
        self._keys = tuple(f"p_{c.value}" for c in self.classes)
        ref = model.sidecar.get("drift_reference", {})
        self.reference = {
            name: Reference.from_json(data) for name, data in ref.get("features", {}).items()
        }
        self.natural: dict[str, float] = ref.get("natural", {})
        self.prediction_natural: float | None = ref.get("prediction_natural")
        self.training_accuracy = training_accuracy(model.sidecar.get("metrics", {}))
        self._split = split
        self._spare = spare
        self._twin: tuple[lgb.Booster, lgb.Booster | None] | None = None
        self._twin_made: Future[tuple[lgb.Booster, lgb.Booster | None]] | None = None

    def prediction_reference(self) -> Reference | None:
        data = self.model.sidecar.get("drift_reference", {}).get("prediction")
        return Reference.from_json(data) if data else None

    def predict(self, x: FloatArray) -> Prediction:
        return self.predict_batch(x)[0]

    def predict_batch(self, x: FloatArray) -> list[Prediction]:
        """One Booster call per head for every row of `x` (n x N_FEATURES), then the
        rows as Predictions, read out of the arrays once rather than element by element."""
        p_up, probs = self.probabilities(x)
        ups = p_up.tolist()
        if probs is None:
            return [Prediction(up, None, self.version) for up in ups]
        best = probs.argmax(axis=1).tolist()
        return [
            Prediction(up, self._call(row, b), self.version)
            for up, row, b in zip(ups, probs.tolist(), best, strict=True)
        ]

    def probabilities(self, x: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        """p(up) per row, and the regime head's class probabilities (None without one)."""
        split = self._split
        if split is None or len(x) < SPLIT_ROWS or not self._spare():
            return _heads(self.model.direction, self.model.regime, x)
        twin = self._twin or self._made_twin(split)
        if twin is None:
            return _heads(self.model.direction, self.model.regime, x)
        half = len(x) // 2
        first = split.submit(_heads, *twin, x[:half])
        up, probs = _heads(self.model.direction, self.model.regime, x[half:])
        first_up, first_probs = first.result()
        both_up = np.concatenate([first_up, up])
        if probs is None or first_probs is None:
            return both_up, None
        return both_up, np.concatenate([first_probs, probs])

    def _made_twin(self, split: Executor) -> tuple[lgb.Booster, lgb.Booster | None] | None:
        """The split thread's boosters once made; the first call starts making them."""
        if self._twin_made is None:
            direction, regime = self.model.direction, self.model.regime
            self._twin_made = split.submit(
                lambda: (_copy(direction), None if regime is None else _copy(regime))
            )
        if self._twin_made.done():
            self._twin = self._twin_made.result()
        return self._twin

    def prediction(self, p_up: FloatArray, probs: FloatArray | None, i: int) -> Prediction:
        """Row `i` of `probabilities` as the cycle's Prediction."""
        if probs is None:
            return Prediction(float(p_up[i]), None, self.version)
        return Prediction(
            float(p_up[i]), self._call(probs[i].tolist(), int(np.argmax(probs[i]))), self.version
        )

    def _call(self, probs: list[float], best: int) -> RegimeCall:
        regime = self.classes[best]
        return RegimeCall(
            regime,
            probs[best],
            Source.ML,
            self.version,
            dict(zip(self._keys, probs, strict=True)),
            f"model {self.version}: {regime.value} p={probs[best]:.2f}",
        )


def _heads(
    direction: lgb.Booster, regime: lgb.Booster | None, x: FloatArray
) -> tuple[FloatArray, FloatArray | None]:
    p_up = np.asarray(direction.predict(x, num_threads=1), dtype=np.float64)
    if regime is None:
        return p_up, None
    return p_up, np.asarray(regime.predict(x, num_threads=1), dtype=np.float64)


def _copy(booster: lgb.Booster) -> lgb.Booster:
    """A booster of its own for the split's thread: nothing is shared between the two."""
    return type(booster)(model_str=booster.model_to_string())


@dataclass(frozen=True, slots=True)
class _Wanted:
    champions: tuple[ModelRecord, ...]  # the champion, then its fallbacks in order
    challenger: ModelRecord | None


@dataclass(frozen=True, slots=True)
class _Loaded:
    wanted: _Wanted
    champion: Runner | None
    challenger: Runner | None
    refused: tuple[tuple[ModelRecord, str], ...]


class ModelService:
    def __init__(
        self,
        db: Database,
        settings: MlSettings,
        artifacts_dir: Path,
        alert: AlertFn,
        *,
        bar_ms: int = 60_000,
        clock: Callable[[], int] = now_ms,
        loader: Executor | None = None,
        sync_every_ms: int = SYNC_EVERY_MS,
    ) -> None:
        self._db = db
        self.settings = settings
        self.artifacts_dir = artifacts_dir
        self._alert = alert
        self.bar_ms = bar_ms
        self._clock = clock
        self.sync_every_ms = sync_every_ms
        self._read_at: int | None = None  # the clock when `sync` last read the registry
        self._champion: Runner | None = None
        self._challenger: Runner | None = None
        self._seen: tuple[tuple[str, str] | None, tuple[str, str] | None] | None = None
        self._drift = DriftWatch(db, settings, alert)
        self._log = PredictionLog(db, settings.horizon_bars * bar_ms)
        # The champion's second thread (Runner's split); no thread until its first batch.
        self._split = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        # The engine loads on its own thread so its first cycle does not wait for LightGBM;
        # without a loader (tools, tests) loading happens inside `sync`.
        self._loader = loader
        self._pending: Future[_Loaded] | None = None
        self.sync()

    # ------------------------------------------------------------------ loading

    @property
    def champion_version(self) -> str | None:
        """The version predictions come from (after fallback), or None: rules only."""
        return self._champion.version if self._champion else None

    @property
    def challenger_version(self) -> str | None:
        return self._challenger.version if self._challenger else None

    @property
    def loading(self) -> bool:
        """True while the first champion is still being loaded in the background: the
        cycle manages exits but opens nothing until the model it trades on is there."""
        return self._pending is not None and self._champion is None

    def poll(self) -> bool:
        """The cycle's `sync`, paced: a finished background load is installed at once,
        but the registry is read only when `sync_every_ms` of the clock has passed
        since the last read (two queries and five JSON columns per record: not worth
        paying every cycle for a change that comes a few times a day)."""
        if self._pending is None and self._read_at is not None:
            elapsed = self._clock() - self._read_at
            if 0 <= elapsed < self.sync_every_ms:
                return False
        return self.sync()

    def sync(self) -> bool:
        """Pick up a promotion, rollback, retirement or new challenger now; True if the
        models in use changed.

        Loading (file reads,
        hash checks, LightGBM parsing) runs on the loader thread when the service was
        built with `background=True`; the models in use change at the first `sync`
        after it finishes. Alerts and registry reads stay on the caller's thread.
        """
        conn = self._db.conn
        if self._pending is not None:
            if not self._pending.done():
                return False
            loaded, self._pending = self._pending.result(), None
            return self._install(loaded)
        self._read_at = self._clock()
        champ, chall = registry.champion(conn), registry.challenger(conn)
        key = (_identity(champ), _identity(chall))
        if key == self._seen:
            return False
        self._seen = key
        enabled = self.settings.enabled
        wanted = _Wanted(
            _champion_candidates(conn, champ) if enabled else (),
            chall if chall and enabled else None,
        )
        if self._loader is None:
            return self._install(self._load_wanted(wanted))
        self._pending = self._loader.submit(self._load_wanted, wanted)
        return False

    def wait_loaded(self, timeout: float) -> None:
        """Block until a background load has finished and is in use (tests, tools)."""
        if self._pending is not None:
            self._pending.result(timeout)
            self.sync()

    def _load_wanted(self, wanted: _Wanted) -> _Loaded:
        """Thread-safe: reads files only. The first candidate that verifies wins."""
        refused: list[tuple[ModelRecord, str]] = []
        champion = None
        for record in wanted.champions:
            champion, error = self._try_load(record, self._split)
            if champion is not None:
                break
            refused.append((record, error))
        challenger, error = self._try_load(wanted.challenger) if wanted.challenger else (None, "")
        if wanted.challenger and challenger is None:
            refused.append((wanted.challenger, error))
        return _Loaded(wanted, champion, challenger, tuple(refused))

    def _try_load(
        self, record: ModelRecord, split: Executor | None = None
    ) -> tuple[Runner | None, str]:
        try:
            model = load_artifact(self._resolve(record.path), record.sha256)
            if model.features != FEATURES:
                raise ArtifactError(
                    f"trained on other features ({len(model.features)}); this engine"
                    f" computes {N_FEATURES}"
                )
            return Runner(model, split), ""
        except (ArtifactError, KeyError, ValueError) as exc:
            return None, str(exc)

    def _install(self, loaded: _Loaded) -> bool:
        previous = (self.champion_version, self.challenger_version)
        self._champion, self._challenger = loaded.champion, loaded.challenger
        for alert in _refusal_alerts(loaded):
            self._alert(*alert)
        if self.champion_version != previous[0]:
            self._drift.new_champion()
        log.info(
            "models in use: champion %s, challenger %s",
            self.champion_version or "none (rules only)",
            self.challenger_version or "none",
        )
        return (self.champion_version, self.challenger_version) != previous

    def _resolve(self, path: str) -> Path:
        return registry.artifact_path(self._db.conn, path)

    # ------------------------------------------------------------------ live

    def predict(self, symbol: str, features_row: FloatArray) -> Prediction | None:
        """One symbol's prediction with the challenger's attached as `shadow`, at once.

        For tools and tests that look at one row; the cycle uses `predict_batch`.
        None without a verified champion or while the row is not warm (NaN).
        """
        row = np.asarray(features_row, dtype=np.float64).reshape(N_FEATURES)
        prediction = self.predict_batch({symbol: row}).get(symbol)
        if prediction is None or self._challenger is None:
            return prediction
        return replace(prediction, shadow=self._challenger.predict(row.reshape(1, N_FEATURES)))

    def predict_batch(self, rows: Mapping[str, FloatArray]) -> dict[str, Prediction]:
        """The champion's view of every symbol's latest bar, one model call per head.

        Symbols whose row is not warm (NaN) are left out: the cycle trades them on the
        rules alone. The challenger is not consulted here; `record_batch` hands it
        the same rows on a worker thread, off the cycle's path.
        """
        champ = self._champion
        ready = [s for s, row in rows.items() if np.isfinite(row).all()]
        if champ is None or not ready:
            return {}
        x = np.vstack([rows[s] for s in ready]).astype(np.float64, copy=False)
        predictions = champ.predict_batch(x)
        self._drift.observe(x, predictions)
        return dict(zip(ready, predictions, strict=True))

    def record_batch(
        self,
        bars: Sequence[Bar],
        predictions: Mapping[str, Prediction],
        rows: Mapping[str, FloatArray],
    ) -> None:
        """Store the champion's predictions for `bars`, queue the challenger's shadow
        predictions of the same rows for the shadow thread (`start_shadow`), and store
        the shadow rows that finished since the last call. Joins the caller's open
        transaction."""
        self._log.record_batch(bars, predictions, rows, self._challenger)

    def start_shadow(self) -> None:
        """Hand the queued shadow predictions to the shadow thread: the cycle calls this
        once it has committed, so the shadow runs between cycles, not beside one."""
        self._log.start_shadow()

    def record(self, bar: Bar, prediction: Prediction | None) -> None:
        """Store the champion's prediction and the shadow's, to be scored after the horizon
        (`horizon_bars` bars of `bar_ms` after the bar). Nothing for None (rules only).

        Joins the caller's open transaction (the cycle commits); commits on its own
        only when called outside one.
        """
        if prediction is not None:
            self._log.record(bar, prediction)

    def close(self) -> None:
        """Wait for the shadow thread and store what it finished; the writer is still open."""
        self._log.close()
        self._split.shutdown(wait=True)

    def score_due(self, now: int, prices: Mapping[str, float]) -> int:
        """Score every prediction whose horizon has passed, for symbols with a price now."""
        return self._log.score_due(now, prices)

    # ------------------------------------------------------------------ health

    def check_drift(self, now: int) -> HealthReport:
        """Feature and prediction PSI, live accuracy against training, shadow advice.

        Every measurement is a `drift` row; a breach raises an alert (deduplicated
        per kind). With `auto_promote` on, a challenger the advice favours is promoted.
        """
        champ = self._champion
        results = self._drift.measure(champ) if champ is not None else []
        self._drift.record(now, champ.version if champ else None, results)
        advice = self.advice()
        promoted = None
        if advice is not None and advice.promote and self.settings.auto_promote:
            message = registry.promote(
                self._db, advice.challenger, now=now, actor="auto-promote", reason=advice.message
            )
            self._alert(Severity.WARNING, SOURCE, "Challenger promoted", message, None)
            promoted = advice.challenger
            self.sync()
        return HealthReport(tuple(results), advice, promoted)

    def live_accuracy(self, version: str) -> tuple[float, int]:
        """Accuracy of the version's latest scored champion predictions (drift_window)."""
        return self._drift.live_accuracy(version)

    def advice(self) -> PromotionAdvice | None:
        """Shadow comparison of the challenger with the champion on the same bars."""
        return self._drift.advice(self._champion, self._challenger)

    def handle_command(self, kind: str, args: Mapping[str, object], actor: str = "operator") -> str:
        """registry.handle_command, then reload so the next cycle uses the new champion."""
        result = registry.handle_command(self._db, kind, args, now=self._clock(), actor=actor)
        self.sync()
        return result


def _champion_candidates(
    conn: sqlite3.Connection, record: ModelRecord | None
) -> tuple[ModelRecord, ...]:
    """The champion, then the champions before it: the fallback order."""
    if record is None:
        return ()
    earlier = (registry.get(conn, v) for v in registry.champion_lineage(conn, record.version))
    return (record, *(r for r in earlier if r is not None))


def _refusal_alerts(loaded: _Loaded) -> list[tuple[Severity, str, str, str, str | None]]:
    """What a load's refusals tell the operator: each refused artifact, and which
    model (if any) predictions come from instead."""
    champions = loaded.wanted.champions
    alerts: list[tuple[Severity, str, str, str, str | None]] = []
    for record, error in loaded.refused:
        role = "challenger" if record is loaded.wanted.challenger else "champion"
        if role == "champion" and record is not champions[0]:
            role = "previous champion"
        alerts.append((
            Severity.HIGH,
            SOURCE,
            f"Model {record.version} refused",
            f"the {role}'s artifact failed verification and is not used: {error}",
            f"ml.refused.{record.version}",
        ))  # fmt: skip
    champion = loaded.champion
    if not champions or (champion is not None and champion.version == champions[0].version):
        return alerts
    if champion is not None:
        alerts.append((
            Severity.HIGH,
            SOURCE,
            "Trading on the previous champion",
            f"champion {champions[0].version} was refused; predictions come from"
            f" {champion.version} until the operator promotes or rolls back",
            "ml.fallback",
        ))  # fmt: skip
    else:
        alerts.append((
            Severity.HIGH,
            SOURCE,
            "No usable model: rules only",
            f"champion {champions[0].version} was refused and no earlier champion"
            " verified; the regime rules trade alone",
            "ml.fallback",
        ))  # fmt: skip
    return alerts


def _identity(record: ModelRecord | None) -> tuple[str, str] | None:
    return (record.version, record.sha256) if record else None


def describe(prediction: Prediction | None) -> str:
    """A short line for logs and signal reasons."""
    if prediction is None:
        return "no model"
    parts = [f"p(up)={prediction.proba_up:.2f}"]
    if prediction.regime_call is not None:
        call = prediction.regime_call
        parts.append(f"{call.regime.value} {call.confidence:.2f}")
    return f"{prediction.version}: " + ", ".join(parts)
