import math

import numpy as np
import pandas as pd
import pytest
import talib
from numpy.testing import assert_allclose

from engine.market import indicators as ind

SEEDS = (0, 1, 2)
LENGTHS = (10, 40, 250, 1500)


def walk(seed: int, n: int, start: float = 100.0) -> pd.DataFrame:
    """A geometric random walk with bars whose high and low contain open and close."""
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[start], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.005, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    index = pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC")
    return pd.DataFrame({"high": high, "low": low, "close": close}, index=index)


def same(actual: pd.Series, expected: np.ndarray) -> None:
    actual_values = actual.to_numpy(dtype=float)
    expected = np.asarray(expected, dtype=float)
    np.testing.assert_array_equal(np.isnan(actual_values), np.isnan(expected))
    assert_allclose(actual_values, expected, rtol=1e-9, atol=0, equal_nan=True)


cases = pytest.mark.parametrize(("seed", "n"), [(s, n) for s in SEEDS for n in LENGTHS])


@cases
@pytest.mark.parametrize("period", [2, 20, 30])
def test_sma_matches_talib(seed, n, period):
    close = walk(seed, n).close
    same(ind.sma(close, period), talib.SMA(close.to_numpy(), period))


@cases
@pytest.mark.parametrize("period", [2, 12, 30])
def test_ema_matches_talib(seed, n, period):
    close = walk(seed, n).close
    same(ind.ema(close, period), talib.EMA(close.to_numpy(), period))


@cases
def test_rsi_matches_talib(seed, n):
    close = walk(seed, n).close
    same(ind.rsi(close), talib.RSI(close.to_numpy()))


@cases
def test_atr_matches_talib(seed, n):
    b = walk(seed, n)
    same(ind.atr(b.high, b.low, b.close), talib.ATR(*b.to_numpy().T))


@cases
def test_adx_matches_talib(seed, n):
    b = walk(seed, n)
    same(ind.adx(b.high, b.low, b.close), talib.ADX(*b.to_numpy().T))


@cases
def test_plus_di_matches_talib(seed, n):
    b = walk(seed, n)
    same(ind.plus_di(b.high, b.low, b.close), talib.PLUS_DI(*b.to_numpy().T))


@cases
def test_minus_di_matches_talib(seed, n):
    b = walk(seed, n)
    same(ind.minus_di(b.high, b.low, b.close), talib.MINUS_DI(*b.to_numpy().T))


@cases
def test_bollinger_matches_talib(seed, n):
    close = walk(seed, n).close
    upper, middle, lower = talib.BBANDS(close.to_numpy(), 20, 2.0, 2.0, 0)
    bands = ind.bollinger(close)
    same(bands["upper"], upper)
    same(bands["middle"], middle)
    same(bands["lower"], lower)


@cases
def test_macd_matches_talib_including_its_late_fast_seed(seed, n):
    close = walk(seed, n).close
    line, signal, hist = talib.MACD(close.to_numpy(), 12, 26, 9)
    out = ind.macd(close)
    same(out["macd"], line)
    same(out["signal"], signal)
    same(out["hist"], hist)


def test_macd_with_other_periods_matches_talib():
    close = walk(5, 300).close
    line, signal, hist = talib.MACD(close.to_numpy(), 5, 35, 5)
    out = ind.macd(close, 5, 35, 5)
    same(out["macd"], line)
    same(out["signal"], signal)
    same(out["hist"], hist)


def flat_stretch() -> pd.DataFrame:
    """Bars that do not move (high == low == close): TA-Lib's zero guards decide the values."""
    b = walk(7, 200)
    b.iloc[:40] = b.iloc[40].to_numpy()
    b.iloc[100:150] = b.iloc[99].to_numpy()
    return b


def test_flat_stretch_rsi_matches_talib():
    b = flat_stretch()
    same(ind.rsi(b.close), talib.RSI(b.close.to_numpy()))


def test_flat_stretch_directional_system_matches_talib():
    b = flat_stretch()
    h, lo, c = b.to_numpy().T
    same(ind.adx(b.high, b.low, b.close), talib.ADX(h, lo, c))
    same(ind.plus_di(b.high, b.low, b.close), talib.PLUS_DI(h, lo, c))
    same(ind.minus_di(b.high, b.low, b.close), talib.MINUS_DI(h, lo, c))


def test_flat_stretch_bollinger_collapses_to_the_middle_like_talib():
    close = flat_stretch().close
    upper, _, lower = talib.BBANDS(close.to_numpy(), 20, 2.0, 2.0, 0)
    bands = ind.bollinger(close)
    same(bands["upper"], upper)
    same(bands["lower"], lower)


def test_leading_nans_are_skipped_like_talib():
    b = walk(3, 120)
    b.iloc[:5, :] = np.nan
    h, lo, c = b.to_numpy().T
    same(ind.ema(b.close, 10), talib.EMA(c, 10))
    same(ind.rsi(b.close), talib.RSI(c))
    same(ind.adx(b.high, b.low, b.close), talib.ADX(h, lo, c))
    same(ind.macd(b.close)["signal"], talib.MACD(c)[1])


