"""The fill rules of engine.execution.brokers.fills, each at, just under and over its boundary."""

from __future__ import annotations

import pytest

from engine.config import PaperSettings
from engine.domain import Bar, Order, OrderType, Purpose, Side
from engine.execution.brokers.fills import capacity, commission, fill_at_market, match_bar, slippage

NO_SLIP = PaperSettings(
    slippage_bps=0, slippage_range_share=0, commission_per_share=0.01, commission_min=1.0
)
SLIP = PaperSettings(slippage_bps=10, slippage_range_share=0.1, max_participation=0.5)
TICK = 0.01


def bar(o: float, h: float, low: float, c: float, volume: float = 10_000) -> Bar:
    return Bar("AAA", 1_000, o, h, low, c, volume)


def order(
    side: Side,
    kind: OrderType,
    *,
    qty: float = 100,
    limit: float | None = None,
    stop: float | None = None,
    filled: float = 0,
) -> Order:
    return Order(
        "c1",
        "AAA",
        side,
        qty,
        kind,
        Purpose.ENTRY,
        limit_price=limit,
        stop_price=stop,
        filled_qty=filled,
    )


# ---- limit: fills only when the bar trades through -----------------------------------


def test_buy_limit_touched_does_not_fill() -> None:
    m = match_bar(
        order(Side.BUY, OrderType.LIMIT, limit=99), bar(100, 101, 99, 100), NO_SLIP, triggered=False
    )
    assert m.fill is None


def test_buy_limit_traded_through_fills_at_limit() -> None:
    m = match_bar(
        order(Side.BUY, OrderType.LIMIT, limit=99),
        bar(100, 101, 99 - TICK, 100),
        NO_SLIP,
        triggered=False,
    )
    assert m.fill is not None and m.fill.price == 99


def test_buy_limit_not_reached_does_not_fill() -> None:
    m = match_bar(
        order(Side.BUY, OrderType.LIMIT, limit=99),
        bar(100, 101, 99 + TICK, 100),
        NO_SLIP,
        triggered=False,
    )
    assert m.fill is None


def test_buy_limit_gap_below_fills_at_the_better_open() -> None:
    m = match_bar(
        order(Side.BUY, OrderType.LIMIT, limit=99), bar(97, 98, 96, 97.5), NO_SLIP, triggered=False
    )
    assert m.fill is not None and m.fill.price == 97


def test_sell_limit_touched_does_not_fill() -> None:
    m = match_bar(
        order(Side.SELL, OrderType.LIMIT, limit=101),
        bar(100, 101, 99, 100),
        NO_SLIP,
        triggered=False,
    )
    assert m.fill is None


def test_sell_limit_traded_through_fills_at_limit() -> None:
    m = match_bar(
        order(Side.SELL, OrderType.LIMIT, limit=101),
        bar(100, 101 + TICK, 99, 100),
        NO_SLIP,
        triggered=False,
    )
    assert m.fill is not None and m.fill.price == 101


def test_sell_limit_gap_above_fills_at_the_better_open() -> None:
    m = match_bar(
        order(Side.SELL, OrderType.LIMIT, limit=101),
        bar(103, 104, 102, 103),
        NO_SLIP,
        triggered=False,
    )
    assert m.fill is not None and m.fill.price == 103


def test_limit_fill_pays_no_slippage_even_with_slippage_configured() -> None:
    m = match_bar(
        order(Side.BUY, OrderType.LIMIT, limit=99), bar(100, 101, 98, 100), SLIP, triggered=False
    )
    assert m.fill is not None and m.fill.price == 99


# ---- market: slippage always against the trader ----------------------------------------


def test_market_buy_pays_close_plus_bps_and_range_share() -> None:
    b = bar(100, 102, 98, 101)
    fill = fill_at_market(order(Side.BUY, OrderType.MARKET), b, SLIP)
    expected = 101 + 101 * SLIP.slippage_bps / 10_000 + SLIP.slippage_range_share * (102 - 98)
    assert fill is not None and fill.price == pytest.approx(expected)


