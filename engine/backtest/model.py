"""The ML model in a backtest: one verified model, batch-predicted over the whole run.

Live, `ModelService.predict_batch` asks LightGBM once per cycle for the latest
feature row of every symbol. A backtest knows every row in advance
(engine.backtest.precomputed), so `BatchModel` asks once per symbol and head for
all of them, with the live service's own runner (the same Booster call and the
same turning of probabilities into a `Prediction`), and hands the Trader each
bar's prediction where it calls `predict_batch`. The Trader combines it with the
rules and the strategy trades on it exactly as live.

A backtest's model is fixed for the run: there is no registry to follow (`sync`),
nothing is scored or checked for drift, and no challenger shadows it.

The model is the state store's champion (`champion`) or a model's sidecar file
(`path/to/VERSION/model.json`), whose heads are checked against the hashes it lists.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.domain import Bar
from engine.ml import registry
from engine.ml.artifact import SIDECAR, ArtifactError, LoadedModel, load_artifact, sha256_hex
from engine.ml.features import FEATURES, FloatArray
from engine.ml.service import Prediction, Runner

CHAMPION = "champion"


class ModelError(ValueError):
    """The model asked for cannot be used; the message says which and why."""


def load_model(spec: str, db_file: str | Path | None) -> LoadedModel:
    """`champion` (the state store's) or the path of a model's sidecar file."""
    if spec == CHAMPION:
        if db_file is None or not Path(db_file).exists():
            raise ModelError(f"no state store at {db_file} to take the champion from")
        conn = sqlite3.connect(f"{Path(db_file).resolve().as_uri()}?mode=ro", uri=True)
        try:
            record = registry.champion(conn)
            if record is None:
                raise ModelError(f"{db_file} has no champion model; train one or name a file")
            path, sha = registry.artifact_path(conn, record.path), record.sha256
        finally:
            conn.close()
    else:
        path = Path(spec)
        if path.is_dir():
            path = path / SIDECAR
        try:
            sha = sha256_hex(path.read_bytes())
        except OSError as exc:
            raise ModelError(f"model {spec}: {exc.strerror or exc}") from None
    try:
        model = load_artifact(path, sha)
    except ArtifactError as exc:
        raise ModelError(f"model {spec}: {exc}") from None
    if model.features != FEATURES:
        raise ModelError(
            f"model {model.version} was trained on other features ({len(model.features)});"
            f" this engine computes {len(FEATURES)}"
        )
    return model


class Cursor(Protocol):
    """Which precomputed row the Trader was handed last (PrecomputedFeatures)."""

    at: int


class BatchModel:
    """The Trader's model for a backtest (the `CycleModel` surface of ModelService)."""

    loading = False

    def __init__(
        self,
        model: LoadedModel,
        features: Mapping[str, FloatArray],
        cursors: Mapping[str, Cursor],
    ) -> None:
        self.runner = Runner(model)
        self.version = model.version
        self._cursors = cursors
        self._up: dict[str, FloatArray] = {}
        self._regime: dict[str, FloatArray | None] = {}
        self._ready: dict[str, npt.NDArray[np.bool_]] = {}
        for symbol, x in features.items():
            ready: npt.NDArray[np.bool_] = np.asarray(np.isfinite(x).all(axis=1))
            up, probs = np.full(len(x), np.nan), None
            if ready.any():
                got_up, got_probs = self.runner.probabilities(x[ready])
                up[ready] = got_up
                if got_probs is not None:
                    probs = np.full((len(x), got_probs.shape[1]), np.nan)
                    probs[ready] = got_probs
            self._up[symbol], self._regime[symbol], self._ready[symbol] = up, probs, ready

    def sync(self) -> bool:
        return False  # fixed for the run

    def poll(self) -> bool:
        return False

    def predict_batch(self, rows: Mapping[str, FloatArray]) -> dict[str, Prediction]:
        """Each symbol's prediction for the row it was just handed; a row that is not
        warm gets none (the rules trade alone), as live."""
        out = {}
        for symbol in rows:
            at = self._cursors[symbol].at
            if self._ready[symbol][at]:
                out[symbol] = self.runner.prediction(self._up[symbol], self._regime[symbol], at)
        return out

    def record_batch(
        self,
        bars: Sequence[Bar],
        predictions: Mapping[str, Prediction],
        rows: Mapping[str, FloatArray],
    ) -> None:
        """Nothing to score later: the run's regime rows carry the model's calls."""

    def start_shadow(self) -> None:
        """No shadow in a backtest."""

    def score_due(self, now: int, prices: Mapping[str, float]) -> int:
        return 0

    def check_drift(self, now: int) -> None:
        """No drift within a fixed run."""

    def close(self) -> None:
        """Nothing to wait for: no shadow."""
