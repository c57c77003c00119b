"""The order lifecycle's rules, pure: no database, no broker, no clock.

    NEW -> SUBMITTED -> ACCEPTED -> PARTIALLY_FILLED -> FILLED
      any open status -> CANCELED | EXPIRED;  REJECTED only before the first fill

A status may skip forward (a broker that fills at once reports FILLED straight
after SUBMITTED) but never goes back, and a terminal status never changes.
`settle` turns one broker report into the order's next state and the events to
record; the OMS (engine.execution.oms) does the I/O around it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from engine.domain import (
    ExecutionReport,
    ExitReason,
    Fill,
    Intent,
    Order,
    OrderStatus,
    OrderType,
    Purpose,
    Side,
)

NEVER_REACHED_BROKER = "never reached the broker before the restart"
FILL_TOLERANCE = 1e-9

_FORWARD = {
    OrderStatus.NEW: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
}


@dataclass(frozen=True, slots=True)
class Working:
    """An order the OMS holds in memory, with the price it was decided at."""

    order: Order
    ref_price: float | None


@dataclass(frozen=True, slots=True)
class Step:
    """What one report does to an order: its next state and the events to record."""

    order: Order
    events: tuple[tuple[OrderStatus, str], ...]
    changed: bool  # the order's row must be written
    refused: str = ""  # a transition the rules refused, described for the log


def is_legal_transition(current: OrderStatus, new: OrderStatus) -> bool:
    if not current.is_open:
        return False
    if new in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
        return True
    if new is OrderStatus.REJECTED:
        return current is not OrderStatus.PARTIALLY_FILLED
    if new is OrderStatus.PARTIALLY_FILLED:  # repeated partial fills
        return current is not OrderStatus.FILLED
    return _FORWARD[new] > _FORWARD[current]


def new_client_order_id(now: int, sequence: int, suffix: str) -> str:
    """Readable and sortable: time first, then a per-process counter, then randomness
    so two processes (or a restart within the same millisecond) cannot collide."""
    return f"{_second_stamp(now // 1000)}{now % 1000:03d}-{sequence:06d}-{suffix}"


@functools.lru_cache(maxsize=8)
def _second_stamp(second: int) -> str:
    """An id's "C" and the UTC date and time of `second`: formatted once a second, not
    once an order (the formatting is most of what an id costs)."""
    return f"C{datetime.fromtimestamp(second, UTC):%Y%m%d-%H%M%S}"


def check_intent(intent: Intent, ref_price: float) -> None:
    """Raise ValueError when the intent cannot become an order."""
    if not (math.isfinite(intent.qty) and intent.qty > 0):
        raise ValueError(f"{intent.symbol}: order quantity must be positive, got {intent.qty!r}")
    if not (math.isfinite(ref_price) and ref_price > 0):
        raise ValueError(f"{intent.symbol}: reference price must be positive, got {ref_price!r}")
    needs_limit = intent.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = intent.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    for name, price, needed in [
        ("limit_price", intent.limit_price, needs_limit),
        ("stop_price", intent.stop_price, needs_stop),
    ]:
        if needed and not (price is not None and math.isfinite(price) and price > 0):
            raise ValueError(f"{intent.symbol}: a {intent.order_type} order needs a {name}")


def default_exit_reason(intent: Intent) -> ExitReason | None:
    if intent.exit_reason is not None:
        return intent.exit_reason
    if intent.purpose is Purpose.EXIT:
        return ExitReason.SIGNAL
    if intent.purpose is Purpose.FLATTEN:
        return ExitReason.FLATTEN
    return None


def expiry(
    intent: Intent, now: int, timeout_ms: int | None, day_end: Callable[[int], int] | None
) -> int | None:
    """When a resting order expires: `timeout_ms` after it was made, and a resting
    entry is a day order, so at the end of its trading day (`day_end(now)`) at the
    latest. A market order never expires."""
    if intent.order_type is OrderType.MARKET:
        return None
    expires_at = now + timeout_ms if timeout_ms is not None else None
    if intent.purpose is Purpose.ENTRY and day_end is not None:
        end = day_end(now)
        expires_at = end if expires_at is None else min(expires_at, end)
    return expires_at


def order_from_intent(intent: Intent, coid: str, now: int, expires_at: int | None) -> Order:
    return Order(
        client_order_id=coid,
        symbol=intent.symbol,
        side=intent.side,
        qty=intent.qty,
        order_type=intent.order_type,
        purpose=intent.purpose,
        limit_price=intent.limit_price,
        stop_price=intent.stop_price,
        stop_loss=intent.stop_loss,
        take_profit=intent.take_profit,
        created_at=now,
        expires_at=expires_at,
        reason=intent.reason,
        exit_reason=default_exit_reason(intent),
    )


def protective_pair(
    symbol: str,
    closing: Side,
    qty: float,
    stop: float | None,
    target: float | None,
    *,
    group: str,
    parent_id: str | None,
    now: int,
) -> list[Order]:
    """The resting stop and target that close `qty` on the `closing` side; the ids are
    the group's with a suffix so the pair reads as one family in the blotter."""
    orders = []
    common = {
        "symbol": symbol,
        "side": closing,
        "qty": qty,
        "purpose": Purpose.EXIT,
        "created_at": now,
        "parent_id": parent_id,
        "oco_group": group,
    }
    if stop is not None:
        orders.append(
            Order(
                client_order_id=f"{group}-S",
                order_type=OrderType.STOP,
                stop_price=stop,
                reason=f"stop-loss at {stop:g}",
                exit_reason=ExitReason.STOP,
                **common,  # type: ignore[arg-type]
            )
        )
    if target is not None:
        orders.append(
            Order(
                client_order_id=f"{group}-T",
                order_type=OrderType.LIMIT,
                limit_price=target,
                reason=f"take-profit at {target:g}",
                exit_reason=ExitReason.TARGET,
                **common,  # type: ignore[arg-type]
            )
        )
    return orders


