"""The trading-state rule of docs/ARCHITECTURE.md, and the health conditions that block entries.

ACTIVE allows everything; PAUSED denies anything that increases exposure; HALTED
denies everything except FLATTEN orders that shrink a position.
"""

from __future__ import annotations

from engine.config import RiskSettings
from engine.domain import Intent, Purpose, TradingState, Verdict
from engine.risk.context import RiskContext, fail_closed, reduces_exposure


def trading_state(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    name = "trading_state"
    state = ctx.trading_state
    if state is TradingState.ACTIVE:
        return Verdict.ok(name)
    reducing = reduces_exposure(intent, ctx)
    if state is TradingState.PAUSED:
        if reducing:
            return Verdict.ok(name)
        return Verdict.deny(name, f"trading is PAUSED: {intent.purpose} would increase exposure")
    if intent.purpose is Purpose.FLATTEN and reducing:
        return Verdict.ok(name)
    return Verdict.deny(name, f"trading is HALTED: only flattening orders, not {intent.purpose}")


@fail_closed("health")
def health(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
    """No entries while the broker is gone, the symbol's data is stale, or the monitor says so."""
    name = "health"
    if not ctx.broker_connected:
        return Verdict.deny(name, "broker disconnected: no entries until it is back")
    if intent.symbol in ctx.stale_symbols:
        return Verdict.deny(name, f"data for {intent.symbol} is stale: no entries")
    if ctx.entries_blocked:
        return Verdict.deny(name, f"entries blocked: {ctx.entries_blocked}")
    return Verdict.ok(name)
