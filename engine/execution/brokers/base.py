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

from engine.domain import Bar, ExecutionReport, Fill, Order, OrderStatus


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

    def account(self) -> BrokerAccount: ...

    def close(self) -> None: ...