def test_market_sell_receives_close_minus_slippage() -> None:
    b = bar(100, 102, 98, 101)
    fill = fill_at_market(order(Side.SELL, OrderType.MARKET), b, SLIP)
    assert fill is not None and fill.price == pytest.approx(101 - slippage(101, b, SLIP))
    assert fill.price < b.close


def test_market_buy_at_a_close_on_the_high_pays_no_more_than_the_high() -> None:
    b = bar(100, 101, 99, 101)
    fill = fill_at_market(order(Side.BUY, OrderType.MARKET), b, SLIP)
    assert fill is not None and fill.price == 101


def test_market_fill_carries_the_close_as_reference_price() -> None:
    b = bar(100, 102, 98, 101)
    fill = fill_at_market(order(Side.BUY, OrderType.MARKET), b, SLIP)
    assert fill is not None and fill.ref_price == b.close


def test_market_remainder_on_a_new_bar_fills_from_its_open() -> None:
    b = bar(100, 102, 98, 101)
    m = match_bar(order(Side.SELL, OrderType.MARKET), b, SLIP, triggered=False)
    assert m.fill is not None and m.fill.price == pytest.approx(100 - slippage(100, b, SLIP))


def test_zero_slippage_market_fills_at_the_close() -> None:
    fill = fill_at_market(order(Side.BUY, OrderType.MARKET), bar(100, 102, 98, 101), NO_SLIP)
    assert fill is not None and fill.price == 101


# ---- stop: triggers when reached, fills like a market order -------------------------------


def test_buy_stop_just_under_does_not_trigger() -> None:
    m = match_bar(
        order(Side.BUY, OrderType.STOP, stop=102),
        bar(100, 102 - TICK, 99, 101),
        NO_SLIP,
        triggered=False,
    )
    assert not m.triggered and m.fill is None


def test_buy_stop_reached_fills_at_stop_plus_slippage() -> None:
    b = bar(100, 104, 99, 101)
    m = match_bar(order(Side.BUY, OrderType.STOP, stop=102), b, SLIP, triggered=False)
    assert m.triggered
    assert m.fill is not None and m.fill.price == pytest.approx(102 + slippage(102, b, SLIP))


def test_buy_stop_reached_at_the_high_pays_no_more_than_the_high() -> None:
    b = bar(100, 102, 99, 101)
    m = match_bar(order(Side.BUY, OrderType.STOP, stop=102), b, SLIP, triggered=False)
    assert m.fill is not None and m.fill.price == 102


def test_buy_stop_gapped_through_fills_at_the_open() -> None:
    b = bar(104, 105, 103, 104)
    m = match_bar(order(Side.BUY, OrderType.STOP, stop=102), b, SLIP, triggered=False)
    assert m.fill is not None and m.fill.price == pytest.approx(104 + slippage(104, b, SLIP))


def test_sell_stop_reached_inside_the_bar_fills_at_stop_minus_slippage() -> None:
    b = bar(100, 101, 96, 99)
    m = match_bar(order(Side.SELL, OrderType.STOP, stop=98), b, SLIP, triggered=False)
    assert m.fill is not None and m.fill.price == pytest.approx(98 - slippage(98, b, SLIP))


def test_sell_stop_reached_at_the_low_receives_no_less_than_the_low() -> None:
    b = bar(100, 101, 98, 99)
    m = match_bar(order(Side.SELL, OrderType.STOP, stop=98), b, SLIP, triggered=False)
    assert m.fill is not None and m.fill.price == 98


def test_sell_stop_just_above_the_low_does_not_trigger() -> None:
    m = match_bar(
        order(Side.SELL, OrderType.STOP, stop=98),
        bar(100, 101, 98 + TICK, 99),
        NO_SLIP,
        triggered=False,
    )
    assert not m.triggered


def test_sell_stop_gapped_through_fills_at_the_lower_open() -> None:
    m = match_bar(
        order(Side.SELL, OrderType.STOP, stop=98), bar(95, 96, 94, 95), NO_SLIP, triggered=False
    )
    assert m.fill is not None and m.fill.price == 95


def test_stop_triggered_on_an_earlier_bar_fills_from_the_open() -> None:
    m = match_bar(
        order(Side.SELL, OrderType.STOP, stop=98), bar(99, 100, 98.5, 99.5), NO_SLIP, triggered=True
    )
    assert m.fill is not None and m.fill.price == 99


