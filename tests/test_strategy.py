import math

import numpy as np
import pytest

from engine.decide.exits import protective_exit
from engine.decide.regime import RegimeCall, classify
from engine.decide.strategy import RegimeStrategy, StrategyInput, StrategyParams
from engine.domain import OrderType, Position, Purpose, Regime, Side
from engine.market.indicators import IncrementalIndicators, Snapshot

R = Regime
NAN = math.nan
EQUITY = 100_000.0


def snap(**values: float) -> Snapshot:
    """Price 100, ATR 2, bands 96/100/104, no momentum, unless told otherwise."""
    base: dict[str, float] = {
        "close": 100.0,
        "sma_fast": 100.0,
        "sma_slow": 100.0,
        "ema_fast": 100.0,
        "ema_slow": 100.0,
        "rsi": 50.0,
        "atr": 2.0,
        "atr_pct": 0.02,
        "adx": 30.0,
        "plus_di": 25.0,
        "minus_di": 15.0,
        "bb_upper": 104.0,
        "bb_middle": 100.0,
        "bb_lower": 96.0,
        "macd": 0.0,
        "macd_signal": 0.0,
        "macd_hist": 0.0,
        "ret_1": 0.0,
    }
    base.update(values)
    return Snapshot(**base, bars=200)


RISING = {"close": 101.0, "ema_fast": 100.0, "macd_hist": 0.3}
FALLING = {"close": 99.0, "ema_fast": 100.0, "macd_hist": -0.3}
OVERSOLD = {"close": 95.5, "rsi": 27.0}
OVERBOUGHT = {"close": 104.5, "rsi": 73.0}


def ctx(
    regime: Regime,
    confidence: float = 0.7,
    position: Position | None = None,
    equity: float = EQUITY,
    proba: float | None = None,
    **values: float,
) -> StrategyInput:
    return StrategyInput(
        symbol="AAA",
        now=1_700_000_000_000,
        snap=snap(**values),
        regime=RegimeCall(regime, confidence),
        position=position,
        equity=equity,
        model_proba=proba,
        model_version="m-1" if proba is not None else None,
    )


def decide(context: StrategyInput, **params: object) -> list:
    return RegimeStrategy(StrategyParams(**params)).decide(context)


def only(intents: list):
    assert len(intents) == 1
    return intents[0]


# --- entries -----------------------------------------------------------------------


def test_trend_up_with_momentum_buys_with_atr_stop_and_target():
    intent = only(decide(ctx(R.TREND_UP, **RISING)))
    assert (intent.side, intent.purpose, intent.order_type) == (
        Side.BUY,
        Purpose.ENTRY,
        OrderType.MARKET,
    )
    assert intent.stop_loss == pytest.approx(101.0 - 4.0)
    assert intent.take_profit == pytest.approx(101.0 + 10.0)


def test_entry_is_sized_by_fixed_fractional_risk():
    intent = only(decide(ctx(R.TREND_UP, **RISING), max_notional_fraction=None))
    assert intent.qty == math.floor(EQUITY * 0.01 / 4.0) == 250
    assert intent.sizing == {
        "method": "fixed_fractional",
        "risk_per_trade": 0.01,
        "stop_distance": 4.0,
        "equity": EQUITY,
    }


def test_default_target_passes_a_reward_to_risk_check_of_two():
    intent = only(decide(ctx(R.TREND_UP, **RISING)))
    close = 101.0
    assert (intent.take_profit - close) / (close - intent.stop_loss) >= 2.0


def test_trend_up_without_price_above_the_fast_ema_stays_out():
    assert decide(ctx(R.TREND_UP, close=99.5, ema_fast=100.0, macd_hist=0.3)) == []


def test_trend_up_with_a_falling_macd_histogram_stays_out():
    assert decide(ctx(R.TREND_UP, close=101.0, ema_fast=100.0, macd_hist=-0.1)) == []


def test_trend_down_with_momentum_sells_short_with_stop_above():
    intent = only(decide(ctx(R.TREND_DOWN, **FALLING)))
    assert intent.side is Side.SELL and intent.purpose is Purpose.ENTRY
    assert intent.stop_loss == pytest.approx(103.0)
    assert intent.take_profit == pytest.approx(89.0)


