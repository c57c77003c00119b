import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.decide.regime import RegimeCall, RegimeParams, Source, classify, combine, score
from engine.domain import Regime
from engine.market.indicators import IncrementalIndicators, Snapshot

R = Regime
NAN = math.nan


def snap(**values: float) -> Snapshot:
    """A calm, directionless market unless told otherwise."""
    base: dict[str, float] = {
        "close": 100.0,
        "sma_fast": 100.0,
        "sma_slow": 100.0,
        "ema_fast": 100.0,
        "ema_slow": 100.0,
        "rsi": 50.0,
        "atr": 0.15,
        "atr_pct": 0.0015,
        "adx": 15.0,
        "plus_di": 20.0,
        "minus_di": 20.0,
        "bb_upper": 103.0,
        "bb_middle": 100.0,
        "bb_lower": 97.0,
        "macd": 0.0,
        "macd_signal": 0.0,
        "macd_hist": 0.0,
        "ret_1": 0.0,
    }
    base.update(values)
    return Snapshot(**base, bars=200)


UP = {"adx": 32.0, "plus_di": 30.0, "minus_di": 12.0, "rsi": 60.0}
DOWN = {"adx": 32.0, "plus_di": 12.0, "minus_di": 30.0, "rsi": 40.0}


def test_calm_market_is_a_range():
    assert classify(snap(), None).regime is R.RANGE


def test_high_atr_pct_is_high_vol_even_with_a_trend():
    assert classify(snap(atr_pct=0.005, **UP), None).regime is R.HIGH_VOL


def test_atr_pct_exactly_at_the_threshold_is_not_high_vol():
    assert classify(snap(atr_pct=RegimeParams().high_vol_atr_pct), None).regime is R.RANGE


def test_high_vol_holds_until_atr_pct_falls_below_the_exit_threshold():
    previous = RegimeCall(R.HIGH_VOL, 0.8)
    assert classify(snap(atr_pct=0.0027), previous).regime is R.HIGH_VOL
    assert classify(snap(atr_pct=0.0027), None).regime is R.RANGE


def test_high_vol_confidence_grows_with_atr_pct():
    mild = classify(snap(atr_pct=0.0035), None).confidence
    wild = classify(snap(atr_pct=0.007), None).confidence
    assert 0.5 <= mild < wild == 1.0


def test_strong_adx_with_plus_di_on_top_is_trend_up():
    assert classify(snap(**UP), None).regime is R.TREND_UP


def test_strong_adx_with_minus_di_on_top_is_trend_down():
    assert classify(snap(**DOWN), None).regime is R.TREND_DOWN


def test_adx_exactly_at_the_threshold_is_not_a_trend():
    values = {**UP, "adx": RegimeParams().adx_trend}
    assert classify(snap(**values), None).regime is R.RANGE


def test_trend_holds_while_adx_stays_above_the_exit_threshold():
    values = {**UP, "adx": 22.0}
    assert classify(snap(**values), RegimeCall(R.TREND_UP, 0.7)).regime is R.TREND_UP
    assert classify(snap(**values), None).regime is R.RANGE


def test_hysteresis_does_not_carry_over_to_the_opposite_trend():
    values = {**DOWN, "adx": 22.0}
    assert classify(snap(**values), RegimeCall(R.TREND_UP, 0.7)).regime is R.RANGE


def test_di_lines_too_close_is_a_range_despite_high_adx():
    assert classify(snap(adx=35.0, plus_di=21.0, minus_di=20.0), None).regime is R.RANGE


def test_rsi_confluence_raises_trend_confidence():
    agreeing = classify(snap(**{**UP, "rsi": 65.0}), None)
    disagreeing = classify(snap(**{**UP, "rsi": 42.0}), None)
    assert agreeing.regime is disagreeing.regime is R.TREND_UP
    assert agreeing.confidence > disagreeing.confidence


def test_stronger_adx_raises_trend_confidence():
    weak = classify(snap(**{**UP, "adx": 27.0}), None).confidence
    strong = classify(snap(**{**UP, "adx": 44.0}), None).confidence
    assert strong > weak


def test_range_is_surest_with_flat_adx_and_neutral_rsi():
    sure = classify(snap(adx=10.0, rsi=50.0), None)
    unsure = classify(snap(adx=24.0, rsi=64.0), None)
    assert sure.confidence == 1.0 and unsure.confidence < 0.5


@given(
    adx=st.floats(0, 100),
    plus=st.floats(0, 100),
    minus=st.floats(0, 100),
    atr_pct=st.floats(0, 0.1),
    rsi=st.floats(0, 100),
)
def test_confidence_is_always_within_zero_and_one(adx, plus, minus, atr_pct, rsi):
    call = classify(snap(adx=adx, plus_di=plus, minus_di=minus, atr_pct=atr_pct, rsi=rsi), None)
    assert 0.0 <= call.confidence <= 1.0


def test_call_carries_its_features():
    call = classify(snap(**UP), None)
    assert call.features == {
        "adx": 32.0,
        "plus_di": 30.0,
        "minus_di": 12.0,
        "atr_pct": 0.0015,
        "rsi": 60.0,
    }
    assert call.source is Source.RULES and call.model_version is None


def test_missing_input_without_history_is_range_with_no_confidence():
    call = classify(snap(adx=NAN), None)
    assert (call.regime, call.confidence) == (R.RANGE, 0.0)


