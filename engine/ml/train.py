"""Training: bars -> features and labels -> walk-forward CV -> final fit -> artifact.

Two LightGBM heads share one feature row:

- direction: is the close higher `horizon_bars` bars ahead (up vs not up)?
- regime: which regime is the market in, learned from the simulator's ground truth
  (`true_regime`); trained only when the data carries it.

`train_model` is the heavy part. It reads through a read-only connection, never
writes the database, and writes only the artifact folder, so it can run on the ML
executor (or in the CLI) while the engine trades. Registering the result is a
separate fast write on the trading thread (`registry.register`).

Exceptions:

    Exception
     └── TrainingError   too little data to train, or no direction labels
"""

from __future__ import annotations

import logging
import platform
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from engine.config import MlSettings
from engine.decide.regime import RegimeCall, classify
from engine.domain import Regime
from engine.market.feeds import DEFAULT_END_TS, default_symbols, generate_history
from engine.market.indicators import IncrementalIndicators
from engine.ml import metrics as m
from engine.ml.artifact import resolve_artifacts_dir, sha256_hex, write_artifact
from engine.ml.cv import purged_folds
from engine.ml.drift import psi, reference
from engine.ml.features import FEATURES, feature_frame
from store import models as stored
from store.cycles import BAR_COLUMNS
from store.db import db_path, now_ms, reader

if TYPE_CHECKING:  # lightgbm costs a second to import: only training and loading pay it
    import lightgbm as lgb

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[str, int, int], None]  # label, steps done, steps in all

MODEL_NAME = "lgbm"
REGIME_CLASSES: tuple[Regime, ...] = tuple(Regime)
MIN_TRAIN_ROWS = 1_000  # below this the db is not enough and bootstrap data is used
BOOTSTRAP_SYMBOLS = 5
BOOTSTRAP_SEED = 11
UNKNOWN = -1


class TrainingError(RuntimeError):
    """Not enough data to train; nothing was written."""


@dataclass(frozen=True, slots=True)
class TrainParams:
    """`rounds` is the most boosting rounds a head may keep. With `choose_rounds` the
    walk-forward folds choose how many it does keep (`chosen_rounds`); without it every
    head keeps all of them."""

    n_folds: int = 4
    rounds: int = 200
    choose_rounds: bool = True
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    num_threads: int = 1
    seed: int = 7

    def lightgbm(self, num_class: int) -> dict[str, Any]:
        objective: dict[str, Any] = (
            {"objective": "binary"}
            if num_class == 2
            else {"objective": "multiclass", "num_class": num_class}
        )
        return {
            **objective,
            "metric": "binary_logloss" if num_class == 2 else "multi_logloss",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }

    def as_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class Dataset:
    """Rows of every symbol, ordered by time; UNKNOWN (-1) where a label is missing."""

    x: FloatArray  # (n, len(FEATURES))
    ts: IntArray
    label_end: IntArray  # ts of the bar that settles the direction label
    symbol: npt.NDArray[np.str_]
    y_up: IntArray
    regime: IntArray  # index into REGIME_CLASSES
    rules: IntArray  # what engine.decide.regime.classify said, for the baseline
    bar_ms: int


@dataclass(frozen=True)
class TrainedModel:
    """A trained version whose artifact is on disk, ready to register."""

    version: str
    name: str
    path: Path  # the sidecar
    sha256: str
    params: dict[str, Any]
    features: tuple[str, ...]
    data_range: dict[str, Any]
    metrics: dict[str, Any]
    lib_versions: dict[str, str]
    trained_at: int
    heads: tuple[str, ...] = field(default=("direction",))


# ------------------------------------------------------------------------ data


