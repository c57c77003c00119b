"""Sizing: each method's quantity from its inputs, lots, caps, and the recorded details."""

from __future__ import annotations

import pytest

from engine.config import RiskSettings
from engine.sizing import (
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
