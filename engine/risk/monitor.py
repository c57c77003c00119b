"""The monitor: every second, what must happen to protect the account now.

`Monitor(settings.risk).step(MonitorInput) -> MonitorResult(actions, state)` is
pure: it decides, the runner acts. The runner keeps `result.state` (trailing
stops' best prices, when the broker went away, which alert conditions are
active) and passes it back in the next input.

Actions, and what the runner does with each:

- `ExitPosition(symbol, side, qty, reason, kind)`: submit `action.intent()` (a
  market EXIT of the whole position) through the gate. Not emitted while an exit
  for the symbol is already working.
- `MoveStop(symbol, client_order_id, stop, reason)`: the trailing stop moved past
  the resting stop order; modify that order to `stop`. Emitted instead of an exit
  while a resting stop guards the position (the broker fills it where it trades).
- `KillSwitch(reason)`: the emergency stop (HALTED, cancel all, flatten, CRITICAL
  alert). Not emitted while already HALTED.
- `Pause(reason)`: set PAUSED with this reason; only for a fault the monitor cannot
  judge past (an equity that is not a number), so it stays until someone acts.
  Only emitted while ACTIVE; a CRITICAL `RaiseAlert` comes with it.
- `BlockEntries(reason, symbols)`: level-triggered; while any is emitted the
  cycle denies entries (`RiskContext.entries_blocked` / `stale_symbols`); when
  none is emitted, entries are free again. `symbols` empty = every symbol.
- `RaiseAlert(severity, title, message, dedupe_key)`: raise it. Edge-triggered:
  once when a condition starts, and an INFO note when it clears.

Limits that belong to the trading day (the losing streak, trades per day) block
entries until the next trading day and lift by themselves with an INFO alert;
exits go on meanwhile. Only the kill switch (HALTED), a fault's pause and an
operator's pause stay until someone acts.

Two clocks: `ctx.now` is market time (staleness, time stops, day limits);
`wall_now` is the wall clock (the dead-man's switch, how long the broker has been
away), because those are about this process being alive, not about the market.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from engine.config import RiskSettings
from engine.decide.exits import protective_exit
from engine.domain import (
    Bar,
    ExitReason,
    Intent,
    Order,
    OrderType,
    Position,
    Purpose,
    Severity,
    Side,
    TradingState,
)
from engine.market.calendar import MarketCalendar
from engine.risk import limits
from engine.risk.context import RiskContext, fmt_money, fmt_pct
from engine.risk.usage import LimitUsage, apply_migrations, usage, write_usage

__all__ = [
    "BlockEntries",
    "ExitKind",
    "ExitPosition",
    "KillSwitch",
    "LimitUsage",
    "Monitor",
    "MonitorAction",
    "MonitorInput",
    "MonitorResult",
    "MonitorState",
    "MoveStop",
    "Pause",
    "RaiseAlert",
    "TrailState",
    "apply_migrations",
    "usage",
    "write_usage",
]

logger = logging.getLogger(__name__)

SOURCE = "monitor"
DEADMAN_KEY = "deadman"


class ExitKind(StrEnum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    TIME_STOP = "time_stop"
    POSITION_LOSS = "position_loss"
    STALE_DATA = "stale_data"
    DISCONNECTED = "disconnected"

    @property
    def exit_reason(self) -> ExitReason:
        return _EXIT_REASONS[self]


_EXIT_REASONS = {
    ExitKind.STOP_LOSS: ExitReason.STOP,
    ExitKind.TAKE_PROFIT: ExitReason.TARGET,
    ExitKind.TRAILING_STOP: ExitReason.TRAILING,
    ExitKind.TIME_STOP: ExitReason.TIME,
    ExitKind.POSITION_LOSS: ExitReason.POSITION_LOSS,
    ExitKind.STALE_DATA: ExitReason.STALE_DATA,
    ExitKind.DISCONNECTED: ExitReason.DISCONNECTED,
}


@dataclass(frozen=True, slots=True)
class ExitPosition:
    symbol: str
    side: Side  # the closing side
    qty: float
    reason: str
    kind: ExitKind

    def intent(self) -> Intent:
        return Intent(
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            purpose=Purpose.EXIT,
            order_type=OrderType.MARKET,
            strength=1.0,
            reason=f"{self.kind}: {self.reason}",
            exit_reason=self.kind.exit_reason,
        )


@dataclass(frozen=True, slots=True)
class MoveStop:
    symbol: str
    client_order_id: str  # the resting stop order
    stop: float
    reason: str


@dataclass(frozen=True, slots=True)
class KillSwitch:
    reason: str


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str


@dataclass(frozen=True, slots=True)
class BlockEntries:
    reason: str
    symbols: frozenset[str] = frozenset()  # empty = every symbol
    until: int | None = None  # a day limit: blocked until the next trading day starts


@dataclass(frozen=True, slots=True)
class RaiseAlert:
    severity: Severity
    title: str
    message: str
    dedupe_key: str
    source: str = SOURCE


MonitorAction = ExitPosition | MoveStop | KillSwitch | Pause | BlockEntries | RaiseAlert

# What the INFO note says when a day-scoped limit lifts at the next trading day.
DAY_LIMIT_LIFTED = {
    "losing-streak": "Losing-streak pause lifted: a new trading day",
    "trades-per-day": "Trade limit reset: a new trading day",
}


@dataclass(frozen=True, slots=True)
class TrailState:
    """The best price a position has seen since it was opened (high if long, low if short)."""

    symbol: str
    long: bool
    opened_at: int | None
    best: float

    def matches(self, position: Position) -> bool:
        return self.long == (position.qty > 0) and self.opened_at == position.opened_at


@dataclass(frozen=True, slots=True)
class MonitorState:
    trails: Mapping[str, TrailState] = field(default_factory=dict)
    disconnected_since: int | None = None
    conditions: frozenset[str] = frozenset()  # alert keys currently active


@dataclass(frozen=True, slots=True)
class MonitorInput:
    """What the monitor looks at.

    ctx: the risk context (now, equity, day-start and peak equity, positions, last
      prices, open orders, trading state, consecutive losses, broker_connected).
    bars: the latest bar per symbol (its high/low for stops, its ts for staleness).
    atr: ATR per symbol in price units (trailing stops in ATR mode).
    bar_interval_ms: how often each symbol should get a bar (in open market time).
    cycle_interval_ms / last_cycle_at / started_at: the dead-man's switch, on the
      wall clock; before the first cycle completes, the time since start counts.
    wall_now: the wall clock (None: same as ctx.now, for a market that runs on it).
    next_day: when the next trading day starts (named in day-limit alerts).
    """

    ctx: RiskContext
    bars: Mapping[str, Bar] = field(default_factory=dict)
    atr: Mapping[str, float] = field(default_factory=dict)
    bar_interval_ms: int = 60_000
    cycle_interval_ms: int = 1_000
    last_cycle_at: int | None = None
    started_at: int | None = None
    state: MonitorState = field(default_factory=MonitorState)
    wall_now: int | None = None
    next_day: int | None = None

    @property
    def wall(self) -> int:
        return self.ctx.now if self.wall_now is None else self.wall_now


@dataclass(frozen=True, slots=True)
class MonitorResult:
    actions: tuple[MonitorAction, ...]
    state: MonitorState


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S UTC")


def _day_and_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Monitor:
    """`calendar` tells which hours are open, so a closed market is not stale data."""

    def __init__(self, settings: RiskSettings, calendar: MarketCalendar | None = None):
        self.settings = settings
        self.calendar = calendar

    def evaluate(self, inp: MonitorInput) -> list[MonitorAction]:
        """The actions only; use `step` to keep trailing stops and alert state."""
        return list(self.step(inp).actions)

    def step(self, inp: MonitorInput) -> MonitorResult:
        ctx = inp.ctx
        actions: list[MonitorAction] = []
        trails = self._trails(inp)
        conditions: dict[str, RaiseAlert] = {}
        fault = self._equity_fault(ctx)
        if fault is None:
            actions += self._account(ctx)
        else:
            # NaN compares false with every limit: the kill switch could never fire,
            # so trading stops until the figures can be trusted again.
            conditions["equity-fault"] = RaiseAlert(
                Severity.CRITICAL,
                "Account figures are not numbers: trading paused",
                fault,
                "equity-fault",
            )
            if ctx.trading_state is TradingState.ACTIVE:
                actions.append(Pause(f"equity fault: {fault}"))
        self._day_limits(inp, actions, conditions)
        disconnected_since = self._connection(inp, actions, conditions)
        stale = self.stale_symbols(inp)  # once a step: the calendar's arithmetic is not free
        self._staleness(inp, stale, actions, conditions)
        self._deadman(inp, conditions)
        actions += self._exits(inp, trails, disconnected_since, stale)
        actions += self._alerts(inp.state.conditions, conditions, ctx.now)
        state = MonitorState(trails, disconnected_since, frozenset(conditions))
        return MonitorResult(tuple(actions), state)

    # -- account-level: kill switch and pause ------------------------------------

    @staticmethod
    def _equity_fault(ctx: RiskContext) -> str | None:
        for name, value in (
            ("equity", ctx.equity),
            ("day-start equity", ctx.start_equity),
            ("peak equity", ctx.peak_equity if ctx.peak_equity is not None else ctx.equity),
        ):
            if not math.isfinite(value):
                return f"{name} is {value!r}; the loss limits cannot be checked"
        return None

    def _account(self, ctx: RiskContext) -> list[MonitorAction]:
        s = self.settings
        out: list[MonitorAction] = []
        if ctx.trading_state is not TradingState.HALTED:
            lost, base = limits.loss_today(ctx), ctx.start_equity
            peak, dd = ctx.peak, limits.drawdown(ctx)
            if base > 0 and lost >= s.daily_loss * base:
                out.append(
                    KillSwitch(
                        f"daily loss {fmt_money(lost)} = {fmt_pct(lost / base)} of day-start"
                        f" equity {fmt_money(base)} reached the {fmt_pct(s.daily_loss)} limit"
                    )
                )
            elif dd >= s.max_drawdown:
                out.append(
                    KillSwitch(
                        f"drawdown {fmt_pct(dd)} from the peak {fmt_money(peak)} reached the"
                        f" {fmt_pct(s.max_drawdown)} limit"
                    )
                )
        return out

    def _day_limits(
        self, inp: MonitorInput, actions: list[MonitorAction], conditions: dict[str, RaiseAlert]
    ) -> None:
        """Limits of the trading day: entries wait for the next one, exits go on."""
        ctx, s = inp.ctx, self.settings

        def until() -> str:  # formatted only when a limit is hit, not every step
            return f" until {_day_and_time(inp.next_day)}" if inp.next_day is not None else ""

        if ctx.consecutive_losses >= s.max_consecutive_losses:
            reason = (
                f"{ctx.consecutive_losses} losing trades in a row today"
                f" (limit {s.max_consecutive_losses})"
            )
            actions.append(BlockEntries(reason, until=inp.next_day))
            conditions["losing-streak"] = RaiseAlert(
                Severity.HIGH,
                "Entries paused for the day: losing streak",
                f"{reason}; no new entries{until()}, the next trading day; exits go on",
                "losing-streak",
            )
        if ctx.trades_today >= s.max_trades_per_day:
            reason = f"{ctx.trades_today} trades today (limit {s.max_trades_per_day})"
            actions.append(BlockEntries(reason, until=inp.next_day))
            conditions["trades-per-day"] = RaiseAlert(
                Severity.WARNING,
                "Entries paused for the day: trade limit",
                f"{reason}; no new entries{until()}, the next trading day; exits go on",
                "trades-per-day",
            )

    # -- health: broker, data, dead-man --------------------------------------------

    def _connection(
        self, inp: MonitorInput, actions: list[MonitorAction], conditions: dict[str, RaiseAlert]
    ) -> int | None:
        ctx = inp.ctx
        if ctx.broker_connected:
            return None
        since = inp.state.disconnected_since or inp.wall
        reason = f"broker disconnected since {_hhmm(since)}"
        actions.append(BlockEntries(reason))
        conditions["broker-disconnected"] = RaiseAlert(
            Severity.HIGH,
            "Broker disconnected: entries blocked",
            f"{reason}; exits and stops still run",
            "broker-disconnected",
        )
        return since

    def stale_symbols(self, inp: MonitorInput) -> dict[str, int]:
        """Symbols that missed too many bars, with the time of their last bar. Only
        open market time counts: a night, weekend or holiday is not stale."""
        limit = self.settings.stale_bar_intervals
        return {
            s: b.ts
            for s, b in inp.bars.items()
            if self._missed(s, b.ts, inp.ctx.now, inp.bar_interval_ms) > limit
        }

    def _missed(self, symbol: str, last_ts: int, now: int, bar_ms: int) -> float:
        if self.calendar is None:
            return (now - last_ts) / bar_ms if now > last_ts else 0.0
        return self.calendar.missed_bars(symbol, last_ts, now, bar_ms)

    def _staleness(
        self,
        inp: MonitorInput,
        stale: Mapping[str, int],
        actions: list[MonitorAction],
        conditions: dict[str, RaiseAlert],
    ) -> None:
        if not stale:
            return
        names = ", ".join(sorted(stale))
        oldest = min(stale.values())
        reason = f"no bar for {names} since {_hhmm(oldest)}"
        actions.append(BlockEntries(reason, frozenset(stale)))
        conditions["stale-data"] = RaiseAlert(
            Severity.WARNING,
            "Stale market data: entries blocked",
            f"{reason} (limit {self.settings.stale_bar_intervals:g} bar intervals)",
            "stale-data",
        )

    def _deadman(self, inp: MonitorInput, conditions: dict[str, RaiseAlert]) -> None:
        alert = deadman_alert(
            inp.last_cycle_at,
            inp.started_at,
            inp.wall,
            inp.cycle_interval_ms,
            self.settings.deadman_intervals,
        )
        if alert is not None:
            conditions[alert.dedupe_key] = alert

    def _alerts(
        self, before: frozenset[str], now_active: dict[str, RaiseAlert], now: int
    ) -> list[MonitorAction]:
        out: list[MonitorAction] = [a for k, a in sorted(now_active.items()) if k not in before]
        for key in sorted(before - set(now_active)):
            lifted = DAY_LIMIT_LIFTED.get(key)
            if lifted is None:
                out.append(
                    RaiseAlert(Severity.INFO, f"Recovered: {key}", f"cleared at {_hhmm(now)}", key)
                )
            else:
                # Its own alert, not folded into the limit's: the operator sees it lift.
                message = f"entries allowed again from {_day_and_time(now)}"
                out.append(RaiseAlert(Severity.INFO, lifted, message, f"{key}:lifted"))
        return out

    # -- positions: stops, trailing, time, loss, stale, disconnected ----------------

    def _trails(self, inp: MonitorInput) -> dict[str, TrailState]:
        """The best price per open position, carried over while it is the same position."""
        out = {}
        for symbol, pos in inp.ctx.positions.items():
            if pos.qty == 0:
                continue
            prev = inp.state.trails.get(symbol)
            long = pos.qty > 0
            best = prev.best if prev is not None and prev.matches(pos) else pos.avg_price
            for price in self._seen(inp, symbol, pos, previous=prev is not None):
                best = max(best, price) if long else min(best, price)
            out[symbol] = TrailState(symbol, long, pos.opened_at, best)
        return out

    def _seen(
        self, inp: MonitorInput, symbol: str, pos: Position, *, previous: bool
    ) -> list[float]:
        """Prices traded since the position opened: the last, and the bar's range if the
        bar is newer than the position (an older bar's extremes came before the entry)."""
        prices = []
        last = inp.ctx.last_prices.get(symbol)
        if last is not None and math.isfinite(last):
            prices.append(last)
        bar = inp.bars.get(symbol)
        if bar is not None and (pos.opened_at is None or bar.ts > pos.opened_at):
            prices += [p for p in (bar.high, bar.low) if math.isfinite(p)]
        return prices

    def _exits(
        self,
        inp: MonitorInput,
        trails: Mapping[str, TrailState],
        disconnected_since: int | None,
        stale: Mapping[str, int],
    ) -> list[MonitorAction]:
        ctx = inp.ctx
        if ctx.trading_state is TradingState.HALTED:
            return []  # the emergency stop's flatten owns the book now
        exiting = {
            o.symbol
            for o in ctx.open_orders
            if o.status.is_open and o.purpose.reduces_exposure and not o.protective
        }
        resting_stops = {
            o.symbol: o
            for o in ctx.open_orders
            if o.status.is_open and o.protective and o.order_type is OrderType.STOP
        }
        resting = {o.symbol for o in ctx.open_orders if o.status.is_open and o.protective}
        out: list[MonitorAction] = []
        for symbol, pos in sorted(ctx.positions.items()):
            if pos.qty == 0 or symbol in exiting:
                continue
            stop_order = resting_stops.get(symbol)
            if stop_order is not None:
                move = self._move_stop(inp, pos, stop_order, trails.get(symbol))
                if move is not None:
                    out.append(move)
            found = self._exit_reason(
                inp, pos, trails.get(symbol), stale, disconnected_since, resting=symbol in resting
            )
            if found is not None:
                kind, reason = found
                side = Side.SELL if pos.qty > 0 else Side.BUY
                out.append(ExitPosition(symbol, side, abs(pos.qty), reason, kind))
        return out

    def _exit_reason(
        self,
        inp: MonitorInput,
        pos: Position,
        trail: TrailState | None,
        stale: Mapping[str, int],
        disconnected_since: int | None,
        *,
        resting: bool = False,
    ) -> tuple[ExitKind, str] | None:
        """Why the position must be closed at market now, if it must. `resting`: a
        stop or target rests at the broker, which fills them where the market
        trades; the monitor then leaves the stop, the target and the trail to it."""
        return self._price_exit(inp, pos, trail, resting=resting) or self._clock_exit(
            inp, pos, stale, disconnected_since
        )

    def _price_exit(
        self, inp: MonitorInput, pos: Position, trail: TrailState | None, *, resting: bool
    ) -> tuple[ExitKind, str] | None:
        """Exits the price decides: stop, target, trailing stop, open loss."""
        ctx, s = inp.ctx, self.settings
        symbol = pos.symbol
        last = ctx.price(symbol)
        if last is None:
            return None
        bar = inp.bars.get(symbol)
        fresh_bar = bar is not None and (pos.opened_at is None or bar.ts > pos.opened_at)
        high = bar.high if fresh_bar and bar is not None else last
        low = bar.low if fresh_bar and bar is not None else last
        hit = None if resting else protective_exit(pos, high, low, last)
        if hit is not None:
            kind = ExitKind.STOP_LOSS if hit.reason.startswith("stop") else ExitKind.TAKE_PROFIT
            return kind, hit.reason
        level = None if resting else self.trail_level(trail, inp.atr.get(symbol))
        if level is not None and (low <= level if pos.qty > 0 else high >= level):
            best = trail.best if trail else math.nan
            return ExitKind.TRAILING_STOP, (
                f"trailing stop {level:,.4f} hit (best {best:,.4f} since entry)"
            )
        loss = -(last - pos.avg_price) * pos.qty
        if ctx.equity > 0 and loss > s.max_position_loss * ctx.equity:
            return ExitKind.POSITION_LOSS, (
                f"open loss {fmt_money(loss)} = {fmt_pct(loss / ctx.equity)} of equity"
                f" exceeds {fmt_pct(s.max_position_loss)}"
            )
        return None

    def _clock_exit(
        self,
        inp: MonitorInput,
        pos: Position,
        stale: Mapping[str, int],
        disconnected_since: int | None,
    ) -> tuple[ExitKind, str] | None:
        """Exits time decides: held too long, no data for too long, broker down too long."""
        ctx, s = inp.ctx, self.settings
        symbol = pos.symbol
        if s.time_stop_minutes > 0 and pos.opened_at is not None:
            held_ms = ctx.now - pos.opened_at
            if held_ms >= s.time_stop_minutes * 60_000:
                return ExitKind.TIME_STOP, (
                    f"held {held_ms / 60_000:.1f} min, time stop {s.time_stop_minutes:g} min"
                )
        stale_limit = s.stale_bar_intervals * inp.bar_interval_ms
        if s.stale_flatten_seconds > 0 and symbol in stale:
            silent = ctx.now - stale[symbol]
            if silent >= stale_limit + s.stale_flatten_seconds * 1000:
                return ExitKind.STALE_DATA, f"no bar for {silent / 1000:.0f} s"
        if s.disconnect_flatten_seconds > 0 and disconnected_since is not None:
            down = inp.wall - disconnected_since
            if down >= s.disconnect_flatten_seconds * 1000:
                return ExitKind.DISCONNECTED, f"broker disconnected for {down / 1000:.0f} s"
        return None

    def _move_stop(
        self, inp: MonitorInput, pos: Position, stop_order: Order, trail: TrailState | None
    ) -> MoveStop | None:
        """Tighten the resting stop to the trailing level once the trail passes it;
        a stop only ever moves in the position's favour."""
        level = self.trail_level(trail, inp.atr.get(pos.symbol))
        current = stop_order.stop_price
        if level is None or current is None or not math.isfinite(level) or level <= 0:
            return None
        long = pos.qty > 0
        if (level <= current) if long else (level >= current):
            return None
        best = trail.best if trail else math.nan
        return MoveStop(
            pos.symbol,
            stop_order.client_order_id,
            level,
            f"trailing stop {current:,.4f} -> {level:,.4f} (best {best:,.4f} since entry)",
        )

    def trail_level(self, trail: TrailState | None, atr: float | None) -> float | None:
        """The trailing stop's price for a position, None when trailing is off or unknown."""
        s = self.settings
        if trail is None or s.trailing_stop == "off":
            return None
        sign = 1 if trail.long else -1
        if s.trailing_stop == "percent":
            return trail.best * (1 - sign * s.trail_percent)
        if atr is None or not math.isfinite(atr) or atr <= 0:
            return None
        return trail.best - sign * s.trail_atr * atr


def deadman_alert(
    last_cycle_at: int | None,
    started_at: int | None,
    now: int,
    cycle_interval_ms: int,
    intervals: float,
) -> RaiseAlert | None:
    """The dead-man's switch: no completed cycle for `intervals` cycle intervals.

    One rule for the monitor (on the trading thread) and the watchdog (on its own
    thread, for when the trading thread is stuck): same limit, title and key.
    """
    last = last_cycle_at if last_cycle_at is not None else started_at
    if last is None:
        return None
    silent = now - last
    limit = intervals * cycle_interval_ms
    if silent < limit:
        return None
    return RaiseAlert(
        Severity.CRITICAL,
        "Dead-man's switch: no completed cycle",
        f"no cycle completed for {silent / 1000:.1f} s"
        f" (limit {limit / 1000:.1f} s); positions are not being managed by the cycle",
        DEADMAN_KEY,
    )
