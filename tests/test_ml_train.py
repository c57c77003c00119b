"""Training on simulated history: the models beat their baselines on data they never saw."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.config import MlSettings
from engine.market.feeds import generate_history
from engine.ml.artifact import load_artifact, sha256_hex
from engine.ml.features import FEATURES
from engine.ml.train import (
    UNKNOWN,
    TrainingError,
    TrainParams,
    build_dataset,
    chosen_rounds,
    train_head,
    train_model,
    train_on_history,
)
from store.db import open_writer

NOW = 1_767_225_600_000
HORIZON = 10
PARAMS = TrainParams(n_folds=2, rounds=30)
REGIME_MARGIN = 0.25  # accuracy points above the majority class on unseen symbols
DIRECTION_MARGIN = 0.03


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    history = generate_history(["A", "B", "C"], 2_500, seed=1)
    folder = tmp_path_factory.mktemp("models")
    model = train_on_history(
        history, MlSettings(horizon_bars=HORIZON), artifacts_dir=folder, now=NOW, params=PARAMS
    )
    return model, build_dataset(history, HORIZON)


@pytest.fixture(scope="module")
def unseen():
    return build_dataset(generate_history(["X", "Y"], 2_500, seed=1001), HORIZON)


def test_regime_model_beats_the_majority_class_on_unseen_symbols(trained, unseen) -> None:
    model, train = trained
    booster = load_artifact(model.path, model.sha256).regime
    rows = unseen.regime != UNKNOWN
    predicted = booster.predict(unseen.x[rows]).argmax(axis=1)
    majority = np.bincount(train.regime[train.regime != UNKNOWN]).argmax()
    accuracy = np.mean(predicted == unseen.regime[rows])
    assert accuracy > np.mean(unseen.regime[rows] == majority) + REGIME_MARGIN


def test_direction_model_beats_the_majority_class_on_unseen_symbols(trained, unseen) -> None:
    model, train = trained
    booster = load_artifact(model.path, model.sha256).direction
    rows = unseen.y_up != UNKNOWN
    predicted = booster.predict(unseen.x[rows]) >= 0.5
    majority = int(np.mean(train.y_up[train.y_up != UNKNOWN]) >= 0.5)
    accuracy = np.mean(predicted == unseen.y_up[rows])
    assert accuracy > np.mean(unseen.y_up[rows] == majority) + DIRECTION_MARGIN


def test_walk_forward_metrics_beat_the_majority_baseline_in_every_fold(trained) -> None:
    model, _ = trained
    for fold in model.metrics["regime"]["folds"]:
        assert fold["model"]["accuracy"] > fold["majority"]["accuracy"]


def test_regime_model_beats_the_rules_on_their_own_scale(trained) -> None:
    report = trained[0].metrics["regime"]
    assert report["model_rules_scale"]["accuracy"] > report["rules"]["accuracy"]


def test_overall_metrics_cover_exactly_the_tested_rows(trained) -> None:
    report = trained[0].metrics["direction"]
    assert report["overall"]["n"] == sum(f["test_rows"] for f in report["folds"])


def test_direction_folds_purge_one_horizon_per_symbol(trained) -> None:
    for fold in trained[0].metrics["direction"]["folds"]:
        assert fold["purged"] == HORIZON * 3


def test_registry_hash_is_the_sidecar_files_hash(trained) -> None:
    model, _ = trained
    assert sha256_hex(Path(model.path).read_bytes()) == model.sha256


def _store(path: Path, history) -> None:
    db = open_writer(path)
    for symbol, frame in history.items():
        db["bars"].insert_all(frame.assign(symbol=symbol).to_dict("records"))
    db.conn.close()


def test_train_model_reads_the_bars_table(tmp_path: Path) -> None:
    path = tmp_path / "cockpit.db"
    _store(path, generate_history(["SIM-A", "SIM-B"], 900, seed=3))
    model = train_model(
        path, MlSettings(), artifacts_dir=tmp_path / "m", now=NOW, params=TrainParams(2, 20)
    )
    assert (model.data_range["source"], model.data_range["symbols"]) == ("db", ["SIM-A", "SIM-B"])


def test_too_few_bars_fall_back_to_simulated_history(tmp_path: Path) -> None:
    path = tmp_path / "cockpit.db"
    _store(path, generate_history(["SIM-A"], 100, seed=3))
    settings = MlSettings(bootstrap_bars=800)
    model = train_model(
        path, settings, artifacts_dir=tmp_path / "m", now=NOW, params=TrainParams(2, 20)
    )
    assert model.data_range["source"].startswith("simulated")


def test_too_few_bars_without_bootstrap_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cockpit.db"
    _store(path, generate_history(["SIM-A"], 100, seed=3))
    with pytest.raises(TrainingError, match="bootstrap is off"):
        train_model(path, MlSettings(bootstrap=False), artifacts_dir=tmp_path / "m", now=NOW)


def test_the_folds_choose_the_rounds_with_the_lowest_mean_loss() -> None:
    # Fold losses after rounds 1..4: the mean is lowest after round 2 (a tie with
    # round 3 goes to the fewer rounds).
    assert chosen_rounds([[0.9, 0.6, 0.5, 0.7], [0.9, 0.4, 0.5, 0.6]]) == 2
    assert chosen_rounds([[0.5, 0.4, 0.3]]) == 3


def test_a_head_keeps_the_rounds_its_folds_chose_and_scores_better_for_it() -> None:
    # Labels with no relation to the features: every round after the first few fits
    # noise. The head keeps fewer rounds than it may, its final model has exactly
    # that many trees, and its out-of-fold log loss beats keeping every round.
    rng = np.random.default_rng(5)
    n = 3_000
    x = rng.normal(size=(n, len(FEATURES)))
    y = rng.integers(0, 2, size=n)
    ts = np.arange(n, dtype=np.int64) * 60_000
    params = TrainParams(n_folds=3, rounds=60, min_data_in_leaf=20)
    chosen = train_head(x, y, ts, ts, 2, params=params, embargo=0)
    every = train_head(x, y, ts, ts, 2, params=replace(params, choose_rounds=False), embargo=0)

    kept = chosen.report["rounds"]["kept"]
    assert kept < 60 and every.report["rounds"]["kept"] == 60
    assert chosen.booster.num_trees() == kept and every.booster.num_trees() == 60
    assert chosen.report["overall"]["log_loss"] < every.report["overall"]["log_loss"]
