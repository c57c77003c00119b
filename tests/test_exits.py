import math

from engine.decide.exits import protective_exit
from engine.domain import OrderType, Position, Purpose, Side

NAN = math.nan
LONG = Position("AAA", 10.0, 100.0, stop=95.0, target=110.0)
SHORT = Position("AAA", -10.0, 100.0, stop=105.0, target=90.0)


def test_long_stop_exactly_touched_sells_everything_at_market():
    intent = protective_exit(LONG, bar_high=101.0, bar_low=95.0, last=96.0)
    assert intent is not None
    assert (intent.side, intent.qty, intent.purpose, intent.order_type) == (
        Side.SELL,
        10.0,
        Purpose.EXIT,
        OrderType.MARKET,
    )
    assert intent.reason == "stop-loss hit at 95.0"


def test_long_low_just_above_the_stop_does_not_exit():
    assert protective_exit(LONG, bar_high=101.0, bar_low=95.000001, last=96.0) is None


def test_long_target_exactly_touched_takes_profit():
    intent = protective_exit(LONG, bar_high=110.0, bar_low=105.0, last=109.0)
    assert intent is not None and intent.reason == "take-profit hit at 110.0"


def test_long_bar_through_both_levels_assumes_the_stop_came_first():
    intent = protective_exit(LONG, bar_high=111.0, bar_low=94.0, last=100.0)
    assert intent is not None and intent.reason.startswith("stop-loss")


def test_short_stop_exactly_touched_buys_back():
    intent = protective_exit(SHORT, bar_high=105.0, bar_low=99.0, last=104.0)
    assert intent is not None
    assert (intent.side, intent.qty) == (Side.BUY, 10.0)
    assert intent.reason == "stop-loss hit at 105.0"


def test_short_high_just_below_the_stop_does_not_exit():
    assert protective_exit(SHORT, bar_high=104.99999, bar_low=99.0, last=104.0) is None


def test_short_target_exactly_touched_takes_profit():
    intent = protective_exit(SHORT, bar_high=95.0, bar_low=90.0, last=91.0)
    assert intent is not None
    assert (intent.side, intent.reason) == (Side.BUY, "take-profit hit at 90.0")


def test_short_bar_through_both_levels_assumes_the_stop_came_first():
    intent = protective_exit(SHORT, bar_high=106.0, bar_low=89.0, last=100.0)
    assert intent is not None and intent.reason.startswith("stop-loss")


def test_last_trade_outside_the_bar_counts():
    intent = protective_exit(LONG, bar_high=101.0, bar_low=97.0, last=94.5)
    assert intent is not None and intent.reason.startswith("stop-loss")


def test_missing_bar_extremes_fall_back_to_the_last_trade():
    intent = protective_exit(SHORT, bar_high=NAN, bar_low=NAN, last=89.0)
    assert intent is not None and intent.reason.startswith("take-profit")


def test_no_price_at_all_gives_no_exit():
    assert protective_exit(LONG, bar_high=NAN, bar_low=NAN, last=NAN) is None


def test_position_without_levels_never_exits():
    bare = Position("AAA", 10.0, 100.0)
    assert protective_exit(bare, bar_high=200.0, bar_low=1.0, last=50.0) is None


def test_flat_position_never_exits():
    flat = Position("AAA", 0.0, 100.0, stop=95.0, target=110.0)
    assert protective_exit(flat, bar_high=120.0, bar_low=80.0, last=100.0) is None


def test_fractional_quantity_is_closed_in_full():
    odd = Position("AAA", -2.5, 100.0, stop=105.0)
    intent = protective_exit(odd, bar_high=106.0, bar_low=99.0, last=105.5)
    assert intent is not None and intent.qty == 2.5
