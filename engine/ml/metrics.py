"""Classification metrics over predicted probabilities, as plain JSON-ready dicts.

Written out rather than taken from scikit-learn so a fold that lacks a class gives
a defined value (NaN for AUC of an absent class, skipped in the macro average)
instead of a warning, and so binary and multiclass share one shape:
`proba` is always (n, k), `y` holds class indices 0..k-1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EPS = 1e-15
CALIBRATION_BINS = 10


def _binary_auc(positive: npt.NDArray[np.bool_], score: FloatArray) -> float:
    """Mann-Whitney AUC with tied scores counted half."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    import pandas as pd  # evaluation only, off the engine's start path

    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(y: IntArray, proba: FloatArray) -> float:
    """Binary AUC, or the macro one-vs-rest AUC over classes present in y."""
    k = proba.shape[1]
    if k == 2:
        return _binary_auc(y == 1, proba[:, 1])
    scores = [_binary_auc(y == c, proba[:, c]) for c in range(k)]
    present = [s for s in scores if not math.isnan(s)]
    return float(np.mean(present)) if present else math.nan


def balanced_accuracy(y: IntArray, predicted: IntArray) -> float:
    recalls = [float(np.mean(predicted[y == c] == c)) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else math.nan


def brier(y: IntArray, proba: FloatArray) -> float:
    """Binary: mean (p - y)^2 of the positive class; multiclass: summed over classes."""
    if proba.shape[1] == 2:
        return float(np.mean((proba[:, 1] - (y == 1)) ** 2))
    onehot = np.eye(proba.shape[1])[y]
    return float(np.mean(((proba - onehot) ** 2).sum(axis=1)))


def log_loss(y: IntArray, proba: FloatArray) -> float:
    p = np.clip(proba[np.arange(len(y)), y], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def calibration(
    y: IntArray, proba: FloatArray, bins: int = CALIBRATION_BINS
) -> list[dict[str, Any]]:
    """Reliability bins: binary on p(positive), multiclass on top-class confidence."""
    if proba.shape[1] == 2:
        score, hit = proba[:, 1], (y == 1)
    else:
        score, hit = proba.max(axis=1), proba.argmax(axis=1) == y
    which = np.minimum((score * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        out.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "count": n,
                "mean_predicted": float(score[mask].mean()) if n else None,
                "observed": float(hit[mask].mean()) if n else None,
            }
        )
    return out


def classification_metrics(y: IntArray, proba: FloatArray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        nan = math.nan
        return {
            "n": 0,
            "accuracy": nan,
            "balanced_accuracy": nan,
            "log_loss": nan,
            "auc": nan,
            "brier": nan,
        }
    predicted = proba.argmax(axis=1)
    return {
        "n": len(y),
        "accuracy": float(np.mean(predicted == y)),
        "balanced_accuracy": balanced_accuracy(y, predicted),
        "log_loss": log_loss(y, proba),
        "auc": auc(y, proba),
        "brier": brier(y, proba),
    }


def label_metrics(y: IntArray, predicted: IntArray) -> dict[str, float]:
    """For baselines that give a label, not probabilities (the regime rules)."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return {"n": 0, "accuracy": math.nan, "balanced_accuracy": math.nan}
    return {
        "n": len(y),
        "accuracy": float(np.mean(predicted == y)),
        "balanced_accuracy": balanced_accuracy(y, predicted),
    }


def majority_proba(y_train: IntArray, n_test: int, k: int) -> FloatArray:
    """The majority baseline as probabilities: the training class frequencies."""
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=k).astype(np.float64)
    freq = counts / counts.sum() if counts.sum() else np.full(k, 1.0 / k)
    return np.tile(freq, (n_test, 1))


def jsonable(value: Any) -> Any:
    """NaN and infinities become None, numpy scalars plain numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def training_accuracy(model_metrics: Mapping[str, Any]) -> float:
    """The walk-forward direction accuracy a live model is held against."""
    value = model_metrics.get("direction", {}).get("overall", {}).get("accuracy")
    return float(value) if value is not None else math.nan
