"""Checks on the order itself: quantity, price sanity, exit size, stop-loss, risk and reward.

`quantity`, `price` and `exit_size` apply to every intent (an exit with a NaN
quantity is still nonsense); the rest only to intents that add exposure.
"""

from __future__ import annotations

import math

from engine.config import RiskSettings
from engine.domain import Intent, OrderType, Side, Verdict
from engine.risk.context import (
    RiskContext,
    exceeds,
    fail_closed,
    fmt_money,
    fmt_pct,
    fmt_qty,
    intent_price,
    reduces_exposure,
)

# A quantity within this share of a lot step counts as on the step (float noise).
_LOT_TOLERANCE = 1e-9


def lot_size(settings: RiskSettings, symbol: str) -> float:
    return settings.lot_sizes.get(symbol.upper(), settings.lot_size)


def on_lot(qty: float, lot: float) -> bool:
    steps = qty / lot
    return abs(steps - round(steps)) <= _LOT_TOLERANCE * max(1.0, abs(steps))


@fail_closed("quantity", account=False)
def quantity(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "quantity"
    qty = intent.qty
    if not math.isfinite(qty) or qty <= 0:
        return Verdict.deny(name, f"quantity {qty!r} is not a positive number")
    reducing = reduces_exposure(intent, ctx)
    # An exit is bounded by its position (exit_size), not by a limit lowered since.
    if exceeds(qty, settings.max_position_qty) and not reducing:
        return Verdict.deny(
            name,
            f"quantity {fmt_qty(qty)} exceeds the order limit {fmt_qty(settings.max_position_qty)}",
        )
    lot = lot_size(settings, intent.symbol)
    if not on_lot(qty, lot) and not reducing:
        return Verdict.deny(
            name, f"quantity {fmt_qty(qty)} is not a multiple of the lot {fmt_qty(lot)}"
        )
    return Verdict.ok(name)


@fail_closed("price", account=False)
def price(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    """A known, positive last price, and limit/stop prices within the band around it."""
    name = "price"
    last = ctx.price(intent.symbol)
    if last is None:
        return Verdict.deny(name, f"no usable last price for {intent.symbol}")
    for label, value, needed in (
        ("limit", intent.limit_price, intent.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)),
        ("stop", intent.stop_price, intent.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)),
    ):
        if value is None:
            if needed:
                return Verdict.deny(name, f"a {intent.order_type} order needs a {label} price")
            continue
        if not math.isfinite(value) or value <= 0:
            return Verdict.deny(name, f"{label} price {value!r} is not a positive number")
        distance = abs(value / last - 1)
        if exceeds(abs(value - last), settings.price_band * last):
            return Verdict.deny(
                name,
                f"{label} price {fmt_money(value)} is {fmt_pct(distance)} from the last"
                f" {fmt_money(last)}, beyond the band {fmt_pct(settings.price_band)}",
            )
    return Verdict.ok(name)


@fail_closed("exit_size", account=False)
def exit_size(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    """An exit must shrink an existing position and never take it beyond flat."""
    name = "exit_size"
    if not intent.purpose.reduces_exposure:
        return Verdict.ok(name)
    held = ctx.position_qty(intent.symbol)
    if not reduces_exposure(intent, ctx):
        what = "no position" if held == 0 else f"a position of {fmt_qty(held)}"
        return Verdict.deny(
            name, f"{intent.purpose} {intent.side} {intent.symbol}: there is {what} to reduce"
        )
    # The resting stop and target are canceled before any exit is sent (the OMS
    # does it), so they do not take up room: counting them denied every exit of
    # a bracketed position.
    working = sum(
        o.remaining
        for o in ctx.open_orders
        if o.status.is_open
        and not o.protective
        and o.symbol == intent.symbol
        and o.purpose.reduces_exposure
        and o.side is intent.side
    )
    room = abs(held) - working
    if exceeds(intent.qty, room):
        return Verdict.deny(
            name,
            f"exit of {fmt_qty(intent.qty)} would go beyond flat: position {fmt_qty(held)},"
            f" {fmt_qty(working)} already working",
        )
    return Verdict.ok(name)


def _stop_distance(intent: Intent, ctx: RiskContext) -> tuple[float, float] | None:
    entry = intent_price(intent, ctx)
    if entry is None or intent.stop_loss is None:
        return None
    return entry, intent.stop_loss


@fail_closed("stop_loss")
def stop_loss(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    """Every entry carries a stop-loss on the losing side of its price."""
    name = "stop_loss"
    stop = intent.stop_loss
    if stop is None:
        if not settings.require_stop:
            return Verdict.ok(name)
        return Verdict.deny(name, "an entry needs a stop-loss")
    entry = intent_price(intent, ctx)
    if not math.isfinite(stop) or stop <= 0 or entry is None:
        return Verdict.deny(name, f"stop-loss {stop!r} is not a positive number")
    wrong = stop >= entry if intent.side is Side.BUY else stop <= entry
    if wrong:
        where = "below" if intent.side is Side.BUY else "above"
        return Verdict.deny(
            name,
            f"stop-loss {fmt_money(stop)} must be {where} the entry {fmt_money(entry)}"
            f" for a {intent.side}",
        )
    return Verdict.ok(name)


def order_risk(intent: Intent, ctx: RiskContext) -> float | None:
    """Money lost if the entry fills at its price and exits at its stop; None if unknown."""
    pair = _stop_distance(intent, ctx)
    if pair is None:
        return None
    entry, stop = pair
    loss = (entry - stop) * intent.side.sign * intent.qty
    return loss if math.isfinite(loss) and loss > 0 else None


@fail_closed("risk_per_trade")
def risk_per_trade(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "risk_per_trade"
    risk = order_risk(intent, ctx)
    if risk is None and intent.stop_loss is None and not settings.require_stop:
        return Verdict.ok(name)  # no stop to measure against; the position bounds still cap it
    if risk is None:
        return Verdict.deny(name, "the risk of an entry without a valid stop-loss is unbounded")
    limit = settings.risk_per_trade * ctx.equity
    if ctx.equity <= 0 or exceeds(risk, limit):
        share = risk / ctx.equity if ctx.equity > 0 else math.inf
        return Verdict.deny(
            name,
            f"risk {fmt_money(risk)} = {fmt_pct(share)} of equity exceeds"
            f" {fmt_pct(settings.risk_per_trade)}",
        )
    return Verdict.ok(name)


@fail_closed("reward_risk")
def reward_risk(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "reward_risk"
    if settings.min_reward_risk == 0:
        return Verdict.ok(name)
    pair = _stop_distance(intent, ctx)
    target = intent.take_profit
    if pair is None or target is None or not math.isfinite(target):
        return Verdict.deny(
            name,
            f"an entry needs a stop-loss and a take-profit to show reward/risk"
            f" >= {settings.min_reward_risk:g}",
        )
    entry, stop = pair
    risk = (entry - stop) * intent.side.sign
    reward = (target - entry) * intent.side.sign
    if risk <= 0:
        return Verdict.deny(name, "the stop-loss is on the wrong side of the entry")
    ratio = reward / risk
    if exceeds(settings.min_reward_risk, ratio):
        return Verdict.deny(
            name,
            f"reward/risk {ratio:.2f} (reward {fmt_money(reward)}, risk {fmt_money(risk)} per unit)"
            f" is below {settings.min_reward_risk:g}",
        )
    return Verdict.ok(name)
