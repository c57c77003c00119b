"""Sizing: each method's quantity from its inputs, lots, caps, and the recorded details."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import RiskSettings
from engine.decide.sizing import (
    fixed_fractional,
    kelly,
    kelly_share,
    round_to_lot,
    size,
    volatility_scaled,
)


def test_fixed_fractional_risks_the_share_between_entry_and_stop() -> None:
    qty, details = fixed_fractional(100_000, 100.0, 95.0, 0.02)
    assert (qty, details["method"], details["risk"]) == (400, "fixed_fractional", 2_000.0)


def test_fixed_fractional_rounds_down_to_the_lot() -> None:
    assert fixed_fractional(100_000, 100.0, 97.0, 0.02, lot=100).qty == 600


def test_fixed_fractional_without_a_stop_distance_is_zero() -> None:
    assert fixed_fractional(100_000, 100.0, 100.0, 0.02).qty == 0


def test_volatility_scaled_risks_the_share_over_atr_multiples() -> None:
    qty, details = volatility_scaled(100_000, atr=2.0, risk_share=0.02, atr_multiple=2.0)
    assert (qty, details["method"]) == (500, "volatility")


def test_round_to_lot_never_rounds_up() -> None:
    assert round_to_lot(299.999, 100) == 200


def test_kelly_share_of_a_known_history() -> None:
    # 60% winners of +2, 40% losers of -1: f* = 0.6 - 0.4 / 2 = 0.4.
    full, win_rate, payoff = kelly_share([2.0] * 6 + [-1.0] * 4)
    assert (full, win_rate, payoff) == pytest.approx((0.4, 0.6, 2.0))


def test_kelly_is_fractional_and_capped() -> None:
    pnls = [2.0] * 6 + [-1.0] * 4
    uncapped = kelly(
        100_000, 100.0, 90.0, pnls, fraction=0.05, cap=1.0, min_trades=5, fallback_share=0.01
    )
    capped = kelly(
        100_000, 100.0, 90.0, pnls, fraction=0.5, cap=0.01, min_trades=5, fallback_share=0.01
    )
    assert (uncapped.qty, capped.qty) == (200, 100)  # 0.4 * 0.05 = 2% vs the 1% cap


def test_kelly_without_an_edge_sizes_zero() -> None:
    pnls = [1.0] * 3 + [-1.0] * 7
    result = kelly(
        100_000, 100.0, 90.0, pnls, fraction=0.5, cap=0.02, min_trades=5, fallback_share=0.02
    )
    assert result.qty == 0


def test_kelly_falls_back_to_fixed_fractional_with_few_trades() -> None:
    result = kelly(
        100_000, 100.0, 90.0, [5.0], fraction=0.5, cap=0.02, min_trades=30, fallback_share=0.01
    )
    assert (result.qty, result.details["method"]) == (100, "kelly")
    assert "fallback" in result.details


def test_size_uses_the_configured_method() -> None:
    result = size(
        RiskSettings(sizing="volatility"), equity=100_000, entry=100.0, stop=99.0, atr=2.0
    )
    assert result.details["method"] == "volatility"


def test_size_caps_at_the_notional_limit() -> None:
    # Fixed fractional would give 2,000 / 0.5 = 4,000 units = 400,000; 25% of equity is 250 units.
    result = size(RiskSettings(), equity=100_000, entry=100.0, stop=99.5)
    assert (result.qty, result.details["capped_by"]) == (250, "max_position_notional")


def test_size_caps_volatility_sizing_at_the_risk_per_trade() -> None:
    # A stop far wider than 2 ATR: the risk at the stop must still be 2% at most.
    settings = RiskSettings(sizing="volatility", max_position_notional=10)
    result = size(settings, equity=100_000, entry=100.0, stop=80.0, atr=1.0)
    assert result.qty * 20.0 <= 2_000.0


KELLY = {"fraction": 0.5, "cap": 0.02, "min_trades": 30, "fallback_share": 0.01, "min_each": 10}


def test_thirty_scratches_are_no_history_and_size_fixed_fractional() -> None:
    result = kelly(100_000, 100.0, 90.0, [0.0] * 30, **KELLY)  # type: ignore[arg-type]
    assert result.qty == 100 and "fallback" in result.details  # 1% fixed, not Kelly's 2%


def test_one_win_among_scratches_is_no_edge_and_sizes_fixed_fractional() -> None:
    result = kelly(100_000, 100.0, 90.0, [1.0] + [0.0] * 29, **KELLY)  # type: ignore[arg-type]
    assert result.qty == 100 and "fallback" in result.details


def test_kelly_waits_for_enough_losses_as_well_as_wins() -> None:
    pnls = [50.0] * 40 + [-10.0] * 9
    result = kelly(100_000, 100.0, 90.0, pnls, **KELLY)  # type: ignore[arg-type]
    assert "fallback" in result.details
    enough = kelly(100_000, 100.0, 90.0, [*pnls, -10.0], **KELLY)  # type: ignore[arg-type]
    assert "fallback" not in enough.details and enough.qty == 200


def test_a_scratch_is_neither_a_win_nor_a_loss() -> None:
    with_scratches = kelly_share([2.0] * 6 + [-1.0] * 4 + [0.0, 0.001, -0.004])
    assert with_scratches == pytest.approx((0.4, 0.6, 2.0))


pnl = st.floats(-1_000, 1_000, allow_nan=False)
history = st.tuples(
    st.lists(st.floats(0.01, 1_000), min_size=10, max_size=40),
    st.lists(st.floats(-1_000, -0.01), min_size=10, max_size=40),
    st.lists(st.sampled_from([0.0, 0.001, -0.001]), max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(
    pnls=st.lists(pnl, max_size=80),
    fraction=st.floats(0.01, 1.0),
    cap=st.floats(0.001, 0.2),
    stop=st.floats(50.0, 99.9),
)
def test_kelly_never_risks_more_than_its_cap(
    pnls: list[float], fraction: float, cap: float, stop: float
) -> None:
    result = kelly(
        100_000, 100.0, stop, pnls, fraction=fraction, cap=cap, min_trades=5, fallback_share=0.2
    )
    assert result.qty * (100.0 - stop) <= cap * 100_000 * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(outcome=history, fraction=st.floats(0.01, 1.0))
def test_kelly_sizes_zero_when_the_expectancy_is_not_positive(
    outcome: tuple[list[float], list[float], list[float]], fraction: float
) -> None:
    wins, losses, scratches = outcome
    scale = max(1.0, sum(wins) / sum(-x for x in losses))
    losses = [x * scale * 1.0001 for x in losses]  # total losses above the total wins
    pnls = wins + losses + scratches
    assert sum(wins) + sum(losses) <= 0
    result = kelly(
        100_000,
        100.0,
        90.0,
        pnls,
        fraction=fraction,
        cap=0.2,
        min_trades=20,
        fallback_share=0.01,
        min_each=10,
    )
    assert "fallback" not in result.details and result.qty == 0