def test_output_keeps_the_input_index():
    b = walk(0, 60)
    assert ind.atr(b.high, b.low, b.close).index.equals(b.index)
    assert ind.bollinger(b.close).index.equals(b.index)
    assert ind.macd(b.close).index.equals(b.index)


def test_mismatched_indexes_are_refused():
    b = walk(0, 60)
    with pytest.raises(ValueError, match="one index"):
        ind.atr(b.high, b.low, b.close.reset_index(drop=True))


def test_period_below_two_is_refused():
    with pytest.raises(ValueError, match="period"):
        ind.rsi(walk(0, 60).close, 1)


def test_macd_slow_must_be_longer_than_fast():
    with pytest.raises(ValueError, match="slow"):
        ind.macd(walk(0, 60).close, fast=26, slow=12)


# --- incremental -------------------------------------------------------------------


def batch_frame(b: pd.DataFrame) -> pd.DataFrame:
    h, lo, c = b.high, b.low, b.close
    bands, m = ind.bollinger(c), ind.macd(c)
    atr = ind.atr(h, lo, c)
    return pd.DataFrame(
        {
            "close": c,
            "sma_fast": ind.sma(c, 20),
            "sma_slow": ind.sma(c, 50),
            "ema_fast": ind.ema(c, 12),
            "ema_slow": ind.ema(c, 26),
            "rsi": ind.rsi(c),
            "atr": atr,
            "atr_pct": atr / c,
            "adx": ind.adx(h, lo, c),
            "plus_di": ind.plus_di(h, lo, c),
            "minus_di": ind.minus_di(h, lo, c),
            "bb_upper": bands["upper"],
            "bb_middle": bands["middle"],
            "bb_lower": bands["lower"],
            "macd": m["macd"],
            "macd_signal": m["signal"],
            "macd_hist": m["hist"],
            "ret_1": c / c.shift(1) - 1,
            "bars": np.arange(1, len(c) + 1, dtype=float),
        }
    )


def feed(state: ind.IncrementalIndicators, b: pd.DataFrame) -> pd.DataFrame:
    snaps = [state.update(h, lo, c) for h, lo, c in b.itertuples(index=False)]
    return pd.DataFrame([[getattr(s, f) for f in ind.SNAPSHOT_FIELDS] for s in snaps])


@pytest.mark.parametrize("seed", SEEDS)
def test_incremental_equals_batch_at_every_bar(seed):
    b = walk(seed, 600)
    got = feed(ind.IncrementalIndicators(), b)
    got.columns = list(ind.SNAPSHOT_FIELDS)
    expected = batch_frame(b)
    for name in ind.SNAPSHOT_FIELDS:
        values = got[name].to_numpy(dtype=float)
        want = expected[name].to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isnan(values), np.isnan(want), err_msg=name)
        assert_allclose(values, want, rtol=1e-9, atol=0, equal_nan=True, err_msg=name)


def test_incremental_equals_batch_through_a_flat_stretch():
    b = flat_stretch()
    got = feed(ind.IncrementalIndicators(), b)
    got.columns = list(ind.SNAPSHOT_FIELDS)
    expected = batch_frame(b)
    for name in ("rsi", "adx", "plus_di", "minus_di", "bb_upper"):
        assert_allclose(got[name], expected[name].to_numpy(), rtol=1e-9, equal_nan=True)


def test_warm_rebuilds_the_same_state_as_live_updates():
    b = walk(4, 400)
    live = ind.IncrementalIndicators()
    for h, lo, c in b.iloc[:300].itertuples(index=False):
        live.update(h, lo, c)
    restarted = ind.IncrementalIndicators.warm(b.iloc[:300])
    assert restarted.last == live.last
    nxt = b.iloc[300]
    assert restarted.update(nxt.high, nxt.low, nxt.close) == live.update(
        nxt.high, nxt.low, nxt.close
    )


def test_warm_on_no_bars_gives_an_empty_state():
    state = ind.IncrementalIndicators.warm(walk(0, 0))
    assert state.bars == 0 and state.last is None


def test_first_snapshot_has_only_the_close():
    snap = ind.IncrementalIndicators().update(101.0, 99.0, 100.0)
    assert snap.close == 100.0 and snap.bars == 1
    others = [getattr(snap, f) for f in ind.SNAPSHOT_FIELDS if f not in ("close", "bars")]
    assert all(math.isnan(v) for v in others)


@pytest.mark.parametrize(
    "bar", [(math.nan, 99.0, 100.0), (101.0, math.inf, 100.0), (101.0, 99.0, 0.0)]
)
def test_bad_bar_is_refused_and_leaves_state_untouched(bar):
    b = walk(1, 40)
    state = ind.IncrementalIndicators.warm(b)
    before = state.last
    with pytest.raises(ValueError, match="bad bar"):
        state.update(*bar)
    assert state.bars == 40 and state.last is before
