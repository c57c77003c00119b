"""Model features: the live row equals the batch frame's row for the same bars."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from engine.domain import Bar
from engine.market.feeds import generate_history
from engine.market.indicators import IncrementalIndicators
from engine.ml.features import FEATURES, WARMUP_BARS, LiveFeatures, _std_tail, feature_frame

# Bollinger's incremental running sums agree with the batch bands to ~1e-9 of the
# price; band position and width are differences of bands, so they keep ~1e-6.
RTOL, ATOL = 1e-6, 1e-10


@pytest.fixture(scope="module")
def bars():
    return generate_history(["SIM-A"], 400, seed=5)["SIM-A"]


def _live_rows(bars) -> np.ndarray:
    live, state, rows = LiveFeatures(), IncrementalIndicators(), []
    for r in bars.itertuples():
        bar = Bar("SIM-A", int(r.ts), r.open, r.high, r.low, r.close, r.volume)
        rows.append(live.update(bar, state.update(bar.high, bar.low, bar.close)))
    return np.vstack(rows)


def test_live_rows_equal_the_batch_frame_bar_by_bar(bars) -> None:
    assert_allclose(_live_rows(bars), feature_frame(bars).to_numpy(), rtol=RTOL, atol=ATOL)


def test_warm_returns_the_last_batch_row(bars) -> None:
    _, _, row = LiveFeatures.warm(bars)
    assert_allclose(row, feature_frame(bars).iloc[-1].to_numpy(), rtol=RTOL, atol=ATOL)


def test_every_feature_has_a_value_from_the_warmup_bar_on(bars) -> None:
    frame = feature_frame(bars)
    assert frame.iloc[WARMUP_BARS - 1 :].notna().all().all()
    assert frame.iloc[WARMUP_BARS - 2].isna().any()


def test_ready_turns_true_exactly_at_warmup(bars) -> None:
    live, state = LiveFeatures(), IncrementalIndicators()
    flags = []
    for r in bars.iloc[: WARMUP_BARS + 1].itertuples():
        bar = Bar("SIM-A", int(r.ts), r.open, r.high, r.low, r.close, r.volume)
        live.update(bar, state.update(r.high, r.low, r.close))
        flags.append(live.ready)
    assert flags.index(True) == WARMUP_BARS - 1


def test_features_do_not_depend_on_the_price_level(bars) -> None:
    scaled = bars.copy()
    for column in ("open", "high", "low", "close"):
        scaled[column] = scaled[column] * 37.0
    assert_allclose(
        feature_frame(scaled).to_numpy(), feature_frame(bars).to_numpy(), rtol=1e-6, atol=1e-9
    )


def test_frame_columns_are_the_feature_list(bars) -> None:
    assert tuple(feature_frame(bars).columns) == FEATURES


@given(
    st.lists(st.floats(-0.5, 0.5, allow_nan=False), min_size=1, max_size=60),
    st.integers(1, 60),
)
def test_the_fast_tail_std_is_the_plain_two_pass(values, window) -> None:
    window = min(window, len(values))
    kept = deque(values, maxlen=60)
    tail = list(kept)[-window:]
    mean = sum(tail) / window
    plain = math.sqrt(sum((x - mean) ** 2 for x in tail) / window)
    assert _std_tail(kept, window) == pytest.approx(plain, rel=1e-12, abs=1e-300)