def load_history(
    path: str | Path | None,
    symbols: Sequence[str] | None = None,
    since: int | None = None,
    until: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Bars per symbol from the `bars` table (oldest first), read-only; {} without a db."""
    try:
        with reader(path) as conn:
            return _read_bars(conn, symbols, since, until)
    except FileNotFoundError:
        return {}


def _read_bars(
    conn: sqlite3.Connection,
    symbols: Sequence[str] | None,
    since: int | None,
    until: int | None,
) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame(
        stored.training_bars(conn, symbols, since, until), columns=list(BAR_COLUMNS)
    )
    return {
        str(s): g.drop(columns="symbol").reset_index(drop=True)
        for s, g in frame.groupby("symbol", sort=True)
    }


def simulated_history(
    n_bars: int, *, symbols: int = BOOTSTRAP_SYMBOLS, seed: int = BOOTSTRAP_SEED, end_ts: int
) -> dict[str, pd.DataFrame]:
    return generate_history(default_symbols(symbols), n_bars, seed, end_ts=end_ts)


def _rules_baseline(bars: pd.DataFrame) -> IntArray:
    """The regime rules replayed bar by bar, as the live cycle runs them."""
    state = IncrementalIndicators()
    previous: RegimeCall | None = None
    out = np.empty(len(bars), dtype=np.int64)
    for i, (h, lo, c) in enumerate(
        zip(bars["high"].tolist(), bars["low"].tolist(), bars["close"].tolist(), strict=True)
    ):
        previous = classify(state.update(h, lo, c), previous)
        out[i] = REGIME_CLASSES.index(previous.regime)
    return out


def _regime_index(values: pd.Series) -> IntArray:
    lookup = {r.value: i for i, r in enumerate(REGIME_CLASSES)}
    return np.array([lookup.get(v, UNKNOWN) for v in values.tolist()], dtype=np.int64)


def build_dataset(history: Mapping[str, pd.DataFrame], horizon_bars: int) -> Dataset:
    """Features and labels for every symbol; rows before warm-up are dropped."""
    parts = []
    spacings = []
    for symbol, raw in sorted(history.items()):
        if len(raw) <= horizon_bars:
            continue
        bars = raw.sort_values("ts").reset_index(drop=True)
        feats = feature_frame(bars).to_numpy()
        close = bars["close"].to_numpy(dtype=np.float64)
        ts = bars["ts"].to_numpy(dtype=np.int64)
        spacings.append(np.diff(ts))
        n = len(bars)
        y_up = np.full(n, UNKNOWN, dtype=np.int64)
        y_up[: n - horizon_bars] = close[horizon_bars:] > close[: n - horizon_bars]
        label_end = ts.copy()
        label_end[: n - horizon_bars] = ts[horizon_bars:]
        has_truth = "true_regime" in bars and bars["true_regime"].notna().any()
        regime = (
            _regime_index(bars["true_regime"]) if has_truth else np.full(n, UNKNOWN, dtype=np.int64)
        )
        rules = _rules_baseline(bars) if has_truth else np.full(n, UNKNOWN, dtype=np.int64)
        keep = np.isfinite(feats).all(axis=1)
        parts.append(
            (
                feats[keep],
                ts[keep],
                label_end[keep],
                np.full(int(keep.sum()), symbol),
                y_up[keep],
                regime[keep],
                rules[keep],
            )
        )
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return Dataset(
            np.empty((0, len(FEATURES))), empty, empty, np.empty(0, dtype=str), empty, empty,
            empty, 60_000,
        )  # fmt: skip
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    order = np.argsort(cols[1], kind="stable")
    all_spacings = np.concatenate(spacings)
    bar_ms = int(np.median(all_spacings)) if len(all_spacings) else 60_000
    x, ts, label_end, names, y_up, regime, rules = (c[order] for c in cols)
    return Dataset(x, ts, label_end, names, y_up, regime, rules, max(bar_ms, 1))


# ------------------------------------------------------------------------ fitting


def fit(
    x: FloatArray, y: IntArray, num_class: int, params: TrainParams, rounds: int | None = None
) -> lgb.Booster:
    import lightgbm as lgb

    data = lgb.Dataset(x, label=y, feature_name=list(FEATURES), free_raw_data=True)
    return lgb.train(params.lightgbm(num_class), data, num_boost_round=rounds or params.rounds)


def fit_scored(
    x: FloatArray,
    y: IntArray,
    num_class: int,
    params: TrainParams,
    *,
    test: tuple[FloatArray, IntArray],
) -> tuple[lgb.Booster, list[float]]:
    """`fit` on (x, y), with the log loss on the `test` rows after every round."""
    import lightgbm as lgb

    x_test, y_test = test
    train = lgb.Dataset(x, label=y, feature_name=list(FEATURES), free_raw_data=True)
    scored = lgb.Dataset(x_test, label=y_test, reference=train)
    scores: dict[str, dict[str, list[float]]] = {}
    booster = lgb.train(
        params.lightgbm(num_class),
        train,
        num_boost_round=params.rounds,
        valid_sets=[scored],
        valid_names=["test"],
        callbacks=[lgb.record_evaluation(scores)],
    )
    (losses,) = scores["test"].values()
    return booster, list(losses)


def chosen_rounds(losses: Sequence[Sequence[float]]) -> int:
    """The number of rounds with the lowest mean out-of-fold log loss over the folds
    (each fold's losses after every round), as LightGBM's own `cv` chooses it. More
    rounds than that fit the training rows' noise: on simulated history a head's
    out-of-fold loss bottoms out near 50 of 200 rounds and climbs after."""
    mean = np.mean(np.asarray(losses, dtype=np.float64), axis=0)
    return int(np.argmin(mean)) + 1


def predict_proba(
    booster: lgb.Booster, x: FloatArray, num_class: int, rounds: int | None = None
) -> FloatArray:
    raw = np.asarray(booster.predict(x, num_iteration=rounds, num_threads=1), dtype=np.float64)
    if num_class == 2:
        return np.column_stack([1.0 - raw, raw])
    return raw.reshape(len(x), num_class)


@dataclass(frozen=True)
class HeadResult:
    booster: lgb.Booster
    report: dict[str, Any]  # folds, overall, baselines, calibration, importance
    oof_proba: FloatArray  # out-of-fold probabilities of the tested rows
    oof_rows: IntArray


def train_head(
    x: FloatArray,
    y: IntArray,
    start: IntArray,
    end: IntArray,
    num_class: int,
    *,
    params: TrainParams,
    embargo: int,
    rules: IntArray | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> HeadResult:
    """Walk-forward CV with purging, baselines beside every fold, then a fit on all rows.

    With `params.choose_rounds` the folds also choose the number of boosting rounds
    (`chosen_rounds`); the folds' scores are their models' at that number, and the
    final fit keeps that many. It is the one setting chosen on the test folds, so
    their scores lean slightly optimistic, as with LightGBM's `cv`."""
    folds = purged_folds(start, end, params.n_folds, embargo)
    fitted: list[tuple[Any, lgb.Booster]] = []
    losses: list[list[float]] = []
    for fold in folds:
        if len(fold.train) == 0 or len(fold.test) == 0:
            step(f"fold {fold.number} skipped")
            continue
        train, test = fold.train, fold.test
        if params.choose_rounds:
            booster, loss = fit_scored(
                x[train], y[train], num_class, params, test=(x[test], y[test])
            )
            losses.append(loss)
        else:
            booster = fit(x[train], y[train], num_class, params)
        fitted.append((fold, booster))
        step(f"fold {fold.number}")
    if not fitted:
        raise TrainingError("no fold had both training and test rows; give more history")
    rounds = chosen_rounds(losses) if losses else params.rounds
    fold_reports = []
    tested, probas = [], []
    for fold, booster in fitted:
        proba = predict_proba(booster, x[fold.test], num_class, rounds)
        fold_reports.append(_fold_report(fold, y, proba, num_class, rules))
        tested.append(fold.test)
        probas.append(proba)
    rows = np.concatenate(tested)
    oof = np.concatenate(probas)
    overall = _overall_report(folds, y, rows, oof, num_class=num_class, rules=rules)
    overall["folds"] = fold_reports
    overall["rounds"] = {"kept": rounds, "most": params.rounds}
    booster = fit(x, y, num_class, params, rounds)
    overall["importance"] = _importance(booster)
    step("final fit")
    return HeadResult(booster, overall, oof, rows)


def _fold_report(
    fold: Any, y: IntArray, proba: FloatArray, num_class: int, rules: IntArray | None
) -> dict[str, Any]:
    """One fold's test scores beside the baselines trained on the same rows."""
    y_test = y[fold.test]
    report: dict[str, Any] = {
        "fold": fold.number,
        "train_rows": len(fold.train),
        "test_rows": len(fold.test),
        "test_start": fold.test_start,
        "test_end": fold.test_end,
        "purged": len(fold.purged),
        "embargoed": len(fold.embargoed),
        "model": m.classification_metrics(y_test, proba),
        "majority": m.classification_metrics(
            y_test, m.majority_proba(y[fold.train], len(fold.test), num_class)
        ),
    }
    if rules is not None:
        report["rules"] = m.label_metrics(_scored(y_test), _scored(rules[fold.test]))
        report["model_rules_scale"] = m.label_metrics(
            _scored(y_test), _scored(proba.argmax(axis=1))
        )
    return report


def _overall_report(
    folds: Sequence[Any],
    y: IntArray,
    rows: IntArray,
    oof: FloatArray,
    *,
    num_class: int,
    rules: IntArray | None,
) -> dict[str, Any]:
    """The out-of-fold scores pooled over every tested row."""
    y_oof = y[rows]
    overall: dict[str, Any] = {
        "folds": [],
        "overall": m.classification_metrics(y_oof, oof),
        # Each fold's baseline learns from its own training rows, like the model.
        "majority": _pooled_majority(folds, y, num_class),
        "calibration": m.calibration(y_oof, oof),
        "class_share": (np.bincount(y, minlength=num_class) / max(len(y), 1)).tolist(),
        "first_train_rows": len(folds[0].train),
    }
    if rules is not None:
        overall["rules"] = m.label_metrics(_scored(y_oof), _scored(rules[rows]))
        overall["model_rules_scale"] = m.label_metrics(_scored(y_oof), _scored(oof.argmax(axis=1)))
    return overall


def _importance(booster: lgb.Booster) -> dict[str, float]:
    """Each feature's share of the total gain."""
    gain = booster.feature_importance(importance_type="gain").astype(np.float64)
    total = gain.sum()
    return dict(zip(FEATURES, (gain / total if total else gain).tolist(), strict=True))


def _pooled_majority(folds: Sequence[Any], y: IntArray, num_class: int) -> dict[str, float]:
    ys, ps = [], []
    for fold in folds:
        if len(fold.train) and len(fold.test):
            ys.append(y[fold.test])
            ps.append(m.majority_proba(y[fold.train], len(fold.test), num_class))
    return m.classification_metrics(np.concatenate(ys), np.concatenate(ps))


_CRASH = REGIME_CLASSES.index(Regime.CRASH)
_HIGH_VOL = REGIME_CLASSES.index(Regime.HIGH_VOL)


def _scored(labels: IntArray) -> IntArray:
    """The rules have no CRASH call; score both on their scale (CRASH counts as HIGH_VOL)."""
    return np.where(labels == _CRASH, _HIGH_VOL, labels)


MIN_DRIFT_BLOCK = 200


def _blocks(n: int, size: int) -> list[slice]:
    size = max(min(size, n // 4), MIN_DRIFT_BLOCK)
    return [slice(i, i + size) for i in range(0, n - size + 1, size)]


def _natural_psi(values: FloatArray, window: int) -> float:
    """The largest PSI of one stretch of `window` rows against the bins of all the others.

    Leaving the stretch out of its own reference keeps the measure out-of-sample, as
    the live window is: a stretch inside its reference looks closer than it is.
    """
    worst = 0.0
    for block in _blocks(len(values), window):
        rest = np.concatenate([values[: block.start], values[block.stop :]])
        worst = max(worst, psi(reference(rest), values[block]))
    return worst


def drift_reference(x: FloatArray, p_up: FloatArray, window: int) -> dict[str, Any]:
    """Training bins per feature and for p(up), with each one's natural PSI.

    Rows are in time order. The natural PSI is how far the history itself moves
    between stretches of `window` rows (the live drift window); see `_natural_psi`.
    """
    return {
        "features": {name: reference(x[:, j]).as_json() for j, name in enumerate(FEATURES)},
        "prediction": reference(p_up).as_json(),
        "natural": {name: _natural_psi(x[:, j], window) for j, name in enumerate(FEATURES)},
        "prediction_natural": _natural_psi(p_up, window),
    }


# ------------------------------------------------------------------------ the job


def lib_versions() -> dict[str, str]:
    import lightgbm as lgb

    return {
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def train_on_history(
    history: Mapping[str, pd.DataFrame],
    settings: MlSettings,
    *,
    artifacts_dir: Path,
    now: int,
    params: TrainParams = TrainParams(),
    source: str = "db",
    progress: Progress | None = None,
) -> TrainedModel:
    """Train both heads on the given bars and write the artifact (no database write)."""
    horizon = settings.horizon_bars
    data = build_dataset(history, horizon)
    d = np.flatnonzero(data.y_up != UNKNOWN)
    if len(d) < MIN_TRAIN_ROWS:
        raise TrainingError(f"{len(d)} labelled rows; at least {MIN_TRAIN_ROWS} are needed")
    regime_rows = np.flatnonzero(data.regime != UNKNOWN)
    r = regime_rows if len(regime_rows) >= MIN_TRAIN_ROWS else None
    step = _counted(progress, (params.n_folds + 1) * (1 if r is None else 2) + 1)
    embargo = horizon * data.bar_ms
    results = _train_heads(data, d, r, params=params, embargo=embargo, step=step)
    heads = {name: head.booster.model_to_string() for name, head in results.items()}
    metrics = {name: head.report for name, head in results.items()}
    direction = results["direction"]
    # Out-of-fold rows come fold by fold, and folds follow time: they are in time order.
    reference_data = drift_reference(data.x[d], direction.oof_proba[:, 1], settings.drift_window)
    all_params = {
        "train": params.as_json(),
        "lightgbm": params.lightgbm(2),
        "horizon_bars": horizon,
        "embargo_ms": embargo,
        "heads": list(heads),
    }
    step("artifact")
    trained = _write_model(
        artifacts_dir,
        heads,
        now=now,
        params=all_params,
        data_range=_data_range(data, d, r, source),
        metrics=m.jsonable(metrics),
        drift=m.jsonable(reference_data),
    )
    log.info(
        "trained %s on %d rows (%s); direction accuracy %.3f",
        trained.version,
        len(d),
        source,
        direction.report["overall"]["accuracy"],
    )
    return trained


def _train_heads(
    data: Dataset,
    d: IntArray,
    r: IntArray | None,
    *,
    params: TrainParams,
    embargo: int,
    step: Callable[[str], None],
) -> dict[str, HeadResult]:
    """The direction head on the rows `d`, and the regime head on `r` unless None."""
    heads = {
        "direction": train_head(
            data.x[d], data.y_up[d], data.ts[d], data.label_end[d], 2, params=params,
            embargo=embargo, step=lambda s: step(f"direction {s}"),
        )
    }  # fmt: skip
    if r is not None:
        heads["regime"] = train_head(
            data.x[r], data.regime[r], data.ts[r], data.ts[r], len(REGIME_CLASSES),
            params=params, embargo=embargo, rules=data.rules[r],
            step=lambda s: step(f"regime {s}"),
        )  # fmt: skip
    return heads


def _counted(progress: Progress | None, total: int) -> Callable[[str], None]:
    """A step function that reports each step's label and count out of `total`."""
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(label, done, total)

    return step


def _data_range(
    data: Dataset, direction_rows: IntArray, regime_rows: IntArray | None, source: str
) -> dict[str, Any]:
    """What the model was trained on, as the registry records it."""
    return {
        "source": source,
        "symbols": sorted(set(data.symbol.tolist())),
        "since": int(data.ts.min()),
        "until": int(data.ts.max()),
        "rows": len(direction_rows),
        "regime_rows": 0 if regime_rows is None else len(regime_rows),
        "bar_ms": data.bar_ms,
    }


def _write_model(
    artifacts_dir: Path,
    heads: dict[str, str],
    *,
    now: int,
    params: dict[str, Any],
    data_range: dict[str, Any],
    metrics: dict[str, Any],
    drift: dict[str, Any],
) -> TrainedModel:
    """Write the heads and their sidecar as a new version's artifact."""
    version = (
        f"{datetime.fromtimestamp(now / 1000, UTC):%Y%m%d-%H%M%S}-"
        + sha256_hex("".join(heads.values()).encode())[:6]
    )
    libs = lib_versions()
    sidecar = {
        "version": version,
        "name": MODEL_NAME,
        "features": list(FEATURES),
        "horizon_bars": params["horizon_bars"],
        "regime_classes": [c.value for c in REGIME_CLASSES],
        "params": params,
        "data_range": data_range,
        "metrics": metrics,
        "lib_versions": libs,
        "trained_at": now,
        "drift_reference": drift,
    }
    path, digest = write_artifact(artifacts_dir, version, sidecar, heads)
    return TrainedModel(
        version=version,
        name=MODEL_NAME,
        path=path,
        sha256=digest,
        params=params,
        features=FEATURES,
        data_range=data_range,
        metrics=metrics,
        lib_versions=libs,
        trained_at=now,
        heads=tuple(heads),
    )


def train_model(
    path: str | Path | None,
    settings: MlSettings,
    *,
    artifacts_dir: Path | None = None,
    symbols: Sequence[str] | None = None,
    since: int | None = None,
    until: int | None = None,
    now: int | None = None,
    params: TrainParams = TrainParams(),
    progress: Progress | None = None,
    simulated: bool = False,
) -> TrainedModel:
    """The scheduled retrain: the database's bars, or simulated history if too few.

    Runs on the ML executor, never on the trading thread: it only reads the database
    (read-only connection) and writes the artifact folder. Falls back to simulated
    history when the database holds fewer than MIN_TRAIN_ROWS usable bars and
    `settings.bootstrap` allows it; otherwise raises TrainingError.
    """
    now = now_ms() if now is None else now
    folder = artifacts_dir or resolve_artifacts_dir(settings, path)
    history = {} if simulated else load_history(db_path(path), symbols, since, until)
    usable = sum(max(len(b) - settings.horizon_bars, 0) for b in history.values())
    if simulated or usable < MIN_TRAIN_ROWS + 100 * max(len(history), 1):
        if not (simulated or settings.bootstrap):
            raise TrainingError(
                f"the database holds {usable} usable bars; ml.bootstrap is off, so no"
                " simulated history is used"
            )
        log.info("training on simulated history (%d usable bars in the db)", usable)
        return bootstrap_model(
            settings, artifacts_dir=folder, now=now, params=params, progress=progress
        )
    return train_on_history(
        history, settings, artifacts_dir=folder, now=now, params=params, progress=progress
    )


def bootstrap_model(
    settings: MlSettings,
    *,
    artifacts_dir: Path | None = None,
    now: int | None = None,
    params: TrainParams = TrainParams(),
    progress: Progress | None = None,
    n_bars: int | None = None,
    symbols: int = BOOTSTRAP_SYMBOLS,
    seed: int = BOOTSTRAP_SEED,
) -> TrainedModel:
    """The first model, trained on the simulator's history (it carries true regimes)."""
    now = now_ms() if now is None else now
    bars = settings.bootstrap_bars if n_bars is None else n_bars
    history = simulated_history(bars, symbols=symbols, seed=seed, end_ts=DEFAULT_END_TS)
    return train_on_history(
        history,
        settings,
        artifacts_dir=artifacts_dir or resolve_artifacts_dir(settings),
        now=now,
        params=params,
        source=f"simulated: {symbols} symbols x {bars} bars, seed {seed}",
        progress=progress,
    )
