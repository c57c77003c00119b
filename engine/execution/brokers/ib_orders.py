"""Our orders in IB's terms, and IB's trades in ours; placing, modifying, canceling.

The translation is pure: `to_ib_order` (tagged with orderRef = client order id,
the identity every lookup goes by), `map_status` (an IB status in our
lifecycle), `order_state` (a trade as a BrokerOrderState) and `to_fills` (IB's
fills as ours, one per execution). `IbPlacement` sends on the IB thread: an
order, a native bracket (children carry `parentId` and one `ocaGroup`, only the
last order is transmitted, so IB takes the bracket whole or not at all), a
modify under the order's own id, a cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

try:
    import ib_async as ib_api
except ImportError:  # pragma: no cover - the older name of the same library
    import ib_insync as ib_api  # type: ignore[no-redef]

from engine.config import IbContract
from engine.domain import ExecutionReport, Fill, Order, OrderStatus, OrderType, Side
from engine.execution.brokers.base import BrokerOrderState, BrokerUnavailable
from engine.execution.brokers.ib_link import TokenBucket, contract_of
from engine.execution.brokers.paper import order_problem

if TYPE_CHECKING:
    from engine.execution.brokers.ib_reports import IbReports

logger = logging.getLogger(__name__)

CURRENCY = "USD"
REJECTION_CODES = frozenset({201, 202, 10147, 110})
# The other orders of an OCA group shrink by what one of them fills, and IB blocks
# them while it fills, so a stop and a target can never together close more than
# is held (IB's ocaType 2).
OCA_REDUCE_WITH_BLOCK = 2
DUPLICATE = "duplicate submit ignored: IB already has this order"
NOT_WORKING = "unknown or not working"

_IB_STATUS = {
    "PendingSubmit": OrderStatus.SUBMITTED,
    "ApiPending": OrderStatus.SUBMITTED,
    "PreSubmitted": OrderStatus.ACCEPTED,
    "Submitted": OrderStatus.ACCEPTED,
    "PendingCancel": OrderStatus.ACCEPTED,  # still working until IB confirms
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELED,
    "ApiCancelled": OrderStatus.CANCELED,
    "Inactive": OrderStatus.REJECTED,
}
# Statuses that say nothing about the lifecycle (a modify error, an API update).
_IB_IGNORED = frozenset({"ValidationError", "ApiUpdate", ""})


def new_client() -> Any:
    """A new ib_async client (not connected)."""
    return ib_api.IB()


def execution_filter(account: str, since: str) -> Any:
    """IB's filter for the account's executions since `since` ("yyyymmdd-hh:mm:ss" UTC)."""
    return ib_api.ExecutionFilter(acctCode=account, time=since)


def map_status(ib_status: str, filled: float = 0.0, total: float = 0.0) -> OrderStatus | None:
    """An IB order status string in our lifecycle; None for statuses that change nothing."""
    if ib_status in _IB_IGNORED:
        return None
    status = _IB_STATUS.get(ib_status)
    if status is None:
        logger.warning("unknown IB order status %r ignored", ib_status)
        return None
    if filled > 0:
        if status is OrderStatus.REJECTED:
            return OrderStatus.CANCELED  # REJECTED is only for orders that never traded
        if status is OrderStatus.ACCEPTED:
            return OrderStatus.FILLED if total and filled >= total else OrderStatus.PARTIALLY_FILLED
    return status


def to_ib_order(order: Order, account: str = "") -> Any:
    """The ib_async order for ours, tagged with orderRef = client order id."""
    action = "BUY" if Side(order.side) is Side.BUY else "SELL"
    qty = float(order.qty)
    extra: dict[str, Any] = {"orderRef": order.client_order_id}
    if account:
        extra["account"] = account
    kind = OrderType(order.order_type)
    if kind is OrderType.MARKET:
        return ib_api.MarketOrder(action, qty, **extra)
    if kind is OrderType.LIMIT:
        return ib_api.LimitOrder(action, qty, _price(order.limit_price), **extra)
    if kind is OrderType.STOP:
        return ib_api.StopOrder(action, qty, _price(order.stop_price), **extra)
    return ib_api.StopLimitOrder(
        action, qty, _price(order.limit_price), _price(order.stop_price), **extra
    )


def _price(price: float | None) -> float:
    if price is None:
        raise ValueError("a price is required for this order type")
    return float(price)


def epoch_ms(moment: datetime | None, fallback: int) -> int:
    if moment is None:
        return fallback
    return int(moment.timestamp() * 1000)


def side_of(execution_side: str) -> Side:
    return Side.BUY if execution_side.upper() in ("BOT", "BUY") else Side.SELL


def broker_id(trade: Any) -> str:
    return str(trade.order.orderId or trade.order.permId)


def rejection(trade: Any) -> str | None:
    """IB's reason when the order's last word is a rejection code, else None."""
    entry = trade.log[-1] if trade.log else None
    if entry is not None and getattr(entry, "errorCode", 0) in REJECTION_CODES:
        return f"IB {entry.errorCode}: {entry.message}"
    return None


def detail(trade: Any) -> str:
    """IB's last word on the order (a rejection reason, a cancel message), if any."""
    for entry in reversed(trade.log or []):
        if entry.message:
            return str(entry.message)
    return ""


