"""Drift: population stability of features and predictions, and live accuracy decay.

The training run stores, per feature, the decile edges of the training values and
the share of rows in each bin (`reference`). Live values are binned with the same
edges and compared with the population stability index

    PSI = sum over bins of (live share - train share) * ln(live share / train share)

A common reading: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a
shift the model was not trained for. Those readings assume a stationary population;
a regime-switching market moves its features between periods by more than that with
nothing new happening (a window that caught one long high-volatility stretch). So the
training run also records each feature's natural PSI: the largest PSI of one
walk-forward test block against the whole training set. A feature is flagged when its
live PSI is above both the setting and a multiple of its natural PSI, i.e. beyond
anything the training history itself showed between periods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.domain import Severity

FloatArray = npt.NDArray[np.float64]

N_BINS = 10
NATURAL_WARNING = 3.0  # live PSI above this multiple of the natural PSI: a warning
NATURAL_ALERT = 6.0  # and above this one: a HIGH alert
# An empty bin would make the log infinite; a floor keeps one empty bin a large but
# finite contribution.
SHARE_FLOOR = 1e-4


class DriftKind(StrEnum):
    FEATURE = "feature_psi"
    PREDICTION = "prediction_psi"
    ACCURACY = "live_accuracy"


@dataclass(frozen=True, slots=True)
class Reference:
    edges: tuple[float, ...]  # interior bin edges, ascending, unique
    shares: tuple[float, ...]  # len(edges) + 1 shares summing to 1

    def as_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "shares": list(self.shares)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Reference:
        return Reference(tuple(data["edges"]), tuple(data["shares"]))


@dataclass(frozen=True, slots=True)
class DriftResult:
    kind: DriftKind
    name: str  # feature name, "proba_up", or "accuracy"
    value: float
    threshold: float
    severity: Severity | None  # None when within bounds
    n: int
    detail: str = ""


def _finite(values: npt.ArrayLike) -> FloatArray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def _shares(x: FloatArray, edges: FloatArray) -> FloatArray:
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    return counts / max(len(x), 1)


def reference(values: npt.ArrayLike, n_bins: int = N_BINS) -> Reference:
    """Quantile bins of the training values; ties collapse, so a bin is never empty there."""
    x = _finite(values)
    if len(x) == 0:
        return Reference((), (1.0,))
    qs = np.quantile(x, np.linspace(0, 1, n_bins + 1)[1:-1])
    edges = np.unique(qs)
    return Reference(tuple(float(e) for e in edges), tuple(float(s) for s in _shares(x, edges)))


def psi(ref: Reference, values: npt.ArrayLike) -> float:
    """Population stability index of `values` against the training reference."""
    x = _finite(values)
    if len(x) == 0:
        return math.nan
    expected = np.maximum(np.asarray(ref.shares, dtype=np.float64), SHARE_FLOOR)
    actual = np.maximum(_shares(x, np.asarray(ref.edges, dtype=np.float64)), SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_severity(value: float, warning: float, alert: float) -> Severity | None:
    if not math.isfinite(value) or value < warning:
        return None
    return Severity.HIGH if value >= alert else Severity.WARNING


@dataclass(frozen=True, slots=True)
class Thresholds:
    warning: float
    alert: float


def thresholds(natural: float | None, warning: float, alert: float) -> Thresholds:
    """The settings' PSI thresholds, raised to multiples of the feature's natural PSI."""
    n = natural if natural is not None and math.isfinite(natural) else 0.0
    return Thresholds(max(warning, NATURAL_WARNING * n), max(alert, NATURAL_ALERT * n))


def feature_drift(
    references: dict[str, Reference],
    names: tuple[str, ...],
    rows: FloatArray,
    limits: dict[str, Thresholds],
) -> list[DriftResult]:
    """PSI per feature of live rows (n, len(names)) against the training references."""
    out = []
    for j, name in enumerate(names):
        ref, limit = references.get(name), limits.get(name)
        if ref is None or limit is None:
            continue
        value = psi(ref, rows[:, j])
        out.append(
            DriftResult(
                DriftKind.FEATURE,
                name,
                value,
                limit.warning,
                psi_severity(value, limit.warning, limit.alert),
                int(np.isfinite(rows[:, j]).sum()),
            )
        )
    return out


def prediction_drift(ref: Reference, probas: FloatArray, limit: Thresholds) -> DriftResult:
    value = psi(ref, probas)
    return DriftResult(
        DriftKind.PREDICTION,
        "proba_up",
        value,
        limit.warning,
        psi_severity(value, limit.warning, limit.alert),
        len(_finite(probas)),
    )


def accuracy_decay(
    live_accuracy: float, n: int, training_accuracy: float, *, max_drop: float, min_samples: int
) -> DriftResult:
    """Live accuracy against the walk-forward accuracy of training; flagged past max_drop."""
    drop = training_accuracy - live_accuracy
    flagged = n >= min_samples and math.isfinite(drop) and drop > max_drop
    return DriftResult(
        DriftKind.ACCURACY,
        "accuracy",
        live_accuracy,
        training_accuracy - max_drop,
        Severity.WARNING if flagged else None,
        n,
        f"live {live_accuracy:.3f} on {n} scored predictions, training {training_accuracy:.3f}",
    )
