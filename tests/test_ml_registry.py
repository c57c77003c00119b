"""The registry: round trip, statuses, rollback, audit, refusal of changed artifacts."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.alerts.audit import verify_chain
from engine.config import MlSettings
from engine.ml import registry
from engine.ml.registry import ModelStatus, RegistryError
from engine.ml.train import TrainParams, bootstrap_model
from store.commands import CommandKind
from store.db import open_writer

NOW = 1_767_225_600_000
TINY = TrainParams(n_folds=2, rounds=15)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("models")
    return [
        bootstrap_model(
            MlSettings(),
            artifacts_dir=folder,
            now=NOW + i * 1000,
            params=TINY,
            n_bars=700,
            symbols=2,
            seed=i,
        )
        for i in range(3)
    ]


@pytest.fixture
def db(tmp_path: Path):
    database = open_writer(tmp_path / "cockpit.db")
    yield database
    database.conn.close()


def _status(db, version: str) -> ModelStatus:
    record = registry.get(db.conn, version)
    assert record is not None
    return record.status


def test_registered_model_reads_back_equal(db, models) -> None:
    model = models[0]
    registry.register(db, model, now=NOW)
    record = registry.get(db.conn, model.version)
    assert record is not None
    assert (
        record.path, record.sha256, record.params, tuple(record.features), record.data_range,
        record.metrics, record.lib_versions, record.trained_at, record.status,
    ) == (
        str(model.path), model.sha256, model.params, model.features, model.data_range,
        model.metrics, model.lib_versions, model.trained_at, ModelStatus.CANDIDATE,
    )  # fmt: skip


def test_empty_registry_needs_bootstrap_and_a_registered_one_does_not(db, models) -> None:
    before = registry.needs_bootstrap(db.conn)
    registry.register(db, models[0], now=NOW)
    assert (before, registry.needs_bootstrap(db.conn)) == (True, False)


def test_registering_a_version_twice_is_refused(db, models) -> None:
    registry.register(db, models[0], now=NOW)
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(db, models[0], now=NOW)


def test_promote_retires_the_champion_it_replaces(db, models) -> None:
    a, b = models[0].version, models[1].version
    for m in models[:2]:
        registry.register(db, m, now=NOW)
    registry.promote(db, a, now=NOW)
    registry.promote(db, b, now=NOW + 1)
    assert (_status(db, a), _status(db, b)) == (ModelStatus.RETIRED, ModelStatus.CHAMPION)


def test_rollback_restores_the_previous_champion_and_retires_the_current(db, models) -> None:
    a, b = models[0].version, models[1].version
    for m in models[:2]:
        registry.register(db, m, now=NOW)
    registry.promote(db, a, now=NOW)
    registry.promote(db, b, now=NOW + 1)
    registry.rollback(db, now=NOW + 2)
    assert (_status(db, a), _status(db, b)) == (ModelStatus.CHAMPION, ModelStatus.RETIRED)


def test_a_second_rollback_goes_one_champion_further_back(db, models) -> None:
    for m in models:
        registry.register(db, m, now=NOW)
        registry.promote(db, m.version, now=NOW)
    registry.rollback(db, now=NOW + 1)
    registry.rollback(db, now=NOW + 2)
    assert registry.champion(db.conn).version == models[0].version


def test_rollback_without_an_earlier_champion_is_refused(db, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(db, now=NOW)


def test_promoting_a_changed_artifact_is_refused(db, models, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(models[0].path.parent, copy)
    (copy / "direction.txt").write_text((copy / "direction.txt").read_text() + "\n# edited")
    registry.register(db, replace(models[0], path=copy / "model.json"), now=NOW)
    with pytest.raises(RegistryError, match="refused"):
        registry.promote(db, models[0].version, now=NOW)
    assert _status(db, models[0].version) is ModelStatus.CANDIDATE


def test_adopt_makes_the_first_model_champion_and_later_ones_challengers(db, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    assert (_status(db, models[0].version), _status(db, models[1].version)) == (
        ModelStatus.CHAMPION,
        ModelStatus.CHALLENGER,
    )


def test_a_new_challenger_sends_the_old_one_back_to_candidate(db, models) -> None:
    for m in models:
        registry.adopt(db, m, now=NOW)
    assert _status(db, models[1].version) is ModelStatus.CANDIDATE


def test_every_change_is_audited_in_an_intact_chain(db, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    registry.promote(db, models[1].version, now=NOW)
    actions = [r[0] for r in db.conn.execute("SELECT action FROM audit ORDER BY id")]
    assert actions == [
        "model.register", "model.promote", "model.register", "model.challenger",
        "model.demote", "model.promote",
    ]  # fmt: skip
    assert verify_chain(db.conn) is None


def test_promote_command_names_the_version_in_its_result(db, models) -> None:
    registry.register(db, models[0], now=NOW)
    result = registry.handle_command(
        db, CommandKind.PROMOTE, {"version": models[0].version}, now=NOW
    )
    assert models[0].version in result and _status(db, models[0].version) is ModelStatus.CHAMPION


def test_command_without_a_version_is_refused(db) -> None:
    with pytest.raises(RegistryError, match="needs a model version"):
        registry.handle_command(db, CommandKind.RETIRE, {}, now=NOW)


def test_audit_payload_records_who_and_why(db, models) -> None:
    registry.register(db, models[0], now=NOW)
    registry.retire(db, models[0].version, now=NOW, actor="alice", reason="stale")
    actor, payload = db.conn.execute(
        "SELECT actor, payload FROM audit WHERE action = 'model.retire'"
    ).fetchone()
    assert (actor, json.loads(payload)["reason"]) == ("alice", "stale")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metrics=st.dictionaries(st.text(max_size=6), _json, max_size=4), data_range=_json)
def test_what_is_registered_reads_back_equal(models, metrics, data_range) -> None:
    db = open_writer(":memory:")
    try:
        trained = replace(models[0], metrics=metrics, data_range={"any": data_range})
        registry.register(db, trained, now=NOW)
        record = registry.get(db.conn, trained.version)
        assert (record.metrics, record.data_range) == (metrics, {"any": data_range})
    finally:
        db.conn.close()
