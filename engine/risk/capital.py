"""Capital checks for entries: buying power, position size, open positions, exposure.

Working entry orders count as if filled, so two quick entries cannot together
pass a limit each one passes alone. Exposure is notional at the last price.
Symbols whose recent returns correlate above a threshold count as one bet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engine.config import RiskSettings
from engine.domain import Intent, Verdict
from engine.risk.context import (
    RiskContext,
    exceeds,
    fail_closed,
    fmt_money,
    fmt_pct,
    fmt_qty,
    intent_price,
    order_price,
)


def order_notional(intent: Intent, ctx: RiskContext) -> float:
    """Signed notional the intent adds at its expected price (0 when unknown)."""
    p = intent_price(intent, ctx)
    return intent.side.sign * intent.qty * p if p is not None else 0.0


def buying_power(ctx: RiskContext, settings: RiskSettings) -> float:
    """What new positions may still use: equity at the margin rate minus what is in use."""
    return ctx.equity / settings.margin_requirement - ctx.gross_exposure()


@fail_closed("buying_power")
def buying_power_check(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "buying_power"
    need = abs(order_notional(intent, ctx))
    available = buying_power(ctx, settings)
    if exceeds(need, available):
        return Verdict.deny(
            name,
            f"order needs {fmt_money(need)} but buying power is {fmt_money(max(available, 0.0))}",
        )
    if intent.side.sign > 0 and ctx.cash is not None and settings.margin_requirement >= 1:
        cash_left = ctx.cash - sum(
            o.remaining
            * (order_price(o.order_type, o.limit_price, o.stop_price, ctx.price(o.symbol)) or 0.0)
            for o in ctx.pending_entries()
            if o.side.sign > 0
        )
        if exceeds(need, cash_left):
            return Verdict.deny(
                name, f"order needs {fmt_money(need)} but cash is {fmt_money(max(cash_left, 0.0))}"
            )
    return Verdict.ok(name)


def _resulting_qty(intent: Intent, ctx: RiskContext) -> float:
    working = sum(o.side.sign * o.remaining for o in ctx.pending_entries(intent.symbol))
    return ctx.position_qty(intent.symbol) + working + intent.side.sign * intent.qty


@fail_closed("position_qty")
def position_qty(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "position_qty"
    after = abs(_resulting_qty(intent, ctx))
    if exceeds(after, settings.max_position_qty):
        return Verdict.deny(
            name,
            f"position in {intent.symbol} would be {fmt_qty(after)}, above the limit"
            f" {fmt_qty(settings.max_position_qty)}",
        )
    return Verdict.ok(name)


@fail_closed("position_notional")
def position_notional(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "position_notional"
    p = intent_price(intent, ctx) or 0.0
    after = abs(_resulting_qty(intent, ctx)) * p
    limit = settings.max_position_notional * ctx.equity
    if exceeds(after, limit):
        return Verdict.deny(
            name,
            f"position in {intent.symbol} would be {fmt_money(after)}"
            f" = {_share(after, ctx.equity)} of equity,"
            f" above {fmt_pct(settings.max_position_notional)}",
        )
    return Verdict.ok(name)


@fail_closed("open_positions")
def open_positions(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "open_positions"
    engaged = ctx.symbols_held() | {o.symbol for o in ctx.pending_entries()}
    if intent.symbol in engaged:
        return Verdict.ok(name)
    if len(engaged) >= settings.max_open_positions:
        return Verdict.deny(
            name,
            f"{len(engaged)} positions open or pending; the limit is {settings.max_open_positions}",
        )
    return Verdict.ok(name)


@fail_closed("gross_exposure")
def gross_exposure(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "gross_exposure"
    current = ctx.exposure(intent.symbol) + ctx.pending_exposure(intent.symbol)
    after = ctx.gross_exposure() - abs(current) + abs(current + order_notional(intent, ctx))
    limit = settings.max_gross_exposure * ctx.equity
    if exceeds(after, limit):
        return Verdict.deny(
            name,
            f"gross exposure would be {fmt_money(after)} = {_multiple(after, ctx.equity)} equity,"
            f" above {settings.max_gross_exposure:g}x",
        )
    return Verdict.ok(name)


@fail_closed("net_exposure")
def net_exposure(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "net_exposure"
    before = ctx.net_exposure()
    after = before + order_notional(intent, ctx)
    limit = settings.max_net_exposure * ctx.equity
    if exceeds(abs(after), limit) and abs(after) > abs(before):
        return Verdict.deny(
            name,
            f"net exposure would be {fmt_money(after)}"
            f" = {_multiple(abs(after), ctx.equity)} equity,"
            f" above {settings.max_net_exposure:g}x",
        )
    return Verdict.ok(name)


def correlation(a: Sequence[float], b: Sequence[float], min_obs: int) -> float | None:
    """Pearson correlation of the common tail of two return series; None if too short or flat."""
    n = min(len(a), len(b))
    if n < min_obs:
        return None
    xs = np.asarray(a[len(a) - n :], dtype=np.float64)
    ys = np.asarray(b[len(b) - n :], dtype=np.float64)
    finite = np.isfinite(xs) & np.isfinite(ys)
    if int(finite.sum()) < min_obs:
        return None
    dx = xs[finite] - xs[finite].mean()
    dy = ys[finite] - ys[finite].mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx <= 0 or syy <= 0:
        return None
    return float(dx @ dy) / math.sqrt(sxx * syy)


def correlated_group(symbol: str, ctx: RiskContext, settings: RiskSettings) -> dict[str, float]:
    """Engaged symbols that move with `symbol`, with the sign of their correlation (itself: +1)."""
    group = {symbol: 1.0}
    mine = ctx.returns.get(symbol)
    if mine is None:
        return group
    engaged = ctx.symbols_held() | {o.symbol for o in ctx.pending_entries()}
    for other in sorted(engaged - {symbol}):
        theirs = ctx.returns.get(other)
        if theirs is None:
            continue
        rho = correlation(mine, theirs, settings.correlation_min_obs)
        if rho is not None and abs(rho) >= settings.correlation_threshold:
            group[other] = 1.0 if rho > 0 else -1.0
    return group


@fail_closed("correlated_exposure")
def correlated_exposure(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    """A long in A and a long in a stock that moves with A are one bet (a short in it, a hedge)."""
    name = "correlated_exposure"
    group = correlated_group(intent.symbol, ctx, settings)
    if len(group) == 1:
        return Verdict.ok(name)
    before = sum(sign * (ctx.exposure(s) + ctx.pending_exposure(s)) for s, sign in group.items())
    after = before + order_notional(intent, ctx)
    limit = settings.max_correlated_exposure * ctx.equity
    if exceeds(abs(after), limit) and abs(after) > abs(before):
        members = ", ".join(sorted(group))
        return Verdict.deny(
            name,
            f"correlated group {members} would hold {fmt_money(abs(after))}"
            f" = {_share(abs(after), ctx.equity)} of equity, above"
            f" {fmt_pct(settings.max_correlated_exposure)}",
        )
    return Verdict.ok(name)


def _share(x: float, equity: float) -> str:
    return fmt_pct(x / equity) if equity > 0 else "all"


def _multiple(x: float, equity: float) -> str:
    return f"{x / equity:.2f}x" if equity > 0 else "inf x"