def test_shorts_can_be_switched_off():
    assert decide(ctx(R.TREND_DOWN, **FALLING), allow_short=False) == []


def test_range_oversold_at_the_lower_band_buys():
    intent = only(decide(ctx(R.RANGE, **OVERSOLD)))
    assert intent.side is Side.BUY and "middle band" in intent.reason


def test_range_overbought_at_the_upper_band_sells():
    assert only(decide(ctx(R.RANGE, **OVERBOUGHT))).side is Side.SELL


def test_range_close_exactly_on_the_lower_band_is_an_extreme():
    assert only(decide(ctx(R.RANGE, close=96.0, rsi=40.0))).side is Side.BUY


def test_range_inside_the_bands_with_neutral_rsi_stays_out():
    assert decide(ctx(R.RANGE, close=97.0, rsi=40.0)) == []


@pytest.mark.parametrize("regime", [R.HIGH_VOL, R.CRASH])
def test_no_entries_in_high_volatility(regime):
    assert decide(ctx(regime, **OVERSOLD)) == []


def test_low_regime_confidence_stays_out():
    assert decide(ctx(R.TREND_UP, confidence=0.2, **RISING)) == []


def test_no_entry_when_risk_buys_less_than_one_share():
    assert decide(ctx(R.TREND_UP, equity=300.0, **RISING), max_notional_fraction=None) == []


def test_no_entry_without_an_atr():
    assert decide(ctx(R.TREND_UP, atr=NAN, **RISING)) == []


def test_no_entry_when_the_stop_would_be_below_zero():
    assert decide(ctx(R.TREND_UP, close=3.0, ema_fast=2.0, macd_hist=0.1, atr=2.0)) == []


def test_default_notional_cap_limits_quantity_and_says_so():
    intent = only(decide(ctx(R.TREND_UP, **RISING)))
    assert intent.qty == math.floor(EQUITY * 0.2 / 101.0)
    assert intent.sizing["capped_by"] == "max_notional_fraction"


def test_entry_strength_is_within_zero_and_one_and_reason_says_why():
    intent = only(decide(ctx(R.TREND_UP, confidence=1.0, close=150.0, macd_hist=5.0)))
    assert 0.0 <= intent.strength <= 1.0
    assert "trend up" in intent.reason and "EMA12" in intent.reason


# --- model probability -------------------------------------------------------------


def test_model_must_back_a_long_by_the_margin():
    assert decide(ctx(R.TREND_UP, proba=0.54, **RISING)) == []
    assert only(decide(ctx(R.TREND_UP, proba=0.55, **RISING))).side is Side.BUY


def test_model_must_back_a_short_by_the_margin():
    assert decide(ctx(R.TREND_DOWN, proba=0.46, **FALLING)) == []
    assert only(decide(ctx(R.TREND_DOWN, proba=0.45, **FALLING))).side is Side.SELL


def test_confident_model_strengthens_the_entry():
    plain = only(decide(ctx(R.TREND_UP, **RISING))).strength
    backed = only(decide(ctx(R.TREND_UP, proba=0.8, **RISING)))
    assert backed.strength > plain
    assert backed.model_version == "m-1" and "p(up)=0.80" in backed.reason


# --- positions and exits -----------------------------------------------------------

LONG = Position("AAA", 250.0, 98.0, stop=94.0, target=108.0)
SHORT = Position("AAA", -250.0, 102.0, stop=106.0, target=92.0)


def test_already_long_does_not_buy_again():
    assert decide(ctx(R.TREND_UP, position=LONG, **RISING)) == []


def test_trend_turning_down_exits_a_long_in_full():
    intent = only(decide(ctx(R.TREND_DOWN, position=LONG, **FALLING)))
    assert (intent.side, intent.qty, intent.purpose) == (Side.SELL, 250.0, Purpose.EXIT)
    assert "against the long" in intent.reason


def test_trend_turning_up_exits_a_short():
    intent = only(decide(ctx(R.TREND_UP, position=SHORT, **RISING)))
    assert (intent.side, intent.purpose) == (Side.BUY, Purpose.EXIT)