def test_missing_input_keeps_the_previous_call_with_decayed_confidence():
    previous = classify(snap(**UP), None)
    held = classify(snap(adx=NAN), previous)
    assert held.regime is R.TREND_UP
    assert held.confidence == pytest.approx(previous.confidence * 0.9)
    assert held.features == previous.features
    assert "adx" in held.reason


def test_missing_atr_pct_keeps_the_previous_call():
    previous = RegimeCall(R.TREND_DOWN, 0.6)
    assert classify(snap(atr_pct=NAN), previous).regime is R.TREND_DOWN


def test_high_vol_is_called_even_while_adx_warms_up():
    assert classify(snap(atr_pct=0.006, adx=NAN), None).regime is R.HIGH_VOL


def test_inconsistent_params_are_refused():
    with pytest.raises(ValueError, match="adx"):
        RegimeParams(adx_trend=18.0, adx_exit=20.0)


# --- combine -----------------------------------------------------------------------

RULES = RegimeCall(R.RANGE, 0.6)
ML = RegimeCall(R.TREND_UP, 0.7, source=Source.ML, model_version="lgbm-3")


def test_ml_overrides_at_the_threshold():
    assert combine(RULES, ML, 0.7) is ML


def test_ml_below_the_threshold_leaves_the_rules():
    assert combine(RULES, replace(ML, confidence=0.69), 0.7) is RULES


def test_no_ml_call_leaves_the_rules():
    assert combine(RULES, None, 0.7) is RULES


def test_threshold_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        combine(RULES, ML, 1.5)


# --- score -------------------------------------------------------------------------


def test_score_counts_accuracy_and_confusion():
    s = score(
        [R.TREND_UP, R.RANGE, R.RANGE, R.HIGH_VOL], [R.TREND_UP, R.RANGE, R.TREND_UP, R.HIGH_VOL]
    )
    assert s.n == 4 and s.accuracy == 0.75
    assert s.confusion[R.TREND_UP][R.RANGE] == 1
    assert s.precision[R.RANGE] == 0.5 and s.recall[R.TREND_UP] == 0.5


def test_crash_truth_counts_as_high_vol():
    s = score([R.HIGH_VOL, R.RANGE], [R.CRASH, R.CRASH])
    assert s.accuracy == 0.5 and s.confusion[R.HIGH_VOL][R.HIGH_VOL] == 1


def test_regime_never_predicted_has_undefined_precision():
    s = score([R.RANGE, R.RANGE], [R.RANGE, R.TREND_DOWN])
    assert math.isnan(s.precision[R.TREND_DOWN]) and s.recall[R.TREND_DOWN] == 0.0


def test_empty_score_has_undefined_accuracy():
    assert math.isnan(score([], []).accuracy)


def test_score_refuses_sequences_of_different_length():
    with pytest.raises(ValueError, match="predictions"):
        score([R.RANGE], [])


# --- on synthetic markets ----------------------------------------------------------

# Per-bar log drift and volatility of one-minute bars; RANGE pulls back to where it began.
SPEC = {
    R.TREND_UP: (0.0004, 0.001),
    R.TREND_DOWN: (-0.0004, 0.0012),
    R.RANGE: (0.0, 0.0007),
    R.HIGH_VOL: (0.0, 0.0028),
    R.CRASH: (-0.0035, 0.005),
}
SEGMENTS = [
    (R.RANGE, 150),
    (R.TREND_UP, 150),
    (R.HIGH_VOL, 100),
    (R.TREND_DOWN, 150),
    (R.RANGE, 150),
    (R.CRASH, 30),
    (R.TREND_UP, 150),
    (R.RANGE, 120),
]


def regime_market(seed: int) -> tuple[np.ndarray, list[Regime]]:
    """(high, low, close) rows and the true regime of each bar."""
    rng = np.random.default_rng(seed)
    logp = math.log(100.0)
    rows, truth = [], []
    for regime, length in SEGMENTS:
        mu, sigma = SPEC[regime]
        anchor = logp
        for _ in range(length):
            drift = -0.1 * (logp - anchor) if regime is R.RANGE else mu
            before, logp = logp, logp + drift + sigma * rng.standard_normal()
            high = max(before, logp) + abs(rng.normal(0, sigma / 2))
            low = min(before, logp) - abs(rng.normal(0, sigma / 2))
            rows.append((math.exp(high), math.exp(low), math.exp(logp)))
            truth.append(regime)
    return np.array(rows), truth


def settled_bars(lag: int = 20, warmup: int = 60) -> list[int]:
    """Bars far enough into their segment that lagging indicators could know it."""
    keep, start = [], 0
    for _, length in SEGMENTS:
        keep.extend(i for i in range(start + lag, start + length) if i >= warmup)
        start += length
    return keep


def test_rules_recognise_synthetic_regimes():
    predicted, truth = [], []
    for seed in (11, 12, 13):
        bars, true_regimes = regime_market(seed)
        state, call, calls = IncrementalIndicators(), None, []
        for high, low, close in bars:
            call = classify(state.update(high, low, close), call)
            calls.append(call.regime)
        for i in settled_bars():
            predicted.append(calls[i])
            truth.append(true_regimes[i])
    result = score(predicted, truth)
    assert result.accuracy > 0.75
    assert all(result.recall[r] > 0.6 for r in (R.TREND_UP, R.TREND_DOWN, R.RANGE, R.HIGH_VOL))
