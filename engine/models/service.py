"""The model in the live cycle: verified loading, fast prediction, shadowing, scoring, drift.

What the cycle calls (all on the trading thread, through the engine's writer):

    service = ModelService(db, settings.ml, artifacts_dir, alerts.raise_, bar_ms=...)
    # once per cycle, cheap: picks up promote/rollback/retire/new challenger
    service.sync()
    # per symbol, after the indicators:
    row = live_features[symbol].update(bar, snap)
    prediction = service.predict(bar.symbol, row)     # None: rules only
    call = regime.combine(rules_call, prediction.regime_call, settings.ml.override_confidence)
    service.record(bar, prediction)                   # champion + shadow rows, no commit
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
import math
import sqlite3
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database

from engine.config import MlSettings
from engine.domain import Bar, Regime, Severity
from engine.models import registry
from engine.models.artifact import ArtifactError, LoadedModel, load_artifact
from engine.models.drift import (
    DriftResult,
    Reference,
    accuracy_decay,
    feature_drift,
    prediction_drift,
    thresholds,
)
from engine.models.features import FEATURES, N_FEATURES
from engine.models.registry import ModelRecord, transaction
from engine.models.schema import apply_migrations
from engine.models.shadow import PromotionAdvice, promotion_advice
from engine.models.train import training_accuracy
from engine.regime import RegimeCall, Source
from state.db import now_ms

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
AlertFn = Callable[[Severity, str, str, str, str | None], object]

SOURCE = "ml"


class Role:
    CHAMPION = "champion"
    CHALLENGER = "challenger"


@dataclass(frozen=True, slots=True)
class Prediction:
    proba_up: float  # p(close higher after horizon_bars)
    regime_call: RegimeCall | None  # None when the model has no regime head
    version: str
    shadow: Prediction | None = None  # the challenger's view; recorded, never traded


@dataclass(frozen=True, slots=True)
class HealthReport:
    drift: tuple[DriftResult, ...]
    advice: PromotionAdvice | None
    promoted: str | None  # set when the auto-promotion policy acted


class _Runner:
    """A verified model with the per-row predict path (numpy in, Booster directly)."""

    __slots__ = (
        "classes",
        "model",
        "natural",
        "prediction_natural",
        "reference",
        "training_accuracy",
        "version",
    )

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.version = model.version
        self.classes = tuple(Regime(c) for c in model.regime_classes)
        ref = model.sidecar.get("drift_reference", {})
        self.reference = {
            name: Reference.from_json(data) for name, data in ref.get("features", {}).items()
        }
        self.natural: dict[str, float] = ref.get("natural", {})
        self.prediction_natural: float | None = ref.get("prediction_natural")
        self.training_accuracy = training_accuracy(model.sidecar.get("metrics", {}))

    def prediction_reference(self) -> Reference | None:
        data = self.model.sidecar.get("drift_reference", {}).get("prediction")
        return Reference.from_json(data) if data else None

    def predict(self, x: FloatArray) -> Prediction:
        p_up = float(self.model.direction.predict(x, num_threads=1)[0])
        call = None
        if self.model.regime is not None:
            probs = self.model.regime.predict(x, num_threads=1)[0]
            best = int(np.argmax(probs))
            regime = self.classes[best]
            call = RegimeCall(
                regime,
                float(probs[best]),
                Source.ML,
                self.version,
                {f"p_{c.value}": float(p) for c, p in zip(self.classes, probs, strict=True)},
                f"model {self.version}: {regime.value} p={float(probs[best]):.2f}",
            )
        return Prediction(p_up, call, self.version)


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
    ) -> None:
        self._db = db
        self.settings = settings
        self.artifacts_dir = artifacts_dir
        self._alert = alert
        self.bar_ms = bar_ms
        self._clock = clock
        self._champion: _Runner | None = None
        self._challenger: _Runner | None = None
        self._seen: tuple[tuple[str, str] | None, tuple[str, str] | None] | None = None
        self._features: deque[FloatArray] = deque(maxlen=settings.drift_window)
        self._probas: deque[float] = deque(maxlen=settings.drift_window)
        apply_migrations(db)
        self.sync()

    # ------------------------------------------------------------------ loading

    @property
    def champion_version(self) -> str | None:
        """The version predictions come from (after fallback), or None: rules only."""
        return self._champion.version if self._champion else None

    @property
    def challenger_version(self) -> str | None:
        return self._challenger.version if self._challenger else None

    def sync(self) -> bool:
        """Reload when the registry's champion or challenger changed; True if it did.

        One small query, so the cycle may call it every time.
        """
        conn = self._db.conn
        champ, chall = registry.champion(conn), registry.challenger(conn)
        key = (_identity(champ), _identity(chall))
        if key == self._seen:
            return False
        self._seen = key
        previous = self.champion_version
        self._champion = self._load_champion(conn, champ) if self.settings.enabled else None
        enabled = self.settings.enabled
        self._challenger = self._load(chall, "challenger") if chall and enabled else None
        if self.champion_version != previous:
            self._probas.clear()
        log.info(
            "models in use: champion %s, challenger %s",
            self.champion_version or "none (rules only)",
            self.challenger_version or "none",
        )
        return True

    def _load(self, record: ModelRecord, role: str) -> _Runner | None:
        try:
            model = load_artifact(self._resolve(record.path), record.sha256)
            if model.features != FEATURES:
                raise ArtifactError(
                    f"trained on other features ({len(model.features)}); this engine"
                    f" computes {N_FEATURES}"
                )
            return _Runner(model)
        except (ArtifactError, KeyError, ValueError) as exc:
            self._alert(
                Severity.HIGH,
                SOURCE,
                f"Model {record.version} refused",
                f"the {role}'s artifact failed verification and is not used: {exc}",
                f"ml.refused.{record.version}",
            )
            return None

    def _load_champion(
        self, conn: sqlite3.Connection, record: ModelRecord | None
    ) -> _Runner | None:
        if record is None:
            return None
        runner = self._load(record, "champion")
        if runner is not None:
            return runner
        for version in registry.champion_lineage(conn, record.version):
            earlier = registry.get(conn, version)
            runner = self._load(earlier, "previous champion") if earlier else None
            if runner is not None:
                self._alert(
                    Severity.HIGH,
                    SOURCE,
                    "Trading on the previous champion",
                    f"champion {record.version} was refused; predictions come from {version}"
                    " until the operator promotes or rolls back",
                    "ml.fallback",
                )
                return runner
        self._alert(
            Severity.HIGH,
            SOURCE,
            "No usable model: rules only",
            f"champion {record.version} was refused and no earlier champion verified;"
            " the regime rules trade alone",
            "ml.fallback",
        )
        return None

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.artifacts_dir / p

    # ------------------------------------------------------------------ live

    def predict(self, symbol: str, features_row: FloatArray) -> Prediction | None:
        """The champion's view of one symbol's latest bar, with the challenger's as shadow.

        None without a verified champion or while the row is not warm (NaN): the
        cycle then trades on the rules alone.
        """
        champ = self._champion
        if champ is None:
            return None
        x = np.asarray(features_row, dtype=np.float64).reshape(1, N_FEATURES)
        if not np.isfinite(x).all():
            return None
        prediction = champ.predict(x)
        if self._challenger is not None:
            shadow = self._challenger.predict(x)
            prediction = Prediction(
                prediction.proba_up, prediction.regime_call, prediction.version, shadow
            )
        self._features.append(x[0])
        self._probas.append(prediction.proba_up)
        return prediction

    def record(self, bar: Bar, prediction: Prediction | None) -> None:
        """Store the champion's prediction and the shadow's, to be scored after the horizon
        (`horizon_bars` bars of `bar_ms` after the bar). Nothing for None (rules only).

        Joins the caller's open transaction (the cycle commits); commits on its own
        only when called outside one.
        """
        if prediction is None:
            return
        horizon_ts = bar.ts + self.settings.horizon_bars * self.bar_ms
        truth = bar.true_regime.value if bar.true_regime else None
        rows = [(Role.CHAMPION, prediction)]
        if prediction.shadow is not None:
            rows.append((Role.CHALLENGER, prediction.shadow))
        with transaction(self._db.conn):
            self._db.conn.executemany(
                "INSERT INTO predictions (ts, symbol, model_version, role, proba, regime,"
                " regime_confidence, true_regime, ref_price, horizon_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        bar.ts,
                        bar.symbol,
                        p.version,
                        role,
                        p.proba_up,
                        p.regime_call.regime.value if p.regime_call else None,
                        p.regime_call.confidence if p.regime_call else None,
                        truth,
                        bar.close,
                        horizon_ts,
                    )
                    for role, p in rows
                ],
            )

    def score_due(self, now: int, prices: Mapping[str, float]) -> int:
        """Score every prediction whose horizon has passed, for symbols with a price now."""
        scored = 0
        with transaction(self._db.conn):
            for symbol, price in prices.items():
                if not (math.isfinite(price) and price > 0):
                    continue
                cur = self._db.conn.execute(
                    "UPDATE predictions SET outcome = (? > ref_price), exit_price = ?,"
                    " scored_at = ? WHERE scored_at IS NULL AND horizon_ts <= ? AND symbol = ?",
                    (price, price, now, now, symbol),
                )
                scored += cur.rowcount
        return scored

    # ------------------------------------------------------------------ health

    def check_drift(self, now: int) -> HealthReport:
        """Feature and prediction PSI, live accuracy against training, shadow advice.

        Every measurement is a `drift` row; a breach raises an alert (deduplicated
        per kind). With `auto_promote` on, a challenger the advice favours is promoted.
        """
        champ = self._champion
        results: list[DriftResult] = []
        s = self.settings
        if champ is not None:
            # Only a full window: the natural PSI the thresholds rest on was measured on
            # stretches of exactly this many rows, and a short window reads as drift.
            if len(self._features) == s.drift_window:
                limits = {
                    name: thresholds(champ.natural.get(name), s.psi_warning, s.psi_alert)
                    for name in FEATURES
                }
                rows = np.vstack(self._features)
                results += feature_drift(champ.reference, FEATURES, rows, limits)
            ref = champ.prediction_reference()
            if ref is not None and len(self._probas) == s.drift_window:
                limit = thresholds(champ.prediction_natural, s.psi_warning, s.psi_alert)
                probas = np.fromiter(self._probas, dtype=np.float64)
                results.append(prediction_drift(ref, probas, limit))
            live, n = self.live_accuracy(champ.version)
            if n:
                results.append(
                    accuracy_decay(
                        live,
                        n,
                        champ.training_accuracy,
                        max_drop=s.accuracy_decay,
                        min_samples=s.min_scored,
                    )
                )
        version = champ.version if champ else None
        with transaction(self._db.conn):
            self._db.conn.executemany(
                "INSERT INTO drift (ts, model_version, kind, name, value, threshold, severity,"
                " n, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        now,
                        version,
                        r.kind.value,
                        r.name,
                        r.value if math.isfinite(r.value) else None,
                        r.threshold,
                        r.severity.value if r.severity else None,
                        r.n,
                        r.detail,
                    )
                    for r in results
                ],
            )
        self._raise_drift_alerts(version, results)
        advice = self.advice()
        promoted = None
        if advice is not None and advice.promote and s.auto_promote:
            message = registry.promote(
                self._db,
                advice.challenger,
                now=now,
                actor="auto-promote",
                reason=advice.message,
            )
            self._alert(Severity.WARNING, SOURCE, "Challenger promoted", message, None)
            promoted = advice.challenger
            self.sync()
        return HealthReport(tuple(results), advice, promoted)

    def _raise_drift_alerts(self, version: str | None, results: list[DriftResult]) -> None:
        flagged = [r for r in results if r.severity is not None]
        by_kind: dict[str, list[DriftResult]] = {}
        for r in flagged:
            by_kind.setdefault(r.kind.value, []).append(r)
        for kind, items in by_kind.items():
            worst = max((r.severity for r in items if r.severity), key=lambda v: v.rank)
            detail = ", ".join(
                r.detail or f"{r.name} {r.value:.3f}" for r in sorted(items, key=lambda r: -r.value)
            )
            self._alert(
                worst,
                SOURCE,
                f"Model drift: {kind.replace('_', ' ')}",
                f"model {version}: {detail}",
                f"ml.drift.{kind}",
            )

    def live_accuracy(self, version: str) -> tuple[float, int]:
        """Accuracy of the version's latest scored champion predictions (drift_window)."""
        row = self._db.conn.execute(
            "SELECT AVG((proba >= 0.5) = outcome), COUNT(*) FROM (SELECT proba, outcome"
            " FROM predictions WHERE model_version = ? AND role = ? AND scored_at IS NOT NULL"
            " ORDER BY id DESC LIMIT ?)",
            (version, Role.CHAMPION, self.settings.drift_window),
        ).fetchone()
        n = int(row[1] or 0)
        return (float(row[0]) if n else math.nan), n

    def advice(self) -> PromotionAdvice | None:
        """Shadow comparison of the challenger with the champion on the same bars."""
        champ, chall = self._champion, self._challenger
        if champ is None or chall is None:
            return None
        pairs = self._db.conn.execute(
            "SELECT a.proba, b.proba, a.outcome FROM predictions a JOIN predictions b"
            " ON a.symbol = b.symbol AND a.ts = b.ts"
            " WHERE a.model_version = ? AND a.role = ? AND b.model_version = ? AND b.role = ?"
            " AND a.scored_at IS NOT NULL",
            (champ.version, Role.CHAMPION, chall.version, Role.CHALLENGER),
        ).fetchall()
        arr = np.array(pairs, dtype=np.float64).reshape(-1, 3)
        return promotion_advice(
            champ.version,
            chall.version,
            arr[:, 0],
            arr[:, 1],
            arr[:, 2],
            min_samples=self.settings.min_scored,
            horizon_bars=self.settings.horizon_bars,
        )

    def handle_command(self, kind: str, args: Mapping[str, object], actor: str = "operator") -> str:
        """registry.handle_command, then reload so the next cycle uses the new champion."""
        result = registry.handle_command(self._db, kind, args, now=self._clock(), actor=actor)
        self.sync()
        return result


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