def test_reversal_sends_the_exit_alone():
    intents = decide(ctx(R.TREND_DOWN, position=LONG, **FALLING))
    assert [i.purpose for i in intents] == [Purpose.EXIT]


def test_regime_exit_needs_no_confidence():
    intent = only(decide(ctx(R.TREND_DOWN, confidence=0.1, position=LONG, **FALLING)))
    assert intent.purpose is Purpose.EXIT


def test_range_long_exits_when_close_reaches_the_middle_band():
    intent = only(decide(ctx(R.RANGE, position=LONG, close=100.0)))
    assert intent.purpose is Purpose.EXIT and "middle band" in intent.reason


def test_range_long_below_the_middle_band_is_held():
    assert decide(ctx(R.RANGE, position=LONG, close=99.9)) == []


def test_range_short_exits_when_close_reaches_the_middle_band():
    intent = only(decide(ctx(R.RANGE, position=SHORT, close=100.0)))
    assert (intent.side, intent.purpose) == (Side.BUY, Purpose.EXIT)


def test_high_volatility_steps_aside_from_a_position():
    assert only(decide(ctx(R.HIGH_VOL, position=LONG))).purpose is Purpose.EXIT


def test_high_volatility_exit_can_be_switched_off():
    assert decide(ctx(R.HIGH_VOL, position=LONG), exit_on_high_vol=False) == []


def test_zero_quantity_position_counts_as_flat():
    flat = Position("AAA", 0.0, 100.0)
    assert only(decide(ctx(R.TREND_UP, position=flat, **RISING))).purpose is Purpose.ENTRY


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="risk_per_trade"):
        StrategyParams(risk_per_trade=1.5)


# --- on a regime-switching market --------------------------------------------------

# Regime, bars, per-bar log drift and volatility of one-minute bars.
SEGMENTS = [
    (R.RANGE, 100, 0.0, 0.0007),
    (R.TREND_UP, 100, 0.0004, 0.001),
    (R.HIGH_VOL, 60, 0.0, 0.0028),
    (R.TREND_DOWN, 100, -0.0004, 0.0012),
    (R.RANGE, 140, 0.0, 0.0007),
]


def market(seed: int) -> list[tuple[float, float, float]]:
    """(high, low, close) per bar; RANGE segments pull back to where they began."""
    rng = np.random.default_rng(seed)
    logp, rows = math.log(100.0), []
    for regime, length, mu, sigma in SEGMENTS:
        anchor = logp
        for _ in range(length):
            drift = -0.1 * (logp - anchor) if regime is R.RANGE else mu
            before, logp = logp, logp + drift + sigma * rng.standard_normal()
            high = max(before, logp) + abs(rng.normal(0, sigma / 2))
            low = min(before, logp) - abs(rng.normal(0, sigma / 2))
            rows.append((math.exp(high), math.exp(low), math.exp(logp)))
    return rows


def trade(rows: list[tuple[float, float, float]]) -> list[tuple[Purpose, Side]]:
    """Fill every intent at the close; protective stops checked before the strategy."""
    strategy, state = RegimeStrategy(), IncrementalIndicators()
    call, position, trades = None, None, []
    for i, (high, low, close) in enumerate(rows):
        snapshot = state.update(high, low, close)
        call = classify(snapshot, call)
        if position is not None and (stop := protective_exit(position, high, low, close)):
            trades.append((stop.purpose, stop.side))
            position = None
            continue
        for intent in strategy.decide(StrategyInput("AAA", i, snapshot, call, position, EQUITY)):
            trades.append((intent.purpose, intent.side))
            if intent.purpose is Purpose.ENTRY:
                signed = intent.qty * intent.side.sign
                position = Position(
                    "AAA", signed, close, stop=intent.stop_loss, target=intent.take_profit
                )
            else:
                position = None
    return trades


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_strategy_trades_regularly_on_regime_switching_data(seed):
    trades = trade(market(seed))
    entries = [side for purpose, side in trades if purpose is Purpose.ENTRY]
    exits = [side for purpose, side in trades if purpose is Purpose.EXIT]
    assert len(entries) >= 6 and len(exits) >= 6
    assert {Side.BUY, Side.SELL} <= set(entries)
