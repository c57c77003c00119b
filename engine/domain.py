"""Domain values shared by the engine, the state store and the cockpit.

Times are epoch milliseconds (UTC) everywhere. Quantities are signed only on
positions (long > 0, short < 0); orders and fills carry a side and a positive qty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
        """The one allowed verdict of `check`: a verdict is immutable, so every pass of
        a check can share it (the gate runs some twenty checks per order)."""
        verdict = _ALLOWED.get(check)
        if verdict is None:
            verdict = _ALLOWED[check] = Verdict(True, check)
        return verdict

    @staticmethod
    def deny(check: str, reason: str, until: int | None = None) -> Verdict:
        return Verdict(False, check, reason, until)


_ALLOWED: dict[str, Verdict] = {}  # by check name; a few dozen names


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
        order, ten times an order on the order path. Filled in as an `_OrderDraft`
        and then made an Order: a frozen dataclass's __init__ sets each of its twenty
        fields through object.__setattr__, five times what plain slot stores cost."""
        new: Any = _OrderDraft()  # its slots are Order's, which mypy cannot see
        new.client_order_id = self.client_order_id
        new.symbol = self.symbol
        new.side = self.side
        new.qty = self.qty
        new.order_type = self.order_type
        new.purpose = self.purpose
        new.status = status
        new.limit_price = self.limit_price
        new.stop_price = self.stop_price
        new.stop_loss = self.stop_loss
        new.take_profit = self.take_profit
        new.filled_qty = filled_qty
        new.avg_price = avg_price
        new.broker_order_id = broker_order_id
        new.created_at = self.created_at
        new.expires_at = self.expires_at
        new.reason = self.reason
        new.parent_id = self.parent_id
        new.oco_group = self.oco_group
        new.exit_reason = self.exit_reason
        new.__class__ = Order
        return new  # type: ignore[no-any-return]


class _OrderDraft:
    """An Order's slots without its frozen __setattr__, for `Order.with_state`. Same
    slots in the same order on the same base, so Python lets the finished draft's
    class be set to Order: from then on it is an Order like any other (frozen,
    equal and hashed by its fields). A field added to Order must be set there too;
    the test of `with_state` compares every field."""

    __slots__ = Order.__slots__


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
