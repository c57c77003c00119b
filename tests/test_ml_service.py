"""The live model service: verified loading with fallback, prediction, scoring, drift,
shadowing and the auto-promotion policy."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.config import MlSettings
from engine.decide.regime import Source
from engine.domain import Bar, Regime, Severity
from engine.market.feeds import generate_history
from engine.ml import registry
from engine.ml.artifact import load_artifact
from engine.ml.drift import DriftKind
from engine.ml.features import feature_frame
from engine.ml.service import SPLIT_ROWS, ModelService, Runner
from engine.ml.shadow import promotion_advice
from engine.ml.train import TrainParams, build_dataset, train_on_history
from store.db import open_writer

NOW = 1_767_225_600_000
BAR_MS = 60_000
SETTINGS = MlSettings(drift_window=1_000, min_scored=50)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("models")
    out = []
    for seed, bars in [(1, 2_500), (2, 800)]:
        history = generate_history(["A", "B", "C"], bars, seed=seed)
        out.append(
            train_on_history(
                history,
                SETTINGS,
                artifacts_dir=folder,
                now=NOW + seed,
                params=TrainParams(n_folds=2, rounds=20),
            )
        )
    return out


@pytest.fixture
def db(tmp_path: Path):
    database = open_writer(tmp_path / "cockpit.db")
    yield database
    database.conn.close()


@pytest.fixture
def alerts() -> list[tuple]:
    return []


def _service(db, alerts, settings: MlSettings = SETTINGS) -> ModelService:
    return ModelService(
        db, settings, Path("/nonexistent"), lambda *a: alerts.append(a), bar_ms=BAR_MS
    )


def _own_copy(model, tmp_path: Path):
    """The model with its artifact copied under tmp_path, so a test may damage it."""
    folder = tmp_path / model.version
    shutil.copytree(model.path.parent, folder)
    return replace(model, path=folder / "model.json")


def _rows(seed: int, symbols: int = 5, bars: int = 262) -> np.ndarray:
    history = generate_history([f"S{i}" for i in range(symbols)], bars, seed=seed)
    return build_dataset(history, 10).x[-SETTINGS.drift_window :]


def test_prediction_is_the_verified_boosters_probability(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    row = _rows(7)[-1]
    booster = load_artifact(models[0].path, models[0].sha256).direction
    prediction = _service(db, alerts).predict("S0", row)
    assert prediction.proba_up == pytest.approx(booster.predict(row.reshape(1, -1))[0], abs=0)


def test_regime_call_is_from_ml_with_the_top_class_probability(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    call = _service(db, alerts).predict("S0", _rows(7)[-1]).regime_call
    probabilities = [v for k, v in call.features.items() if k.startswith("p_")]
    assert (call.source, call.confidence) == (Source.ML, max(probabilities))


def test_a_row_still_warming_up_gives_no_prediction(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    row = _rows(7)[-1].copy()
    row[3] = np.nan
    assert _service(db, alerts).predict("S0", row) is None


def test_changed_champion_is_refused_and_the_previous_champion_used(
    db, alerts, models, tmp_path: Path
) -> None:
    registry.adopt(db, models[0], now=NOW)
    second = _own_copy(models[1], tmp_path)
    registry.register(db, second, now=NOW)
    registry.promote(db, second.version, now=NOW)
    head = second.path.parent / "direction.txt"
    head.write_text(head.read_text().replace("shrinkage=", "shrinkage=1", 1))
    service = _service(db, alerts)
    assert service.champion_version == models[0].version
    assert any(a[0] is Severity.HIGH and "refused" in a[2] for a in alerts)


def test_missing_champion_without_an_earlier_one_leaves_rules_only(
    db, alerts, models, tmp_path: Path
) -> None:
    only = _own_copy(models[0], tmp_path)
    registry.adopt(db, only, now=NOW)
    only.path.unlink()
    service = _service(db, alerts)
    assert service.predict("S0", _rows(7)[-1]) is None
    assert any(a[0] is Severity.HIGH and "rules only" in a[2] for a in alerts)


def test_sync_picks_up_a_promotion(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    service = _service(db, alerts)
    registry.promote(db, models[1].version, now=NOW)
    assert (service.sync(), service.champion_version) == (True, models[1].version)


def test_poll_reads_the_registry_again_only_after_the_interval(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    now = [NOW]
    service = ModelService(
        db, SETTINGS, Path("/none"), lambda *a: None, clock=lambda: now[0], sync_every_ms=1_000
    )
    registry.promote(db, models[1].version, now=NOW)
    now[0] += 999
    assert (service.poll(), service.champion_version) == (False, models[0].version)
    now[0] += 1
    assert (service.poll(), service.champion_version) == (True, models[1].version)


def test_poll_after_the_clock_went_back_reads_the_registry(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    now = [NOW]
    service = ModelService(db, SETTINGS, Path("/none"), lambda *a: None, clock=lambda: now[0])
    registry.promote(db, models[1].version, now=NOW)
    now[0] -= 60_000
    assert (service.poll(), service.champion_version) == (True, models[1].version)


def test_poll_installs_a_finished_background_load_without_waiting(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    loader = ThreadPoolExecutor(1)
    service = ModelService(
        db, SETTINGS, Path("/none"), lambda *a: None, clock=lambda: NOW, loader=loader
    )
    loader.shutdown(wait=True)  # the load has finished; the clock has not moved
    assert (service.poll(), service.champion_version) == (True, models[0].version)


def test_a_batch_predicts_each_row_as_it_would_alone(models) -> None:
    runner = Runner(load_artifact(models[0].path, models[0].sha256))
    x = _rows(7)[-40:]
    p_up, probs = runner.probabilities(x)
    alone = [runner.predict(x[i : i + 1]) for i in range(len(x))]
    assert runner.predict_batch(x) == alone
    assert [runner.prediction(p_up, probs, i) for i in range(len(x))] == alone


class _Counting(ThreadPoolExecutor):
    submits = 0

    def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.submits += 1
        return super().submit(*args, **kwargs)


def test_a_batch_split_over_two_threads_equals_the_whole(models) -> None:
    model = load_artifact(models[0].path, models[0].sha256)
    x = _rows(7)[-(2 * SPLIT_ROWS + 1) :]
    with _Counting(1) as split:
        runner = Runner(model, split, spare=lambda: True)
        first = runner.probabilities(x)  # on one thread: the split's boosters are being made
        split.submit(lambda: None).result()  # they are made
        before = split.submits
        halves = runner.probabilities(x)
        predictions = runner.predict_batch(x)
    assert split.submits == before + 2  # one half each time went to the second thread
    whole = Runner(model).probabilities(x)
    assert np.array_equal(first[0], whole[0])
    assert halves[1] is not None and whole[1] is not None
    assert np.array_equal(halves[0], whole[0]) and np.array_equal(halves[1], whole[1])
    assert predictions == Runner(model).predict_batch(x)


class _Refusing(ThreadPoolExecutor):
    def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        raise AssertionError("nothing should be handed to the second thread")


def test_a_batch_stays_on_one_thread_without_a_core_to_spare(models) -> None:
    model = load_artifact(models[0].path, models[0].sha256)
    x = _rows(7)[-(2 * SPLIT_ROWS) :]
    with _Refusing(1) as split:
        p_up, _ = Runner(model, split, spare=lambda: False).probabilities(x)
    assert np.array_equal(p_up, Runner(model).probabilities(x)[0])


def test_disabled_ml_never_predicts(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    service = _service(db, alerts, SETTINGS.model_copy(update={"enabled": False}))
    assert service.predict("S0", _rows(7)[-1]) is None


def _bar(ts: int, close: float, symbol: str = "S0") -> Bar:
    return Bar(symbol, ts, close, close, close, close, 1000.0, Regime.RANGE)


def test_challenger_is_recorded_beside_the_champion(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    service = _service(db, alerts)
    service.record(_bar(NOW, 100.0), service.predict("S0", _rows(7)[-1]))
    rows = db.conn.execute("SELECT role, model_version FROM predictions ORDER BY role").fetchall()
    assert rows == [("challenger", models[1].version), ("champion", models[0].version)]


def test_a_batch_predicts_what_each_row_predicts_alone(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    service = _service(db, alerts)
    rows = {f"S{i}": row for i, row in enumerate(_rows(7)[-6:])}
    rows["COLD"] = np.full_like(rows["S0"], np.nan)  # not warm yet: left to the rules
    batch = service.predict_batch(rows)
    assert set(batch) == {f"S{i}" for i in range(6)}
    for symbol, p in batch.items():
        alone = service.predict(symbol, rows[symbol])
        assert alone is not None
        assert p.proba_up == pytest.approx(alone.proba_up, abs=1e-12)
        assert p.regime_call == alone.regime_call


def test_the_shadow_is_predicted_off_the_cycle_and_every_row_is_stored(db, alerts, models):
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    service = _service(db, alerts)
    rows = {f"S{i}": row for i, row in enumerate(_rows(7)[-4:])}
    bars = [_bar(NOW, 100.0 + i, symbol) for i, symbol in enumerate(rows)]
    predictions = service.predict_batch(rows)
    assert all(p.shadow is None for p in predictions.values())
    service.record_batch(bars, predictions, rows)
    service.close()  # waits for the shadow thread and stores what it finished
    stored = db.conn.execute(
        "SELECT symbol, role, model_version, proba FROM predictions"
    ).fetchall()
    shadow = {s: p for s, role, v, p in stored if role == "challenger" and v == models[1].version}
    assert {s for s, role, _, _ in stored if role == "champion"} == set(rows)
    assert set(shadow) == set(rows)
    for symbol, row in rows.items():
        alone = service.predict(symbol, row)
        assert alone is not None and alone.shadow is not None
        assert shadow[symbol] == pytest.approx(alone.shadow.proba_up, abs=1e-12)


def test_the_shadow_starts_only_when_the_cycle_hands_it_over(db, alerts, models) -> None:
    # Beside a running cycle the shadow's Python took the GIL back at each of the
    # cycle's SQLite statements; it runs between cycles instead.
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    service = _service(db, alerts)
    rows = {f"S{i}": row for i, row in enumerate(_rows(7)[-4:])}
    bars = [_bar(NOW, 100.0 + i, symbol) for i, symbol in enumerate(rows)]
    service.record_batch(bars, service.predict_batch(rows), rows)
    worker = service._log._shadow
    assert (len(worker._queued), len(worker._pending)) == (1, 0)
    service.start_shadow()
    assert (len(worker._queued), len(worker._pending)) == (0, 1)
    worker._pending[0][1].result(timeout=60)
    later = [_bar(NOW + BAR_MS, 101.0, symbol) for symbol in rows]
    service.record_batch(later, service.predict_batch(rows), rows)  # stores the finished
    roles = db.conn.execute("SELECT role, ts FROM predictions WHERE role = 'challenger'")
    assert {ts for _, ts in roles} == {NOW}
    service.close()


def test_predictions_are_scored_only_once_the_horizon_has_passed(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    service = _service(db, alerts)
    service.record(_bar(NOW, 100.0), service.predict("S0", _rows(7)[-1]))
    horizon = SETTINGS.horizon_bars * BAR_MS
    early = service.score_due(NOW + horizon - 1, {"S0": 101.0})
    on_time = service.score_due(NOW + horizon, {"S0": 101.0})
    outcome = db.conn.execute("SELECT outcome FROM predictions").fetchone()[0]
    assert (early, on_time, outcome) == (0, 1, 1)


def _feed(service: ModelService, rows: np.ndarray) -> None:
    for row in rows:
        service.predict("S0", row)


def _window(seed: int, *, shift: float = 1.0) -> np.ndarray:
    """The live window: the last 200 bars of five symbols, deep into their history so
    the simulator's starting regime does not dominate. `shift` scales every move."""
    history = generate_history([f"S{i}" for i in range(5)], 2_000, seed=seed)
    per_symbol = SETTINGS.drift_window // len(history)
    parts = []
    for frame in history.values():
        log_close = np.log(frame["close"])
        moved = np.exp(log_close.iloc[0] + shift * log_close.diff().fillna(0).cumsum())
        scale = moved / frame["close"]
        for column in ("open", "high", "low", "close"):
            frame[column] = frame[column] * scale
        parts.append(feature_frame(frame).to_numpy()[-per_symbol:])
    return np.vstack(parts)