def find_trade(coid: str, trades: Iterable[Any]) -> Any | None:
    found = None
    for trade in trades:
        if trade.order.orderRef == coid:
            found = trade  # the latest one wins
    return found


def order_state(trade: Any, fills: list[Any] | None = None) -> BrokerOrderState:
    fills = fills if fills is not None else list(trade.fills)
    coid = trade.order.orderRef
    total = float(trade.order.totalQuantity)
    fill_qty = sum(f.execution.shares for f in fills)
    filled = max(float(trade.orderStatus.filled), fill_qty)
    status = map_status(trade.orderStatus.status, filled, total) or OrderStatus.ACCEPTED
    if status is OrderStatus.FILLED and filled == 0:
        filled = total  # completed orders come back without their fill counts
    avg: float | None = trade.orderStatus.avgFillPrice or None
    if avg is None and fill_qty:
        avg = sum(f.execution.shares * f.execution.price for f in fills) / fill_qty
    return BrokerOrderState(coid, broker_id(trade), status, filled, avg)


def to_fills(found: Iterable[Any], now: int) -> list[Fill]:
    """ib_async Fills as ours, one per exec id, oldest first (`now` stamps an untimed one)."""
    fills: dict[str, Fill] = {}
    for item in found:
        execution = item.execution
        if execution.execId in fills:
            continue
        report = getattr(item, "commissionReport", None)
        commission = float(report.commission) if report is not None and report.execId else 0.0
        fills[execution.execId] = Fill(
            str(execution.orderRef or ""),
            str(execution.execId),
            str(item.contract.symbol),
            side_of(execution.side),
            epoch_ms(execution.time, now),
            float(execution.shares),
            float(execution.price),
            commission,
        )
    return sorted(fills.values(), key=lambda f: (f.ts, f.exec_id))


def require_connection(ib: Any) -> None:
    if not ib.isConnected():
        raise BrokerUnavailable("not connected to IB")


