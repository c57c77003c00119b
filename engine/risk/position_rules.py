"""The monitor's position rules, one rule per function: trailing stops' best
prices, the exits that close a position at market, and moving a resting stop.

Price exits (`stop_or_target`, `trailing_stop`, `position_loss`) need a price;
clock exits (`time_stop`, `stale_exit`, `disconnected_exit`) need only time. The
first rule in `EXIT_RULES` that fires names the exit."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.config import RiskSettings
from engine.decide.exits import protective_exit
from engine.domain import Order, OrderType, Position, Side, TradingState
from engine.risk.context import fmt_money, fmt_pct
from engine.risk.monitor_io import (
    ExitKind,
    ExitPosition,
    MonitorAction,
    MonitorInput,
    MoveStop,
    TrailState,
)
from engine.risk.monitor_rules import NOTHING, Look, Verdict

Exit = tuple[ExitKind, str]


def trails(inp: MonitorInput) -> dict[str, TrailState]:
    """The best price per open position, carried over while it is the same position.
    The last price counts, and the bar's high and low if the bar is newer than the
    position (an older bar's extremes came before the entry). A trail whose best did
    not move is handed on as it was: it is immutable and would be built equal."""
    out = {}
    prev_trails, last_prices, bars = inp.state.trails, inp.ctx.last_prices, inp.bars
    for symbol, pos in inp.ctx.positions.items():
        qty = pos.qty
        if qty == 0:
            continue
        long, opened_at = qty > 0, pos.opened_at
        prev = prev_trails.get(symbol)
        same = prev is not None and prev.long == long and prev.opened_at == opened_at
        best = prev.best if same and prev is not None else pos.avg_price
        start = best
        last = last_prices.get(symbol)
        if last is not None and math.isfinite(last):
            best = _better(best, last, long)
        bar = bars.get(symbol)
        if bar is not None and (opened_at is None or bar.ts > opened_at):
            for price in (bar.high, bar.low):
                if math.isfinite(price):
                    best = _better(best, price, long)
        if best is start and same and prev is not None and prev.symbol == symbol:
            out[symbol] = prev
        else:
            out[symbol] = TrailState(symbol, long, opened_at, best)
    return out


def _better(best: float, price: float, long: bool) -> float:
    return max(best, price) if long else min(best, price)


def trail_level(
    settings: RiskSettings, trail: TrailState | None, atr: float | None
) -> float | None:
    """The trailing stop's price for a position, None when trailing is off or unknown."""
    s = settings
    if trail is None or s.trailing_stop == "off":
        return None
    sign = 1 if trail.long else -1
    if s.trailing_stop == "percent":
        return trail.best * (1 - sign * s.trail_percent)
    if atr is None or not math.isfinite(atr) or atr <= 0:
        return None
    return trail.best - sign * s.trail_atr * atr


@dataclass(frozen=True, slots=True)
class Held:
    """One open position as the exit rules see it. `resting`: a stop or target rests
    at the broker, which fills them where the market trades; the monitor then leaves
    the stop, the target and the trail to it. `prices`: (last, high, low), the bar's
    range only if the bar is newer than the position; None without a last price."""

    pos: Position
    trail: TrailState | None
    resting: bool
    prices: tuple[float, float, float] | None


def _held(look: Look, pos: Position, resting: bool) -> Held:
    last = look.ctx.price(pos.symbol)
    prices = None
    if last is not None:
        bar = look.inp.bars.get(pos.symbol)
        fresh = bar is not None and (pos.opened_at is None or bar.ts > pos.opened_at)
        high = bar.high if fresh and bar is not None else last
        low = bar.low if fresh and bar is not None else last
        prices = (last, high, low)
    return Held(pos, look.trails.get(pos.symbol), resting, prices)


def stop_or_target(look: Look, held: Held) -> Exit | None:
    if held.resting or held.prices is None:
        return None
    last, high, low = held.prices
    hit = protective_exit(held.pos, high, low, last)
    if hit is None:
        return None
    kind = ExitKind.STOP_LOSS if hit.reason.startswith("stop") else ExitKind.TAKE_PROFIT
    return kind, hit.reason


def trailing_stop(look: Look, held: Held) -> Exit | None:
    if held.resting or held.prices is None:
        return None
    _, high, low = held.prices
    level = trail_level(look.settings, held.trail, look.inp.atr.get(held.pos.symbol))
    if level is None or not (low <= level if held.pos.qty > 0 else high >= level):
        return None
    best = held.trail.best if held.trail else math.nan
    return ExitKind.TRAILING_STOP, f"trailing stop {level:,.4f} hit (best {best:,.4f} since entry)"


def position_loss(look: Look, held: Held) -> Exit | None:
    ctx, s, pos = look.ctx, look.settings, held.pos
    if held.prices is None:
        return None
    loss = -(held.prices[0] - pos.avg_price) * pos.qty
    if not (ctx.equity > 0 and loss > s.max_position_loss * ctx.equity):
        return None
    return ExitKind.POSITION_LOSS, (
        f"open loss {fmt_money(loss)} = {fmt_pct(loss / ctx.equity)} of equity"
        f" exceeds {fmt_pct(s.max_position_loss)}"
    )


def time_stop(look: Look, held: Held) -> Exit | None:
    s, opened_at = look.settings, held.pos.opened_at
    if s.time_stop_minutes <= 0 or opened_at is None:
        return None
    held_ms = look.ctx.now - opened_at
    if held_ms < s.time_stop_minutes * 60_000:
        return None
    return ExitKind.TIME_STOP, (
        f"held {held_ms / 60_000:.1f} min, time stop {s.time_stop_minutes:g} min"
    )


def stale_exit(look: Look, held: Held) -> Exit | None:
    s, symbol = look.settings, held.pos.symbol
    if s.stale_flatten_seconds <= 0 or symbol not in look.stale:
        return None
    silent = look.ctx.now - look.stale[symbol]
    stale_limit = s.stale_bar_intervals * look.inp.bar_interval_ms
    if silent < stale_limit + s.stale_flatten_seconds * 1000:
        return None
    return ExitKind.STALE_DATA, f"no bar for {silent / 1000:.0f} s"


def disconnected_exit(look: Look, held: Held) -> Exit | None:
    s, since = look.settings, look.disconnected_since
    if s.disconnect_flatten_seconds <= 0 or since is None:
        return None
    down = look.inp.wall - since
    if down < s.disconnect_flatten_seconds * 1000:
        return None
    return ExitKind.DISCONNECTED, f"broker disconnected for {down / 1000:.0f} s"


EXIT_RULES: tuple[Callable[[Look, Held], Exit | None], ...] = (
    stop_or_target,
    trailing_stop,
    position_loss,
    time_stop,
    stale_exit,
    disconnected_exit,
)


def move_stop(look: Look, pos: Position, stop_order: Order) -> MoveStop | None:
    """Tighten the resting stop to the trailing level once the trail passes it;
    a stop only ever moves in the position's favour."""
    trail = look.trails.get(pos.symbol)
    level = trail_level(look.settings, trail, look.inp.atr.get(pos.symbol))
    current = stop_order.stop_price
    if level is None or current is None or not math.isfinite(level) or level <= 0:
        return None
    if (level <= current) if pos.qty > 0 else (level >= current):
        return None
    best = trail.best if trail else math.nan
    return MoveStop(
        pos.symbol,
        stop_order.client_order_id,
        level,
        f"trailing stop {current:,.4f} -> {level:,.4f} (best {best:,.4f} since entry)",
    )


def _first_exit(look: Look, held: Held) -> Exit | None:
    for rule in EXIT_RULES:
        found = rule(look, held)
        if found is not None:
            return found
    return None


def _working(
    orders: Sequence[Order],
) -> tuple[set[str], dict[str, Order], set[str]]:
    """From the open orders, in one pass: the symbols with an exit working (one the
    engine chose, not a resting stop or target), the resting stop per symbol (the
    last one listed), and the symbols with a stop or target resting."""
    exiting: set[str] = set()
    stops: dict[str, Order] = {}
    resting: set[str] = set()
    for o in orders:
        if not o.status.is_open:
            continue
        if o.protective:
            resting.add(o.symbol)
            if o.order_type is OrderType.STOP:
                stops[o.symbol] = o
        elif o.purpose.reduces_exposure:
            exiting.add(o.symbol)
    return exiting, stops, resting


def positions(look: Look) -> Verdict:
    """Per open position, by symbol: move its resting stop, close it if an exit rule fires.
    Not while an exit for it is already working, nor while HALTED (the emergency
    stop's flatten owns the book then)."""
    ctx = look.ctx
    if ctx.trading_state is TradingState.HALTED:
        return NOTHING
    exiting, stops, resting = _working(ctx.open_orders)
    out: list[MonitorAction] = []
    for symbol, pos in sorted(ctx.positions.items()):
        if pos.qty == 0 or symbol in exiting:
            continue
        stop_order = stops.get(symbol)
        move = move_stop(look, pos, stop_order) if stop_order is not None else None
        if move is not None:
            out.append(move)
        held = _held(look, pos, symbol in resting)
        found = _first_exit(look, held)
        if found is not None:
            side = Side.SELL if pos.qty > 0 else Side.BUY
            out.append(ExitPosition(symbol, side, abs(pos.qty), found[1], found[0]))
    return Verdict(tuple(out))
