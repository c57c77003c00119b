"""Models page: the empty state, the registry as stored, and guarded commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import MlSettings
from engine.ml import registry
from engine.ml.train import TrainParams, bootstrap_model
from store.db import open_writer
from tests.cockpit_support import app, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/models.py"
NOW = 1_767_225_600_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("models")
    return [
        bootstrap_model(
            MlSettings(),
            artifacts_dir=folder,
            now=NOW + i,
            params=TrainParams(2, 15),
            n_bars=700,
            symbols=2,
            seed=i,
        )
        for i in range(2)
    ]


@pytest.fixture
def two_models(tmp_path: Path, trained) -> Path:
    path = tmp_path / "cockpit.db"
    db = open_writer(path)
    for model in trained:
        registry.adopt(db, model, now=NOW)
    db.conn.close()
    return path


def _commands(db: Path) -> list[tuple]:
    return query(db, "SELECT kind, args FROM commands")


def test_empty_database_says_the_engine_trades_on_rules(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No model yet" in i.value and "rules" in i.value for i in at.info)


def test_registry_table_shows_the_stored_versions_and_statuses(two_models: Path) -> None:
    at = app(two_models, PAGE)
    table = next(d.value for d in at.dataframe if "sha256" in d.value.columns)
    stored = query(two_models, "SELECT version, status FROM models")
    assert sorted(zip(table["version"], table["status"], strict=True)) == sorted(stored)


def test_accuracies_shown_equal_the_stored_walk_forward_metrics(two_models: Path) -> None:
    at = app(two_models, PAGE)
    table = next(d.value for d in at.dataframe if "sha256" in d.value.columns)
    for version, metrics in query(two_models, "SELECT version, metrics FROM models"):
        row = table[table["version"] == version].iloc[0]
        stored = json.loads(metrics)
        assert row["direction_accuracy"] == stored["direction"]["overall"]["accuracy"]
        assert row["regime_rules"] == stored["regime"]["rules"]["accuracy"]


def test_confirmed_promote_enqueues_exactly_one_command(two_models: Path, trained) -> None:
    at = app(two_models, PAGE)
    at.selectbox(key="promote_version").select(trained[1].version).run()
    at.checkbox(key="confirm_promote").check().run()
    at.button(key="promote").click().run()
    assert not at.exception
    assert _commands(two_models) == [("promote", json.dumps({"version": trained[1].version}))]


def test_promote_stays_disabled_until_confirmed(two_models: Path) -> None:
    at = app(two_models, PAGE)
    before = at.button(key="promote").disabled
    at.checkbox(key="confirm_promote").check().run()
    assert (before, at.button(key="promote").disabled) == (True, False)


def test_confirmed_rollback_enqueues_one_rollback(two_models: Path) -> None:
    at = app(two_models, PAGE)
    at.checkbox(key="confirm_rollback").check().run()
    at.button(key="rollback").click().run()
    assert _commands(two_models) == [("rollback", "{}")]


@pytest.fixture
def with_live_data(two_models: Path) -> Path:
    """The engine's ML side run for 300 bars: predictions, scores and a drift check."""
    from engine.domain import Bar
    from engine.market.feeds import generate_history
    from engine.ml.service import ModelService
    from engine.ml.train import build_dataset

    history = generate_history(["SIM-A"], 400, seed=9)["SIM-A"]
    rows = build_dataset({"SIM-A": history}, 10).x
    bars = history.iloc[-len(rows) :]
    db = open_writer(two_models)
    service = ModelService(db, MlSettings(), Path("/none"), lambda *a: None, bar_ms=60_000)
    for row, bar in zip(rows, bars.itertuples(), strict=True):
        b = Bar("SIM-A", int(bar.ts), bar.open, bar.high, bar.low, bar.close, bar.volume)
        service.record(b, service.predict("SIM-A", row))
        service.score_due(b.ts, {"SIM-A": b.close})
    service.check_drift(int(bars["ts"].iloc[-1]))
    db.conn.commit()
    db.conn.close()
    return two_models


def test_latest_drift_shown_equals_the_stored_check(with_live_data: Path) -> None:
    at = app(with_live_data, PAGE)
    at.segmented_control(key="drift_window").set_value("All").run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "ratio" in d.value.columns)
    shown = table[table["kind"] == "feature_psi"]
    stored = dict(query(with_live_data, "SELECT name, value FROM drift WHERE kind = 'feature_psi'"))
    assert dict(zip(shown["name"], shown["value"], strict=True)) == pytest.approx(stored)


def test_live_accuracy_shown_equals_the_scored_predictions(with_live_data: Path) -> None:
    at = app(with_live_data, PAGE)
    table = next(d.value for d in at.dataframe if "live_accuracy" in d.value.columns)
    (accuracy,) = query(
        with_live_data,
        "SELECT AVG((proba >= 0.5) = outcome) FROM predictions"
        " WHERE role = 'champion' AND scored_at IS NOT NULL",
    )[0]
    assert table[table["role"] == "champion"]["live_accuracy"].iloc[0] == pytest.approx(accuracy)