class IbPlacement:
    """Sends, modifies and cancels our orders at IB; runs on the IB thread only."""

    def __init__(
        self,
        ib: Any,
        reports: IbReports,
        messages: TokenBucket,
        account: str,
        contracts: Iterable[IbContract] = (),
    ) -> None:
        self._ib = ib
        self._reports = reports
        self._messages = messages
        self._account = account
        self._contracts = {c.symbol: c for c in contracts}

    def contract(self, symbol: str) -> Any:
        """The configured instrument (`ib.contracts`) the feed's bars came from; a
        symbol without one is a SMART-routed US stock, as the settings' default says."""
        return contract_of(ib_api, self._contracts.get(symbol) or IbContract(symbol=symbol))

    async def submit(self, order: Order, now: int) -> list[ExecutionReport]:
        require_connection(self._ib)
        coid = order.client_order_id
        existing = find_trade(coid, self._ib.trades())
        if existing is not None:
            state = order_state(existing)
            return [
                ExecutionReport(coid, state.status, now, None, state.broker_order_id, DUPLICATE)
            ]
        problem = order_problem(order)
        if problem is not None:
            logger.info("IB adapter rejects %s before sending: %s", coid, problem)
            return [ExecutionReport(coid, OrderStatus.REJECTED, now, detail=problem)]
        contract = self.contract(order.symbol)
        await self._messages.take()
        trade = self._ib.placeOrder(contract, to_ib_order(order, self._account))
        sent_as = broker_id(trade)
        self._reports.advance(coid, OrderStatus.SUBMITTED)
        logger.info("sent %s to IB as order %s", coid, sent_as)
        return [ExecutionReport(coid, OrderStatus.SUBMITTED, now, None, sent_as)]

    async def submit_bracket(self, orders: list[Order], now: int) -> list[ExecutionReport]:
        require_connection(self._ib)
        session = self._ib.trades()
        known = [t for o in orders if (t := find_trade(o.client_order_id, session))]
        if known:
            return [
                ExecutionReport(
                    s.client_order_id, s.status, now, None, s.broker_order_id, DUPLICATE
                )
                for s in map(order_state, known)
            ]
        problems = [(o, order_problem(o)) for o in orders]
        bad = "; ".join(f"{o.client_order_id}: {p}" for o, p in problems if p is not None)
        if bad:
            logger.info("IB adapter rejects a bracket before sending: %s", bad)
            return [
                ExecutionReport(o.client_order_id, OrderStatus.REJECTED, now, detail=bad)
                for o in orders
            ]
        placed: dict[str, Any] = {}
        reports = []
        for i, order in enumerate(orders):
            ib_order = self._bracket_member(order, placed)
            # Nothing is live until the last order goes: IB takes the bracket whole.
            ib_order.transmit = i == len(orders) - 1
            contract = self.contract(order.symbol)
            await self._messages.take()
            trade = self._ib.placeOrder(contract, ib_order)
            placed[order.client_order_id] = trade.order
            self._reports.advance(order.client_order_id, OrderStatus.SUBMITTED)
            reports.append(
                ExecutionReport(
                    order.client_order_id, OrderStatus.SUBMITTED, now, None, broker_id(trade)
                )
            )
        logger.info("sent bracket %s to IB", ", ".join(placed))
        return reports

    def _bracket_member(self, order: Order, placed: dict[str, Any]) -> Any:
        """The IB order for one order of a bracket: its parent's id and the OCA group."""
        ib_order = to_ib_order(order, self._account)
        if order.parent_id is not None:
            parent = placed.get(order.parent_id)
            if parent is None:
                raise ValueError(f"{order.client_order_id}: its parent must come first")
            ib_order.parentId = parent.orderId
        if order.oco_group is not None:
            ib_order.ocaGroup = order.oco_group
            ib_order.ocaType = OCA_REDUCE_WITH_BLOCK
        return ib_order

    async def modify(self, order: Order, now: int) -> list[ExecutionReport]:
        require_connection(self._ib)
        coid = order.client_order_id
        trade = find_trade(coid, self._ib.openTrades())
        if trade is None:
            last = self._reports.last_status(coid) or OrderStatus.REJECTED
            return [ExecutionReport(coid, last, now, detail=NOT_WORKING)]
        ib_order = trade.order
        if order.stop_price is not None:
            ib_order.auxPrice = float(order.stop_price)
        if order.limit_price is not None:
            ib_order.lmtPrice = float(order.limit_price)
        ib_order.transmit = True
        # Placing an order under its existing orderId modifies it in place.
        await self._messages.take()
        self._ib.placeOrder(trade.contract, ib_order)
        logger.info(
            "modified %s at IB: stop %s, limit %s", coid, order.stop_price, order.limit_price
        )
        return []

    async def cancel(self, coid: str, now: int) -> list[ExecutionReport]:
        require_connection(self._ib)
        trade = find_trade(coid, self._ib.openTrades())
        if trade is None:
            known = find_trade(coid, self._ib.trades())
            if known is None:
                return [ExecutionReport(coid, OrderStatus.REJECTED, now, detail=NOT_WORKING)]
            state = order_state(known)
            return [
                ExecutionReport(coid, state.status, now, None, state.broker_order_id, NOT_WORKING)
            ]
        await self._messages.take()
        self._reports.cancel_requested(coid)
        self._ib.cancelOrder(trade.order)
        # The confirmation (Cancelled) arrives as a status event; it is queued for on_bar.
        return []