def decision_price(order: Order, fallback: float) -> float:
    """What a protective order was decided at: its own level."""
    if order.order_type is OrderType.STOP and order.stop_price is not None:
        return order.stop_price
    if order.order_type is OrderType.LIMIT and order.limit_price is not None:
        return order.limit_price
    return fallback


def with_fill(order: Order, fill: Fill) -> Order:
    """The order's filled quantity and average price after `fill`."""
    filled = order.filled_qty + fill.qty
    avg = ((order.avg_price or 0.0) * order.filled_qty + fill.price * fill.qty) / filled
    return replace(order, filled_qty=filled, avg_price=avg)


def fill_problem(order: Order, fill: Fill) -> str | None:
    """A fill that does not belong to the order, or fills it beyond its size."""
    if fill.symbol != order.symbol or fill.side is not order.side:
        return f"fill {fill} does not match order {order.client_order_id}"
    filled = order.filled_qty + fill.qty
    if filled > order.qty * (1 + FILL_TOLERANCE):
        return f"order {order.client_order_id} overfilled: {filled:g} of {order.qty:g}"
    return None


def settle(
    order: Order, report: ExecutionReport, fill: Fill | None, *, expiring: bool = False
) -> Step:
    """The order after `report`; `fill` is the report's fill when it is new (a repeated
    execution is not settled at all). `expiring`: a cancel the OMS asked for
    because the order expired, recorded as EXPIRED."""
    broker_id = order.broker_order_id
    changed = False
    if report.broker_order_id and report.broker_order_id != broker_id:
        broker_id = report.broker_order_id
        changed = True
    details = [report.detail] if report.detail else []
    filled, avg = order.filled_qty, order.avg_price
    if fill is not None:
        filled = order.filled_qty + fill.qty
        avg = ((order.avg_price or 0.0) * order.filled_qty + fill.price * fill.qty) / filled
        changed = True
        details.insert(0, f"fill {fill.qty:g} @ {fill.price:g} ({fill.exec_id})")
    status = report.status
    if expiring and status is OrderStatus.CANCELED:
        status = OrderStatus.EXPIRED
        details.append(f"expired (working past {order.expires_at})")
    detail = "; ".join(details)
    events: tuple[tuple[OrderStatus, str], ...] = ()
    refused = ""
    if status is order.status:
        if fill is not None:
            events = ((status, detail),)
    elif is_legal_transition(order.status, status):
        changed = True
        events = ((status, detail),)
    else:
        refused = f"refused {order.status} -> {status} for {order.client_order_id} ({detail})"
        status = order.status
        if fill is not None:
            events = ((order.status, f"{detail}; kept {order.status}"),)
    if not changed:
        return Step(order, events, False, refused)
    return Step(order.with_state(status, filled, avg, broker_id), events, True, refused)
