"""Fill simulation for the paper broker: pure functions from an order, a bar and the
paper settings to a fill decision. No I/O, no clock, no state beyond the arguments.

The rules, chosen to be conservative for the trader (a backtest that fills too
easily lies in the strategy's favour):

- Market orders fill at a reference price moved against the trader by slippage:
  `slippage_bps` of the price plus `slippage_range_share` of the bar's high-low range.
  At submission the reference is the last close; a remainder still working when a
  new bar arrives was in the market when that bar opened, so it fills at the open.
- Limit orders fill only when the bar trades *through* the limit (buy: low < limit,
  sell: high > limit). A bar that merely touches the limit proves nothing: the
  orders already resting at that price are ahead in the queue and may have taken
  all the volume there. The fill is at the limit, or at the open when the bar
  opened beyond it (a gap in the trader's favour). No slippage: a limit caps it.
- Stop orders trigger when the bar reaches the stop (buy: high >= stop, sell:
  low <= stop): unlike a limit, a stop needs only one trade at its price. Once
  triggered they are market orders: filled at the stop, or at the open when the bar
  gapped through it, with slippage.
- Stop-limit orders trigger like stops, then rest as limits. On the trigger bar the
  order of prices inside the bar is unknown, so they fill there only when the limit
  is certainly reachable after the trigger: triggered at the open (a gap), then the
  rest of the bar trades through the limit; or triggered inside the bar at a stop
  strictly better than the limit, then it fills at the stop. Otherwise they wait
  for the next bar as plain limits.
- Participation: one order fills at most `max_participation` x bar volume per bar,
  rounded down to whole shares; the remainder keeps working on later bars.
- No fill is ever priced outside the range of the bar it is decided on: slippage
  that would carry a price past the bar's high or low stops there. A gap fill is
  at the open, which is in the range by definition.
- Commission per fill: max(`commission_min`, qty x `commission_per_share` +
  `commission_bps` of the notional).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.config import PaperSettings
from engine.domain import Bar, Order, OrderType, Side

# Guards floor() against volume x share landing a hair under a whole number.
_QTY_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class FillDecision:
    qty: float  # whole shares, > 0
    price: float
    commission: float
    ref_price: float  # the close of the bar the fill was decided at


@dataclass(frozen=True, slots=True)
class Match:
    """What one bar did to a working order."""

    triggered: bool  # the stop has been reached, on this bar or before
    fill: FillDecision | None


def commission(qty: float, settings: PaperSettings, price: float = 0.0) -> float:
    per_share = qty * settings.commission_per_share
    return max(settings.commission_min, per_share + qty * price * settings.commission_bps / 10_000)


def slippage(price: float, bar: Bar, settings: PaperSettings) -> float:
    """The adverse price move, >= 0, in money per share."""
    return price * settings.slippage_bps / 10_000 + settings.slippage_range_share * (
        bar.high - bar.low
    )


def slipped(price: float, side: Side, bar: Bar, settings: PaperSettings) -> float:
    """`price` moved against the trader: buys pay more, sells receive less."""
    return price + side.sign * slippage(price, bar, settings)


def capacity(bar: Bar, settings: PaperSettings) -> float:
    """The most whole shares one order may fill on this bar."""
    return float(math.floor(settings.max_participation * bar.volume + _QTY_EPSILON))


def better(side: Side, a: float, b: float) -> float:
    """The price the trader prefers: the lower for a buy, the higher for a sell."""
    return min(a, b) if side is Side.BUY else max(a, b)


def worse(side: Side, a: float, b: float) -> float:
    return max(a, b) if side is Side.BUY else min(a, b)


def _strictly_better(side: Side, a: float, b: float) -> bool:
    return a < b if side is Side.BUY else a > b


def trades_through(side: Side, limit: float, bar: Bar) -> bool:
    return bar.low < limit if side is Side.BUY else bar.high > limit


def stop_reached(side: Side, stop: float, bar: Bar) -> bool:
    return bar.high >= stop if side is Side.BUY else bar.low <= stop


def gapped_through(side: Side, stop: float, bar: Bar) -> bool:
    """The bar opened at or beyond the stop: it triggered at the open."""
    return bar.open >= stop if side is Side.BUY else bar.open <= stop


def within(price: float, bar: Bar) -> float:
    """`price` held inside the bar's range: nobody traded beyond its high or low."""
    return min(max(price, bar.low), bar.high)


def _decide(qty: float, price: float, bar: Bar, settings: PaperSettings) -> Match:
    fill_price = within(price, bar)
    return Match(
        True, FillDecision(qty, fill_price, commission(qty, settings, fill_price), bar.close)
    )


def fill_at_market(order: Order, bar: Bar, settings: PaperSettings) -> FillDecision | None:
    """A market order at submission, against the last bar seen: the close plus slippage.
    None when the bar's volume leaves no whole share for it."""
    qty = min(order.remaining, capacity(bar, settings))
    if qty <= 0:
        return None
    price = within(slipped(bar.close, order.side, bar, settings), bar)
    return FillDecision(qty, price, commission(qty, settings, price), bar.close)


def match_bar(order: Order, bar: Bar, settings: PaperSettings, *, triggered: bool) -> Match:
    """A working order against a new bar. `triggered` says whether its stop was
    reached on an earlier bar; the returned Match carries the updated flag."""
    side = order.side
    qty = min(order.remaining, capacity(bar, settings))
    no_fill = Match(triggered, None)

    if order.order_type is OrderType.MARKET:
        if qty <= 0:
            return no_fill
        return _decide(qty, slipped(bar.open, side, bar, settings), bar, settings)

    if order.order_type is OrderType.LIMIT:
        limit = _required(order.limit_price, "limit")
        if qty <= 0 or not trades_through(side, limit, bar):
            return no_fill
        return _decide(qty, better(side, bar.open, limit), bar, settings)

    stop = _required(order.stop_price, "stop")
    now_triggered = triggered or stop_reached(side, stop, bar)
    if not now_triggered:
        return no_fill
    waiting = Match(True, None)
    if qty <= 0:
        return waiting

    if order.order_type is OrderType.STOP:
        # Already a market order when the bar opened, or triggered by it: from the open
        # when it gapped, from the stop otherwise.
        base = bar.open if triggered else worse(side, bar.open, stop)
        return _decide(qty, slipped(base, side, bar, settings), bar, settings)

    if order.order_type is OrderType.STOP_LIMIT:
        return _match_stop_limit(order, bar, settings, qty, triggered=triggered)

    raise ValueError(f"unknown order type {order.order_type!r}")


def _match_stop_limit(
    order: Order, bar: Bar, settings: PaperSettings, qty: float, *, triggered: bool
) -> Match:
    """A stop-limit whose stop is reached (on this bar or before) and `qty` to fill:
    a limit order from then on, filled from the stop itself when triggered inside
    the bar at a stop better than the limit."""
    side = order.side
    stop = _required(order.stop_price, "stop")
    limit = _required(order.limit_price, "limit")
    waiting = Match(True, None)
    if triggered or gapped_through(side, stop, bar):
        if trades_through(side, limit, bar):
            return _decide(qty, better(side, bar.open, limit), bar, settings)
        return waiting
    if _strictly_better(side, stop, limit):
        return _decide(qty, stop, bar, settings)
    return waiting


def _required(price: float | None, what: str) -> float:
    if price is None:
        raise ValueError(f"a {what} order needs a {what} price")
    return price
