"""The backtest's fast path: indicators, feature rows and model predictions computed
for the whole run in one pass equal what the Trader computes bar by bar live, and a
run gives the same trades every time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from engine.backtest.model import BatchModel, ModelError, load_model
from engine.backtest.precomputed import (
    PrecomputeMismatch,
    accepted,
    precompute,
)
from engine.backtest.run import BacktestConfig, BacktestError, run_backtest
from engine.config import load_settings
from engine.domain import Bar
from engine.market.feeds import BarValidator, generate_history
from engine.market.indicators import SNAPSHOT_FIELDS, IncrementalIndicators
from engine.ml import registry
from engine.ml.features import LiveFeatures
from engine.ml.service import Runner
from engine.ml.train import TrainedModel
from store.db import open_writer

# Batch and incremental indicators agree to rounding (tests/test_indicators.py);
# Bollinger-based features keep ~1e-6 (tests/test_ml_features.py).
SNAP_RTOL, FEATURE_RTOL, FEATURE_ATOL = 1e-9, 1e-6, 1e-10


def _bars(symbol: str, n: int, seed: int = 3) -> list[Bar]:
    frame = generate_history([symbol], n, seed=seed, bar_ms=3_600_000)[symbol]
    return [
        Bar(symbol, int(r.ts), r.open, r.high, r.low, r.close, r.volume) for r in frame.itertuples()
    ]


def _live(history: list[Bar], traded: list[Bar]) -> tuple[list, list]:
    """What the Trader does: warm on the history, then one update per accepted bar."""
    ind, features = IncrementalIndicators(), LiveFeatures()
    for bar in history:
        features.update(bar, ind.update(bar.high, bar.low, bar.close))
    snaps, rows = [], []
    for bar in traded:
        snap = ind.update(bar.high, bar.low, bar.close)
        snaps.append(snap)
        rows.append(features.update(bar, snap))
    return snaps, rows


def test_precomputed_snapshots_and_rows_equal_the_incremental_ones() -> None:
    bars = _bars("AAA", 700)
    history, traded = bars[:150], bars[150:]
    series = precompute({"AAA": history}, {"AAA": traded})["AAA"]
    indicators, features = series.indicators(), series.live_features()
    fast = [indicators.update(b.high, b.low, b.close) for b in traded]
    rows = [features.update(b, s) for b, s in zip(traded, fast, strict=True)]
    live_snaps, live_rows = _live(history, traded)
    for name in SNAPSHOT_FIELDS:
        got = np.array([getattr(s, name) for s in fast], dtype=float)
        want = np.array([getattr(s, name) for s in live_snaps], dtype=float)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        assert_allclose(got, want, rtol=SNAP_RTOL, equal_nan=True, err_msg=name)
    assert_allclose(np.vstack(rows), np.vstack(live_rows), rtol=FEATURE_RTOL, atol=FEATURE_ATOL)
    assert features.ready and indicators.bars == len(bars) and indicators.last == fast[-1]


def test_the_series_leaves_out_the_bars_the_validator_rejects() -> None:
    bars = _bars("AAA", 300)
    bad = replace(bars[200], close=bars[200].close * 50, high=bars[200].close * 50)
    traded = [*bars[100:200], bad, *bars[201:]]
    validator = BarValidator(bar_ms=3_600_000)
    validator.seed(bars[:100])
    kept = accepted(validator, {"AAA": traded})["AAA"]
    assert bad not in kept and len(kept) == len(traded) - 1
    assert validator.check(traded[0]) is None  # the Trader's own validator is untouched
    series = precompute({"AAA": bars[:100]}, {"AAA": kept})["AAA"]
    live_snaps, _ = _live(bars[:100], kept)
    indicators = series.indicators()
    fast = [indicators.update(b.high, b.low, b.close) for b in kept]
    assert_allclose([s.rsi for s in fast], [s.rsi for s in live_snaps], rtol=SNAP_RTOL)


def test_a_bar_out_of_step_with_the_series_stops_the_run() -> None:
    bars = _bars("AAA", 120)
    indicators = precompute({}, {"AAA": bars})["AAA"].indicators()
    indicators.update(bars[0].high, bars[0].low, bars[0].close)
    with pytest.raises(PrecomputeMismatch, match="not the next precomputed bar"):
        indicators.update(bars[2].high, bars[2].low, bars[2].close)


def _trades(result) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [tuple(t.values()) for t in result.trades]


def test_the_same_run_gives_the_same_trades_twice() -> None:
    cfg = BacktestConfig(sim_bars=1_200, symbols=("SIMA", "SIMB"), bar_interval="1h")
    first = run_backtest(load_settings(), cfg)
    second = run_backtest(load_settings(), cfg)
    assert first.trades, "the regime strategy should trade on 1,200 simulated hours"
    assert _trades(first) == _trades(second)
    assert [e["equity"] for e in first.equity] == [e["equity"] for e in second.equity]


@pytest.fixture
def trained(champion_in: Callable[[Path], TrainedModel], tmp_path: Path) -> TrainedModel:
    return champion_in(tmp_path / "models")


def test_batch_predictions_equal_the_live_runners_row_by_row(trained: TrainedModel) -> None:
    model = load_model(str(trained.path), None)
    bars = _bars("AAA", 400)
    series = precompute({}, {"AAA": bars})["AAA"]
    cursor = series.live_features()
    batch = BatchModel(model, {"AAA": series.features}, {"AAA": cursor})
    live = Runner(model)
    got = 0
    for bar in bars:
        row = cursor.update(bar, series.snapshots[cursor.at + 1])
        prediction = batch.predict_batch({"AAA": row}).get("AAA")
        if not np.isfinite(row).all():
            assert prediction is None  # not warm: the rules trade alone, as live
            continue
        assert prediction == live.predict(row.reshape(1, -1))
        got += 1
    assert got > 200


def test_a_backtest_trades_on_the_model_with_the_regime_strategy(
    trained: TrainedModel, tmp_path: Path
) -> None:
    db = open_writer(tmp_path / "cockpit.db")
    registry.adopt(db, trained, now=1_767_225_600_000)
    db.conn.commit()
    db.conn.close()
    settings = load_settings(ml={"override_confidence": 0.5})
    cfg = BacktestConfig(
        sim_bars=800,
        symbols=("SIMA",),
        bar_interval="1h",
        model="champion",
        model_db=str(tmp_path / "cockpit.db"),
    )
    with_model = run_backtest(settings, cfg)
    sources = {regime for _, _, regime in with_model.regimes}
    assert sources  # the run recorded its regime calls
    again = run_backtest(settings, cfg)
    assert _trades(with_model) == _trades(again)
    rules_only = run_backtest(settings, replace(cfg, model=None))
    calls = [r for _, _, r in with_model.regimes]
    assert calls != [r for _, _, r in rules_only.regimes], "the model changes regime calls"


def test_a_model_that_cannot_be_used_is_one_clear_error(tmp_path: Path) -> None:
    cfg = BacktestConfig(sim_bars=100, symbols=("SIMA",), model=str(tmp_path / "nope.json"))
    with pytest.raises(BacktestError, match=r"nope\.json"):
        run_backtest(load_settings(), cfg)
    with pytest.raises(ModelError, match="no champion"):
        open_writer(tmp_path / "empty.db").conn.close()
        load_model("champion", tmp_path / "empty.db")
