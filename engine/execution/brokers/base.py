"""The broker seam: one small protocol with a paper and an Interactive Brokers side.

The OMS owns the order lifecycle and persists every order before a broker sees
it; a broker only executes and reports. Everything a broker says comes back as
`ExecutionReport`s, which the OMS applies in order.

Exceptions:

    BrokerError                 base
    ├── BrokerUnavailable       transient (disconnected, timeout): retry next cycle
    └── BrokerFatal             the broker's state cannot be trusted: halt
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.domain import Bar, ExecutionReport, Fill, Order, OrderStatus, Side


class BrokerError(Exception):
    pass


class BrokerUnavailable(BrokerError):
    pass


class BrokerFatal(BrokerError):
    pass


@dataclass(frozen=True, slots=True)
class BrokerOrderState:
    """What the broker knows about one order, looked up by client order id."""

    client_order_id: str
    broker_order_id: str
    status: OrderStatus
    filled_qty: float
    avg_price: float | None


@dataclass(frozen=True, slots=True)
class BrokerOpenOrder:
    """An order working at the broker, as reconciliation compares it with the engine's.
    `client_order_id` is "" for an order the engine never placed (typed in by hand)."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    qty: float
    filled_qty: float
    order_type: str

    def describe(self) -> str:
        name = self.client_order_id or "no client order id"
        return (
            f"{self.side.value} {self.qty:g} {self.symbol} {self.order_type}"
            f" (broker order {self.broker_order_id}, {name}), unknown to the engine"
        )


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    cash: float
    positions: dict[str, float]  # signed quantities


@runtime_checkable
class Broker(Protocol):
    name: str

    @property
    def connected(self) -> bool: ...

    def submit(self, order: Order, now: int) -> list[ExecutionReport]:
        """Send an order already persisted as NEW; returns SUBMITTED/ACCEPTED/REJECTED
        and any immediate fills. Raises BrokerUnavailable when it cannot be sent."""
        ...

    def submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        """Send an entry with its resting stop and target (or, without a parent, a
        stop and target guarding a position already held), all persisted as NEW.
        Orders naming a parent work only once it has filled; orders sharing an
        `oco_group` are one-cancels-other. All or nothing: either every order
        reaches the broker or BrokerUnavailable is raised."""
        ...

    def modify(self, order: Order, now: int) -> list[ExecutionReport]:
        """Move a working order's stop or limit price to those of `order` (a trailing
        stop); the order keeps its id and its place."""
        ...

    def cancel(self, client_order_id: str, now: int) -> list[ExecutionReport]: ...

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        """A new bar: resting orders that trade through it fill (paper), or pending
        reports are collected (IB)."""
        ...

    def lookup(self, client_order_id: str) -> BrokerOrderState | None:
        """For reconciliation after a restart; None if the broker never saw it."""
        ...

    def fills(self, client_order_id: str) -> list[Fill]:
        """Every execution of the order the broker knows, each with its own exec id,
        oldest first: what reconciliation adopts when the engine missed reports."""
        ...

    def open_orders(self) -> list[BrokerOpenOrder]:
        """Every order working at the broker for the account, the engine's or not."""
        ...

    def executions_since(self, since: int | None) -> list[Fill]:
        """Every execution the broker knows at or after `since` (epoch ms; None: all it
        keeps), each with its own exec id and the client order id it carried ("" for
        an order the engine never placed), oldest first."""
        ...

    def cancel_foreign(self, broker_order_id: str, now: int) -> bool:
        """Cancel a working order by the broker's id (one the engine does not know);
        True when the broker took the request."""
        ...

    def account(self) -> BrokerAccount: ...

    def close(self) -> None: ...
