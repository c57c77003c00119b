"""Domain values shared by the engine, the state store and the cockpit.

Times are epoch milliseconds (UTC) everywhere. Quantities are signed only on
positions (long > 0, short < 0); orders and fills carry a side and a positive qty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class OrderStatus(StrEnum):
    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def is_open(self) -> bool:
        return self in _OPEN_STATUSES


_OPEN_STATUSES = frozenset(
    {OrderStatus.NEW, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}
)


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    HALTED = "HALTED"


class Regime(StrEnum):
    TREND_UP = "trend_up"
    TREND_DOWN = "trend_down"
    RANGE = "range"
    HIGH_VOL = "high_vol"
    CRASH = "crash"


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class Purpose(StrEnum):
    """Why an order exists; the risk gate treats exposure-reducing purposes differently."""

    ENTRY = "ENTRY"
    EXIT = "EXIT"  # strategy exit, stop-loss, take-profit, trailing or time stop
    FLATTEN = "FLATTEN"  # operator flatten, emergency stop, kill switch

    @property
    def reduces_exposure(self) -> bool:
        return self is not Purpose.ENTRY


class ExitReason(StrEnum):
    """Why a position was closed, recorded on the closing order and on the trade."""

    STOP = "stop"  # the resting stop-loss filled
    TARGET = "target"  # the resting take-profit filled
    TRAILING = "trailing"  # the resting stop filled after the trail moved it
    TIME = "time"
    FLATTEN = "flatten"
    EMERGENCY_STOP = "emergency_stop"
    KILL_SWITCH = "kill_switch"
    SIGNAL = "signal"  # the strategy's own exit
    POSITION_LOSS = "position_loss"  # the monitor's per-position loss limit
    STALE_DATA = "stale_data"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    true_regime: Regime | None = None  # ground truth, only from the simulator
    # Where the bar came from ("data/GOOG.csv row 17"), for the validator's alert;
    # not part of the bar's identity.
    origin: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Intent:
    """What the strategy (or an operator command, or the monitor) wants to trade."""

    symbol: str
    side: Side
    qty: float
    purpose: Purpose
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    strength: float = 0.0
    model_version: str | None = None
    reason: str = ""
    sizing: dict[str, object] = field(default_factory=dict)  # method and inputs
    exit_reason: ExitReason | None = None  # for exits; the OMS fills in a default


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    check: str
    reason: str = ""
    until: int | None = None  # epoch ms, for locks such as a cooldown

    @staticmethod
    def ok(check: str) -> Verdict:
        return Verdict(True, check)

    @staticmethod
    def deny(check: str, reason: str, until: int | None = None) -> Verdict:
        return Verdict(False, check, reason, until)


@dataclass(frozen=True, slots=True)
class Order:
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    order_type: OrderType
    purpose: Purpose
    status: OrderStatus = OrderStatus.NEW
    limit_price: float | None = None
    stop_price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    filled_qty: float = 0.0
    avg_price: float | None = None
    broker_order_id: str | None = None
    created_at: int = 0
    expires_at: int | None = None
    reason: str = ""
    # A bracket: the stop and target name their entry as parent (they work only once
    # it has filled) and share an OCO group (one filling cancels the other).
    parent_id: str | None = None
    oco_group: str | None = None
    exit_reason: ExitReason | None = None

    @property
    def protective(self) -> bool:
        """A resting stop or target guarding a position (not an exit the engine chose)."""
        return self.oco_group is not None

    @property
    def remaining(self) -> float:
        return self.qty - self.filled_qty

    def with_state(
        self,
        status: OrderStatus,
        filled_qty: float,
        avg_price: float | None,
        broker_order_id: str | None,
    ) -> Order:
        """The order with its broker-side state replaced: what every report does to an
        order, several times an order, so built directly rather than through
        `dataclasses.replace` (half the cost)."""
        return Order(
            self.client_order_id,
            self.symbol,
            self.side,
            self.qty,
            self.order_type,
            self.purpose,
            status,
            self.limit_price,
            self.stop_price,
            self.stop_loss,
            self.take_profit,
            filled_qty,
            avg_price,
            broker_order_id,
            self.created_at,
            self.expires_at,
            self.reason,
            self.parent_id,
            self.oco_group,
            self.exit_reason,
        )


@dataclass(frozen=True, slots=True)
class Fill:
    client_order_id: str
    exec_id: str
    symbol: str
    side: Side
    ts: int
    qty: float
    price: float
    commission: float
    ref_price: float | None = None  # the price the order was decided at, for slippage


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """A broker's word about one order: a status change, optionally with a fill."""

    client_order_id: str
    status: OrderStatus
    ts: int
    fill: Fill | None = None
    broker_order_id: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    qty: float  # signed: long > 0, short < 0
    avg_price: float
    realized_pnl: float = 0.0
    stop: float | None = None
    target: float | None = None
    opened_at: int | None = None


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """A completed round trip, from flat (or a flip) back to flat (or the next flip)."""

    symbol: str
    side: Side  # side of the opening fill: BUY = long trade
    qty: float  # total quantity opened (== total closed)
    entry_ts: int
    exit_ts: int
    entry_price: float  # weighted over the opening fills
    exit_price: float  # weighted over the closing fills
    pnl: float  # net of every commission of the trade
    commission: float
    slippage: float  # money lost against the fills' ref_price (negative = improvement)
    stop: float | None = None  # the protective levels when it closed
    target: float | None = None


@dataclass(frozen=True, slots=True)
class EquitySnapshot:
    ts: int
    cash: float
    equity: float
    realized: float  # cumulative since the start, net of commissions
    unrealized: float
    peak: float
    drawdown: float  # fraction below the running peak, >= 0
    gross_exposure: float  # sum of |qty x mark|
    net_exposure: float  # sum of qty x mark
