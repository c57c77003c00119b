"""The live model's health: feature and prediction drift against the champion's
training reference, live accuracy against training accuracy, and the shadow advice
on the challenger. Every measurement is a `drift` row; a breach raises an alert
(deduplicated per kind)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database

from engine.config import MlSettings
from engine.domain import Severity
from engine.ml.drift import (
    DriftResult,
    accuracy_decay,
    feature_drift,
    prediction_drift,
    thresholds,
)
from engine.ml.features import FEATURES
from engine.ml.predictions import Role
from engine.ml.registry import transaction
from engine.ml.shadow import PairSums, PromotionAdvice, advice_from_sums
from store import models as stored

if TYPE_CHECKING:
    from engine.ml.service import Prediction, Runner

FloatArray = npt.NDArray[np.float64]
AlertFn = Callable[[Severity, str, str, str, str | None], object]

SOURCE = "ml"


@dataclass(frozen=True, slots=True)
class HealthReport:
    drift: tuple[DriftResult, ...]
    advice: PromotionAdvice | None
    promoted: str | None  # set when the auto-promotion policy acted


class DriftWatch:
    """The champion's last `drift_window` feature rows and p(up), and what they say."""

    def __init__(self, db: Database, settings: MlSettings, alert: AlertFn) -> None:
        self._db = db
        self.settings = settings
        self._alert = alert
        self._features: deque[FloatArray] = deque(maxlen=settings.drift_window)
        self._probas: deque[float] = deque(maxlen=settings.drift_window)

    def observe(self, x: FloatArray, predictions: Sequence[Prediction]) -> None:
        self._features.extend(x)
        self._probas.extend(p.proba_up for p in predictions)

    def new_champion(self) -> None:
        """Another model predicts now: its p(up) is not comparable with the last one's."""
        self._probas.clear()

    def measure(self, champ: Runner) -> list[DriftResult]:
        s = self.settings
        results: list[DriftResult] = []
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
                    live, n, champ.training_accuracy, max_drop=s.accuracy_decay,
                    min_samples=s.min_scored,
                )
            )  # fmt: skip
        return results

    def record(self, now: int, version: str | None, results: list[DriftResult]) -> None:
        """Store every measurement and alert on the breaches."""
        rows = [
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
        ]
        with transaction(self._db.conn):
            stored.insert_drift(self._db.conn, rows)
        self._raise_alerts(version, results)

    def _raise_alerts(self, version: str | None, results: list[DriftResult]) -> None:
        by_kind: dict[str, list[DriftResult]] = {}
        for r in results:
            if r.severity is not None:
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
        accuracy, n = stored.recent_accuracy(
            self._db.conn, version, Role.CHAMPION, self.settings.drift_window
        )
        return (float(accuracy) if n and accuracy is not None else math.nan), n

    def advice(self, champ: Runner | None, chall: Runner | None) -> PromotionAdvice | None:
        """Shadow comparison of the challenger with the champion on the same bars."""
        if champ is None or chall is None:
            return None
        sums = PairSums(*stored.shadow_sums(self._db.conn, champ.version, chall.version))
        return advice_from_sums(
            champ.version,
            chall.version,
            sums,
            min_samples=self.settings.min_scored,
            horizon_bars=self.settings.horizon_bars,
        )