def test_drift_is_not_flagged_on_fresh_data_from_the_same_market(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    service = _service(db, alerts)
    _feed(service, _window(50))
    report = service.check_drift(NOW)
    features = [r for r in report.drift if r.kind is DriftKind.FEATURE]
    assert len(features) == len(models[0].features)
    assert [r.name for r in features if r.severity] == []


def test_drift_is_flagged_and_alerted_on_a_more_volatile_market(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    service = _service(db, alerts)
    _feed(service, _window(50, shift=3.0))
    report = service.check_drift(NOW)
    flagged = {r.name for r in report.drift if r.severity is Severity.HIGH}
    assert {"vol_20", "bb_width", "ret_1"} <= flagged
    assert any(a[4] == "ml.drift.feature_psi" and a[0] is Severity.HIGH for a in alerts)


def test_every_drift_measurement_is_stored(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    service = _service(db, alerts)
    _feed(service, _window(50))
    report = service.check_drift(NOW)
    stored = db.conn.execute("SELECT COUNT(*) FROM drift WHERE ts = ?", (NOW,)).fetchone()[0]
    assert stored == len(report.drift)


def _insert_scored(db, version: str, role: str, probas, outcomes) -> None:
    """Predictions stored, then scored with the given outcomes: a write of their
    `scored_at`, as the engine's scoring makes (the store sums them as it is made)."""
    db.conn.executemany(
        "INSERT INTO predictions (ts, symbol, model_version, role, proba, ref_price,"
        " horizon_ts) VALUES (?, 'S0', ?, ?, ?, 1, ?)",
        [(NOW + i * BAR_MS, version, role, float(p), NOW) for i, p in enumerate(probas)],
    )
    db.conn.executemany(
        "UPDATE predictions SET outcome = ?, exit_price = 1, scored_at = ?"
        " WHERE model_version = ? AND role = ? AND ts = ?",
        [(int(y), NOW, version, role, NOW + i * BAR_MS) for i, y in enumerate(outcomes)],
    )
    db.conn.commit()


def test_live_accuracy_far_below_training_raises_a_warning(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    outcomes = [i % 2 for i in range(100)]
    probas = [0.8 if y == 0 else 0.2 for y in outcomes[:70]] + [0.8] * 30  # ~15% right
    _insert_scored(db, models[0].version, "champion", probas, outcomes)
    report = _service(db, alerts).check_drift(NOW)
    decay = next(r for r in report.drift if r.kind is DriftKind.ACCURACY)
    assert decay.severity is Severity.WARNING and decay.n == 100


def _challenger_wins(db, champion: str, challenger: str, n: int = 400) -> None:
    rng = np.random.default_rng(3)
    outcomes = rng.integers(0, 2, n)
    _insert_scored(db, champion, "champion", rng.random(n), outcomes)
    _insert_scored(db, challenger, "challenger", np.where(outcomes == 1, 0.9, 0.1), outcomes)


def test_auto_promotion_promotes_a_challenger_that_is_clearly_better(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    _challenger_wins(db, models[0].version, models[1].version)
    service = _service(db, alerts, SETTINGS.model_copy(update={"auto_promote": True}))
    report = service.check_drift(NOW)
    assert report.promoted == models[1].version
    assert service.champion_version == registry.champion(db.conn).version == models[1].version


def test_without_auto_promotion_the_advice_changes_nothing(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    registry.adopt(db, models[1], now=NOW)
    _challenger_wins(db, models[0].version, models[1].version)
    report = _service(db, alerts).check_drift(NOW)
    assert report.advice.promote and report.promoted is None
    assert registry.champion(db.conn).version == models[0].version


def test_advice_waits_for_enough_pairs() -> None:
    y = np.array([1, 0] * 20)
    advice = promotion_advice("a", "b", np.full(40, 0.5), y * 0.9, y, min_samples=100)
    assert not advice.promote and "not enough" in advice.message


def test_advice_does_not_promote_an_equal_challenger() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 2_000)
    p = rng.random(2_000)
    advice = promotion_advice("a", "b", p, p[::-1], y, min_samples=100, horizon_bars=10)
    assert not advice.promote and advice.ci_low < 0 < advice.ci_high


def test_drift_waits_for_a_full_window(db, alerts, models) -> None:
    registry.adopt(db, models[0], now=NOW)
    service = _service(db, alerts)
    _feed(service, _window(50, shift=3.0)[: SETTINGS.drift_window - 1])
    report = service.check_drift(NOW)
    assert [r for r in report.drift if r.kind is not DriftKind.ACCURACY] == []
