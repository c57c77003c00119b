"""Loss and activity limits for entries: daily loss, drawdown, losing streak, trade
count, order rate, order-to-fill ratio, and the cooldown after an exit.

Loss limits count the new order's loss at its stop as if it were already taken,
so the entry that would carry the account past a limit is the one denied.
"""

from __future__ import annotations

from engine.config import RiskSettings
from engine.domain import Intent, Verdict
from engine.risk.context import RiskContext, exceeds, fail_closed, fmt_money, fmt_pct
from engine.risk.trade import order_risk

MINUTE_MS = 60_000


def loss_today(ctx: RiskContext) -> float:
    return max(0.0, ctx.start_equity - ctx.equity)


def drawdown(ctx: RiskContext) -> float:
    """Fraction below the peak, >= 0."""
    peak = ctx.peak
    return max(0.0, 1 - ctx.equity / peak) if peak > 0 else 1.0


@fail_closed("daily_loss")
def daily_loss(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "daily_loss"
    base = ctx.start_equity
    lost = loss_today(ctx)
    risk = order_risk(intent, ctx) or 0.0
    limit = settings.daily_loss * base
    if base <= 0 or exceeds(lost + risk, limit):
        share = (lost + risk) / base if base > 0 else 1.0
        return Verdict.deny(
            name,
            f"loss today {fmt_money(lost)} + this order's risk {fmt_money(risk)}"
            f" = {fmt_pct(share)} of day-start equity exceeds {fmt_pct(settings.daily_loss)}",
        )
    return Verdict.ok(name)


@fail_closed("max_drawdown")
def max_drawdown(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "max_drawdown"
    peak = ctx.peak
    risk = order_risk(intent, ctx) or 0.0
    below = max(0.0, peak - ctx.equity)
    if peak <= 0 or exceeds(below + risk, settings.max_drawdown * peak):
        share = (below + risk) / peak if peak > 0 else 1.0
        return Verdict.deny(
            name,
            f"drawdown {fmt_money(below)} + this order's risk {fmt_money(risk)}"
            f" = {fmt_pct(share)} of the peak {fmt_money(peak)} exceeds"
            f" {fmt_pct(settings.max_drawdown)}",
        )
    return Verdict.ok(name)


@fail_closed("consecutive_losses")
def consecutive_losses(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "consecutive_losses"
    if ctx.consecutive_losses >= settings.max_consecutive_losses:
        return Verdict.deny(
            name,
            f"{ctx.consecutive_losses} losing trades in a row; the limit is"
            f" {settings.max_consecutive_losses}",
        )
    return Verdict.ok(name)


@fail_closed("trades_per_day")
def trades_per_day(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "trades_per_day"
    if ctx.trades_today >= settings.max_trades_per_day:
        return Verdict.deny(
            name,
            f"{ctx.trades_today} trades today; the limit is {settings.max_trades_per_day}",
        )
    return Verdict.ok(name)


def recent_orders(ctx: RiskContext) -> list[int]:
    return sorted(t for t in ctx.order_times if ctx.now - MINUTE_MS < t <= ctx.now)


@fail_closed("order_rate")
def order_rate(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "order_rate"
    recent = recent_orders(ctx)
    if len(recent) >= settings.max_orders_per_minute:
        # The window frees a slot when its oldest order ages out.
        until = recent[len(recent) - settings.max_orders_per_minute] + MINUTE_MS
        return Verdict.deny(
            name,
            f"{len(recent)} orders in the last minute; the limit is"
            f" {settings.max_orders_per_minute} per minute",
            until,
        )
    return Verdict.ok(name)


@fail_closed("order_fill_ratio")
def order_fill_ratio(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "order_fill_ratio"
    orders = ctx.orders_today + 1
    ratio = orders / max(ctx.fills_today, 1)
    if orders > settings.order_fill_min_orders and ratio > settings.max_order_fill_ratio:
        return Verdict.deny(
            name,
            f"{orders} orders for {ctx.fills_today} fills today: ratio {ratio:.1f}"
            f" exceeds {settings.max_order_fill_ratio:g}",
        )
    return Verdict.ok(name)


@fail_closed("cooldown")
def cooldown(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "cooldown"
    last = ctx.last_exit_at.get(intent.symbol)
    if last is None or settings.cooldown_minutes == 0:
        return Verdict.ok(name)
    until = last + int(settings.cooldown_minutes * MINUTE_MS)
    if ctx.now < until:
        left = (until - ctx.now) / 1000
        return Verdict.deny(
            name,
            f"{intent.symbol} exited {(ctx.now - last) / 1000:.0f} s ago; cooldown of"
            f" {settings.cooldown_minutes:g} min has {left:.0f} s left",
            until,
        )
    return Verdict.ok(name)
