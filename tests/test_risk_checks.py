"""Each check at, just under and just over its boundary (default settings, equity 100,000)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.config import RiskSettings
from engine.domain import (
    Intent,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Purpose,
    Side,
    TradingState,
)
from engine.market.calendar import Blackout
from engine.risk import capital, limits, market, state, trade
from engine.risk.context import RiskContext

NOW = 1_700_000_000_000
S = RiskSettings()


def ctx(**kw: object) -> RiskContext:
    base: dict[str, object] = {"now": NOW, "equity": 100_000.0, "last_prices": {"A": 100.0}}
    base.update(kw)
    return RiskContext(**base)  # type: ignore[arg-type]


def buy(qty: float = 100, stop: float | None = 90.0, target: float | None = 130.0, **kw: object):
    return Intent("A", Side.BUY, qty, Purpose.ENTRY, stop_loss=stop, take_profit=target, **kw)  # type: ignore[arg-type]


def held(symbol: str, qty: float, price: float = 100.0) -> Position:
    return Position(symbol, qty, price)


# -- trade -------------------------------------------------------------------------


@pytest.mark.parametrize(("qty", "ok"), [(99_999, True), (100_000, True), (100_001, False)])
def test_quantity_limit(qty: float, ok: bool) -> None:
    assert trade.quantity(buy(qty), ctx(), S).allowed is ok


@pytest.mark.parametrize("qty", [0, -1, float("nan"), float("inf")])
def test_quantity_must_be_a_positive_number(qty: float) -> None:
    assert not trade.quantity(buy(qty), ctx(), S).allowed


@pytest.mark.parametrize(("qty", "ok"), [(20, True), (25, False), (30, True)])
def test_quantity_must_be_a_multiple_of_the_lot(qty: float, ok: bool) -> None:
    settings = RiskSettings(lot_sizes={"A": 10})
    assert trade.quantity(buy(qty), ctx(), settings).allowed is ok


@pytest.mark.parametrize(("limit", "ok"), [(109.99, True), (110.0, True), (110.01, False)])
def test_limit_price_within_the_band_around_the_last(limit: float, ok: bool) -> None:
    intent = buy(order_type=OrderType.LIMIT, limit_price=limit)
    assert trade.price(intent, ctx(), S).allowed is ok


def test_price_band_reason_states_the_numbers() -> None:
    intent = buy(order_type=OrderType.LIMIT, limit_price=120.0)
    reason = trade.price(intent, ctx(), S).reason
    assert "120.00" in reason and "20.00%" in reason and "10.00%" in reason


def test_price_denies_without_a_last_price() -> None:
    assert not trade.price(buy(), ctx(last_prices={}), S).allowed


def test_price_denies_a_limit_order_without_a_limit() -> None:
    assert not trade.price(buy(order_type=OrderType.LIMIT), ctx(), S).allowed


@pytest.mark.parametrize(("qty", "ok"), [(99, True), (100, True), (101, False)])
def test_exit_never_goes_beyond_flat(qty: float, ok: bool) -> None:
    intent = Intent("A", Side.SELL, qty, Purpose.EXIT)
    assert trade.exit_size(intent, ctx(positions={"A": held("A", 100)}), S).allowed is ok


def test_exit_counts_exits_already_working() -> None:
    working = Order("x", "A", Side.SELL, 60, OrderType.MARKET, Purpose.EXIT, OrderStatus.ACCEPTED)
    c = ctx(positions={"A": held("A", 100)}, open_orders=[working])
    assert not trade.exit_size(Intent("A", Side.SELL, 41, Purpose.EXIT), c, S).allowed
    assert trade.exit_size(Intent("A", Side.SELL, 40, Purpose.EXIT), c, S).allowed


def test_exit_of_a_bracketed_position_is_not_blocked_by_its_resting_stop_and_target() -> None:
    stop = Order("e-S", "A", Side.SELL, 100, OrderType.STOP, Purpose.EXIT, OrderStatus.ACCEPTED)
    target = dataclasses.replace(stop, client_order_id="e-T", order_type=OrderType.LIMIT)
    pair = [
        dataclasses.replace(o, oco_group="e", stop_price=90.0, limit_price=120.0)
        for o in (stop, target)
    ]
    c = ctx(positions={"A": held("A", 100)}, open_orders=pair)
    assert trade.exit_size(Intent("A", Side.SELL, 100, Purpose.EXIT), c, S).allowed


def test_stop_loss_is_required_for_an_entry() -> None:
    assert not trade.stop_loss(buy(stop=None), ctx(), S).allowed


@pytest.mark.parametrize(("stop", "ok"), [(99.99, True), (100.0, False), (100.01, False)])
def test_stop_loss_of_a_long_lies_below_the_entry(stop: float, ok: bool) -> None:
    assert trade.stop_loss(buy(stop=stop), ctx(), S).allowed is ok


def test_stop_loss_of_a_short_lies_above_the_entry() -> None:
    short = Intent("A", Side.SELL, 10, Purpose.ENTRY, stop_loss=99.0)
    assert not trade.stop_loss(short, ctx(), S).allowed


@pytest.mark.parametrize(("qty", "ok"), [(199, True), (200, True), (201, False)])
def test_risk_per_trade_at_two_percent(qty: float, ok: bool) -> None:
    # 10 per unit to the stop: 200 units risk 2,000 = 2% of 100,000.
    assert trade.risk_per_trade(buy(qty), ctx(), S).allowed is ok


def test_risk_per_trade_reason_states_the_numbers() -> None:
    reason = trade.risk_per_trade(buy(245), ctx(), S).reason
    assert reason == "risk 2,450.00 = 2.45% of equity exceeds 2.00%"


@pytest.mark.parametrize(("target", "ok"), [(119.9, False), (120.0, True), (120.1, True)])
def test_reward_to_risk_of_two(target: float, ok: bool) -> None:
    assert trade.reward_risk(buy(target=target), ctx(), S).allowed is ok


def test_reward_to_risk_needs_a_take_profit() -> None:
    assert not trade.reward_risk(buy(target=None), ctx(), S).allowed


# -- limits ------------------------------------------------------------------------


@pytest.mark.parametrize(("qty", "ok"), [(199, True), (200, True), (201, False)])
def test_daily_loss_counts_the_new_orders_risk(qty: float, ok: bool) -> None:
    # 4,000 lost today + 10 per unit at the stop; the limit is 6% of 100,000.
    c = ctx(equity=96_000.0, day_start_equity=100_000.0)
    assert limits.daily_loss(buy(qty), c, S).allowed is ok


@pytest.mark.parametrize(("qty", "ok"), [(199, True), (200, True), (201, False)])
def test_drawdown_from_peak_counts_the_new_orders_risk(qty: float, ok: bool) -> None:
    c = ctx(equity=87_000.0, peak_equity=100_000.0)
    assert limits.max_drawdown(buy(qty), c, S).allowed is ok


@pytest.mark.parametrize(("losses", "ok"), [(3, True), (4, False), (5, False)])
def test_consecutive_losses(losses: int, ok: bool) -> None:
    assert limits.consecutive_losses(buy(), ctx(consecutive_losses=losses), S).allowed is ok


@pytest.mark.parametrize(("trades", "ok"), [(14, True), (15, False), (16, False)])
def test_trades_per_day(trades: int, ok: bool) -> None:
    assert limits.trades_per_day(buy(), ctx(trades_today=trades), S).allowed is ok


@pytest.mark.parametrize(("count", "ok"), [(29, True), (30, False), (31, False)])
def test_order_rate_per_minute(count: int, ok: bool) -> None:
    times = [NOW - 59_000 + i for i in range(count)]
    assert limits.order_rate(buy(), ctx(order_times=times), S).allowed is ok


def test_order_rate_denial_lasts_until_the_oldest_order_ages_out() -> None:
    times = [NOW - 59_000 + i for i in range(30)]
    assert limits.order_rate(buy(), ctx(order_times=times), S).until == NOW - 59_000 + 60_000


def test_order_rate_forgets_orders_a_minute_old() -> None:
    times = [NOW - 60_000] * 30
    assert limits.order_rate(buy(), ctx(order_times=times), S).allowed


@pytest.mark.parametrize(
    ("orders", "fills", "ok"),
    [(19, 0, True), (29, 3, True), (30, 3, False), (20, 2, False)],
)
def test_order_to_fill_ratio(orders: int, fills: int, ok: bool) -> None:
    c = ctx(orders_today=orders, fills_today=fills)
    assert limits.order_fill_ratio(buy(), c, S).allowed is ok


@pytest.mark.parametrize(("ago_ms", "ok"), [(299_999, False), (300_000, True), (300_001, True)])
def test_cooldown_after_an_exit(ago_ms: int, ok: bool) -> None:
    c = ctx(last_exit_at={"A": NOW - ago_ms})
    assert limits.cooldown(buy(), c, S).allowed is ok


def test_cooldown_says_until_when() -> None:
    verdict = limits.cooldown(buy(), ctx(last_exit_at={"A": NOW - 1_000}), S)
    assert verdict.until == NOW - 1_000 + 300_000


# -- market ------------------------------------------------------------------------


@pytest.mark.parametrize(("atr", "ok"), [(0.0249, True), (0.025, True), (0.0251, False)])
def test_volatility_guard(atr: float, ok: bool) -> None:
    assert market.volatility(buy(), ctx(atr_pct={"A": atr}), S).allowed is ok


def test_volatility_unknown_denies_an_entry() -> None:
    assert not market.volatility(buy(), ctx(), S).allowed


def test_market_hours_denies_when_closed_and_says_why() -> None:
    c = ctx(market_open={"A": False}, closed_reasons={"A": "holiday"})
    verdict = market.market_hours(buy(), c, S)
    assert (verdict.allowed, verdict.reason.endswith("holiday")) == (False, True)


def test_market_hours_allows_when_open() -> None:
    assert market.market_hours(buy(), ctx(market_open={"A": True}), S).allowed


@pytest.mark.parametrize(
    ("start", "end", "ok"),
    [
        (NOW + 1, NOW + 10, True),
        (NOW, NOW + 10, False),
        (NOW - 10, NOW + 1, False),
        (NOW - 10, NOW, True),
    ],
)
def test_blackout_window_is_start_inclusive_end_exclusive(start: int, end: int, ok: bool) -> None:
    c = ctx(blackouts=[Blackout("CPI", start, end)])
    assert market.blackout(buy(), c, S).allowed is ok


def test_blackout_for_other_symbols_does_not_apply() -> None:
    c = ctx(blackouts=[Blackout("earnings", NOW - 1, NOW + 1, symbols=frozenset({"B"}))])
    assert market.blackout(buy(), c, S).allowed


# -- state -------------------------------------------------------------------------


def test_health_denies_entries_while_the_broker_is_disconnected() -> None:
    assert not state.health(buy(), ctx(broker_connected=False), S).allowed


def test_health_denies_entries_on_a_stale_symbol_only() -> None:
    assert not state.health(buy(), ctx(stale_symbols=frozenset({"A"})), S).allowed
    assert state.health(buy(), ctx(stale_symbols=frozenset({"B"})), S).allowed


def test_paused_denies_an_entry_that_reduces_nothing() -> None:
    c = ctx(trading_state=TradingState.PAUSED)
    assert not state.trading_state(buy(), c, S).allowed


# -- capital -----------------------------------------------------------------------


@pytest.mark.parametrize(("qty", "ok"), [(99, True), (100, True), (101, False)])
def test_buying_power(qty: float, ok: bool) -> None:
    # 90,000 already in B: 10,000 of buying power left at 100 a unit.
    c = ctx(positions={"B": held("B", 900)}, last_prices={"A": 100.0, "B": 100.0})
    assert capital.buying_power_check(buy(qty), c, S).allowed is ok


def test_buying_power_counts_working_entries() -> None:
    working = Order("x", "A", Side.BUY, 50, OrderType.MARKET, Purpose.ENTRY, OrderStatus.ACCEPTED)
    c = ctx(positions={"B": held("B", 900)}, last_prices={"A": 100.0, "B": 100.0})
    assert not capital.buying_power_check(
        buy(60), dataclasses.replace(c, open_orders=[working]), S
    ).allowed


@pytest.mark.parametrize(("qty", "ok"), [(99, True), (100, True), (101, False)])
def test_position_qty_limit(qty: float, ok: bool) -> None:
    c = ctx(positions={"A": held("A", 99_900)})
    assert capital.position_qty(buy(qty), c, S).allowed is ok


@pytest.mark.parametrize(("qty", "ok"), [(49, True), (50, True), (51, False)])
def test_position_notional_limit(qty: float, ok: bool) -> None:
    # 200 units held at 100 = 20,000; the limit is 25% of 100,000.
    c = ctx(positions={"A": held("A", 200)})
    assert capital.position_notional(buy(qty), c, S).allowed is ok


@pytest.mark.parametrize(("others", "ok"), [(4, True), (5, False)])
def test_max_open_positions(others: int, ok: bool) -> None:
    c = ctx(positions={f"S{i}": held(f"S{i}", 1) for i in range(others)})
    assert capital.open_positions(buy(), c, S).allowed is ok


def test_adding_to_a_held_symbol_does_not_open_a_position() -> None:
    c = ctx(positions={f"S{i}": held(f"S{i}", 1) for i in range(4)} | {"A": held("A", 1)})
    assert capital.open_positions(buy(), c, S).allowed


@pytest.mark.parametrize(("qty", "ok"), [(99, True), (100, True), (101, False)])
def test_gross_exposure(qty: float, ok: bool) -> None:
    # Long 100,000 B and short 40,000 C: gross 140,000; the limit is 1.5 x 100,000.
    c = ctx(
        positions={"B": held("B", 1_000), "C": held("C", -400)},
        last_prices={"A": 100.0, "B": 100.0, "C": 100.0},
    )
    assert capital.gross_exposure(buy(qty), c, S).allowed is ok


@pytest.mark.parametrize(("qty", "ok"), [(99, True), (100, True), (101, False)])
def test_net_exposure(qty: float, ok: bool) -> None:
    # Net long 90,000; the limit is 1 x 100,000.
    c = ctx(positions={"B": held("B", 900)}, last_prices={"A": 100.0, "B": 100.0})
    assert capital.net_exposure(buy(qty), c, S).allowed is ok


def _returns(n: int = 40) -> list[float]:
    return [0.01 * ((i * 7) % 5 - 2) for i in range(n)]


@pytest.mark.parametrize(("qty", "ok"), [(199, True), (200, True), (201, False)])
def test_correlated_symbols_count_as_one_position(qty: float, ok: bool) -> None:
    # B moves exactly with A and holds 30,000; the group limit is 50% of 100,000.
    c = ctx(
        positions={"B": held("B", 300)},
        last_prices={"A": 100.0, "B": 100.0},
        returns={"A": _returns(), "B": [2 * r for r in _returns()]},
    )
    assert capital.correlated_exposure(buy(qty), c, S).allowed is ok


def test_an_anti_correlated_position_is_a_hedge() -> None:
    c = ctx(
        positions={"B": held("B", 300)},
        last_prices={"A": 100.0, "B": 100.0},
        returns={"A": _returns(), "B": [-r for r in _returns()]},
    )
    assert capital.correlated_exposure(buy(450), c, S).allowed


def test_uncorrelated_symbols_are_not_grouped() -> None:
    c = ctx(
        positions={"B": held("B", 300)},
        last_prices={"A": 100.0, "B": 100.0},
        returns={"A": _returns(), "B": [0.01 * ((i * 3) % 4 - 1.5) for i in range(40)]},
    )
    assert capital.correlated_group("A", c, S) == {"A": 1.0}
