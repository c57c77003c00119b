"""What the monitor reads (`MonitorInput`), keeps (`MonitorState`) and says
(`MonitorResult` and its actions); `engine.risk.monitor` explains each action."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from engine.domain import Bar, ExitReason, Intent, OrderType, Position, Purpose, Severity, Side
from engine.risk.context import RiskContext

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