# ---- stop-limit: triggers at the stop, then a limit -----------------------------------------


def test_stop_limit_triggered_inside_the_bar_below_its_limit_fills_at_the_stop() -> None:
    o = order(Side.BUY, OrderType.STOP_LIMIT, stop=102, limit=103)
    m = match_bar(o, bar(100, 102.5, 99, 102), SLIP, triggered=False)
    assert m.fill is not None and m.fill.price == 102


def test_stop_limit_with_stop_at_limit_waits_after_an_inside_trigger() -> None:
    o = order(Side.BUY, OrderType.STOP_LIMIT, stop=102, limit=102)
    m = match_bar(o, bar(100, 102.5, 99, 102), NO_SLIP, triggered=False)
    assert m.triggered and m.fill is None


def test_stop_limit_not_reached_stays_untriggered() -> None:
    o = order(Side.BUY, OrderType.STOP_LIMIT, stop=102, limit=103)
    m = match_bar(o, bar(100, 102 - TICK, 99, 101), NO_SLIP, triggered=False)
    assert not m.triggered and m.fill is None


def test_stop_limit_gapped_above_its_limit_waits_when_the_bar_never_comes_back() -> None:
    o = order(Side.BUY, OrderType.STOP_LIMIT, stop=102, limit=103)
    m = match_bar(o, bar(105, 106, 103, 105), NO_SLIP, triggered=False)
    assert m.triggered and m.fill is None


def test_stop_limit_gapped_above_its_limit_fills_when_the_bar_trades_back_through() -> None:
    o = order(Side.BUY, OrderType.STOP_LIMIT, stop=102, limit=103)
    m = match_bar(o, bar(105, 106, 103 - TICK, 104), NO_SLIP, triggered=False)
    assert m.fill is not None and m.fill.price == 103


def test_triggered_sell_stop_limit_behaves_as_a_limit() -> None:
    o = order(Side.SELL, OrderType.STOP_LIMIT, stop=98, limit=97)
    assert match_bar(o, bar(96, 97, 95, 96), NO_SLIP, triggered=True).fill is None
    m = match_bar(o, bar(96, 97 + TICK, 95, 96), NO_SLIP, triggered=True)
    assert m.fill is not None and m.fill.price == 97


# ---- participation and commission ----------------------------------------------------------


def test_fill_is_capped_at_participation_of_bar_volume_in_whole_shares() -> None:
    settings = PaperSettings(max_participation=0.25)
    b = bar(100, 101, 99, 100, volume=203)  # 50.75 shares -> 50
    fill = fill_at_market(order(Side.BUY, OrderType.MARKET, qty=80), b, settings)
    assert fill is not None and fill.qty == capacity(b, settings) == 50


def test_fill_takes_only_the_remaining_qty() -> None:
    fill = fill_at_market(
        order(Side.BUY, OrderType.MARKET, qty=100, filled=70), bar(100, 101, 99, 100), NO_SLIP
    )
    assert fill is not None and fill.qty == 30


def test_bar_too_thin_for_one_share_gives_no_fill() -> None:
    settings = PaperSettings(max_participation=0.25)
    assert (
        fill_at_market(order(Side.BUY, OrderType.MARKET), bar(100, 101, 99, 100, 3), settings)
        is None
    )


def test_commission_minimum_applies_below_the_breakeven_qty() -> None:
    breakeven = NO_SLIP.commission_min / NO_SLIP.commission_per_share
    assert commission(breakeven - 1, NO_SLIP) == NO_SLIP.commission_min
    assert commission(breakeven, NO_SLIP) == pytest.approx(NO_SLIP.commission_min)


def test_commission_per_share_applies_above_the_breakeven_qty() -> None:
    breakeven = NO_SLIP.commission_min / NO_SLIP.commission_per_share
    assert commission(breakeven + 1, NO_SLIP) == pytest.approx(
        (breakeven + 1) * NO_SLIP.commission_per_share
    )
    assert commission(breakeven + 1, NO_SLIP) > NO_SLIP.commission_min
