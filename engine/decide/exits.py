"""Protective exits: has the latest bar reached a position's stop-loss or take-profit?

The stop and target normally rest at the broker, which fills them where the market
trades; this check is the fallback for a position without them (the broker refused
them, or they could not be placed), and its market exit says which level it was.

A level exactly touched counts as hit. When one bar reaches both levels, the order in
which they traded is unknowable from the bar, so the stop is assumed first: the
conservative reading, and the one a backtest should not flatter.
"""

from __future__ import annotations

import logging
import math

from engine.domain import ExitReason, Intent, OrderType, Position, Purpose, Side

log = logging.getLogger(__name__)


def _extremes(bar_high: float, bar_low: float, last: float) -> tuple[float, float]:
    """Highest and lowest traded price, ignoring values that are not numbers.

    The last trade may lie outside a bar that is still forming, so it counts too.
    """
    isfinite = math.isfinite
    if isfinite(bar_high) and isfinite(bar_low) and isfinite(last):
        return max(bar_high, bar_low, last), min(bar_high, bar_low, last)
    prices = [p for p in (bar_high, bar_low, last) if math.isfinite(p)]
    if not prices:
        return math.nan, math.nan
    return max(prices), min(prices)


def protective_exit(
    position: Position, bar_high: float, bar_low: float, last: float
) -> Intent | None:
    """A market exit for the whole position if its stop or target traded, else None."""
    if position.qty == 0:
        return None
    high, low = _extremes(bar_high, bar_low, last)
    if math.isnan(high):
        log.warning("no usable price to check stops for %s", position.symbol)
        return None
    long = position.qty > 0
    stop, target = position.stop, position.target
    if stop is not None and (low <= stop if long else high >= stop):
        reason, why = f"stop-loss hit at {stop}", ExitReason.STOP
    elif target is not None and (high >= target if long else low <= target):
        reason, why = f"take-profit hit at {target}", ExitReason.TARGET
    else:
        return None
    return Intent(
        symbol=position.symbol,
        side=Side.SELL if long else Side.BUY,
        qty=abs(position.qty),
        purpose=Purpose.EXIT,
        order_type=OrderType.MARKET,
        strength=1.0,
        reason=reason,
        exit_reason=why,
    )
