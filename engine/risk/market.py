"""Market conditions for entries: volatility, market hours and holidays, event blackouts.

The context carries what the calendar said (`market_open`, `blackouts`); the gate
fills those in from its `MarketCalendar` when the caller left them out.
"""

from __future__ import annotations

import math

from engine.config import RiskSettings
from engine.domain import Intent, Verdict
from engine.risk.context import RiskContext, fail_closed, fmt_pct


@fail_closed("volatility")
def volatility(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "volatility"
    value = ctx.atr_pct.get(intent.symbol)
    if value is None or not math.isfinite(value):
        return Verdict.deny(name, f"no ATR% for {intent.symbol} yet: volatility unknown")
    if value > settings.max_atr_pct:
        return Verdict.deny(
            name,
            f"ATR {fmt_pct(value)} of price exceeds {fmt_pct(settings.max_atr_pct)}",
        )
    return Verdict.ok(name)


@fail_closed("market_hours")
def market_hours(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "market_hours"
    if ctx.market_open is None or ctx.market_open.get(intent.symbol, True):
        return Verdict.ok(name)
    why = ctx.closed_reasons.get(intent.symbol, "")
    return Verdict.deny(
        name, f"the market for {intent.symbol} is closed" + (f": {why}" if why else "")
    )


@fail_closed("blackout")
def blackout(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "blackout"
    active = [b for b in ctx.blackouts or () if b.covers(intent.symbol, ctx.now)]
    if not active:
        return Verdict.ok(name)
    last = max(active, key=lambda b: b.end)
    names = ", ".join(sorted({b.name for b in active}))
    return Verdict.deny(name, f"event blackout for {intent.symbol}: {names}", last.end)
