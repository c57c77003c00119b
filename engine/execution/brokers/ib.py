"""The Interactive Brokers adapter: the Broker protocol over ib_async (or ib_insync).

Threading: the IB client is owned by one dedicated thread running its own asyncio
loop. Every call from another thread is handed over with
`asyncio.run_coroutine_threadsafe(...).result(timeout)`; no answer within
`IbSettings.timeout_seconds` raises BrokerUnavailable (the OMS retries next cycle,
and treats a timed-out submit as "maybe sent": it looks the order up first).

Reports: IB speaks through callbacks on its thread. Status changes
(orderStatusEvent) and executions (commissionReportEvent, which carries the
commission; execDetailsEvent as a fallback when no commission report comes within
`commission_grace_seconds`) become ExecutionReports in a thread-safe queue that
`on_bar` drains, so the engine's cycle picks them up. Fills drive PARTIALLY_FILLED
and FILLED, so an order never reads FILLED before its last fill is reported.

Identity: every order carries `orderRef = client_order_id`; that is how `lookup`
finds an order after a restart (the session's trades, then the gateway's open and
completed orders, then its executions). For reconciliation, `open_orders` lists
every order working in the account (the gateway's, other clients' and hand-typed
ones included), `executions_since` asks with an ExecutionFilter from the last
execution the engine knows, and `cancel_foreign` cancels an order by IB's id.

Brackets: `submit_bracket` places the entry and its resting stop and target as one
native IB bracket: the children carry `parentId` (IB activates them once the entry
fills) and one `ocaGroup`, and only the last order of the group is transmitted, so
IB receives the whole bracket or none of it. `modify` re-places a working order
under its own order id with new prices (a trailing stop).

Connection: a supervisor task on the IB thread connects, watches
`ib.isConnected()`, and reconnects with exponential backoff and jitter (5-300 s by
default, `engine.execution.brokers.ib_link.Backoff`). After `ib.breaker_failures` failed
connects or timed-out calls in a row the circuit breaker opens: the adapter reads
as disconnected (so the monitor blocks entries) and one HIGH alert says so; the
next successful connect closes it. While disconnected, submit and cancel raise
BrokerUnavailable. Every message to IB first takes a token from the process's
45/s budget (`ib_link.MESSAGES`), shared with the IB market-data feed.

Events for the operator (connectivity codes 1100/1101/1102/2110, the breaker, a
disconnect) queue up for `drain_events`, which the engine turns into alerts on
its trading thread. A disconnect or 1100 inside `ib.maintenance_windows` (the
gateway's nightly reset, its weekly re-login) is an expected INFO event.

Rejections: IB's order errors 201, 202, 10147 and 110 arrive as a Cancelled status
carrying the error code; an order the engine did not ask to cancel becomes
REJECTED with IB's reason ("IB 201: ...").

Exceptions (engine.execution.brokers.base):

    BrokerError
    ├── BrokerUnavailable   disconnected, a call timed out, the socket failed
    └── BrokerFatal         not raised here
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

try:
    import ib_async as ib_api
except ImportError:  # pragma: no cover - the older name of the same library
    import ib_insync as ib_api  # type: ignore[no-redef]

from engine.config import IbSettings
from engine.domain import (
    Bar,
    ExecutionReport,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Severity,
    Side,
)
from engine.execution.brokers.base import (
    BrokerAccount,
    BrokerOpenOrder,
    BrokerOrderState,
    BrokerUnavailable,
)
from engine.execution.brokers.ib_link import (
    MESSAGES,
    Backoff,
    CircuitBreaker,
    IbEvent,
    TokenBucket,
    classify,
    in_maintenance,
    start_loop_thread,
)
from engine.execution.brokers.paper import order_problem
from store.db import now_ms

logger = logging.getLogger(__name__)

T = TypeVar("T")
IbFactory = Callable[[], Any]  # returns an object with ib_async.IB's public API

EXCHANGE = "SMART"
CURRENCY = "USD"
CASH_TAG = "TotalCashValue"
CASH_CURRENCIES = ("BASE", CURRENCY)  # preferred first
REJECTION_CODES = frozenset({201, 202, 10147, 110})

BrokerEvent = tuple[Severity, str, str]  # severity, title, message
# The other orders of an OCA group shrink by what one of them fills, and IB blocks
# them while it fills, so a stop and a target can never together close more than
# is held (IB's ocaType 2).
OCA_REDUCE_WITH_BLOCK = 2

# How far along the lifecycle a status is; reports only ever move forward.
_RANK = {
    OrderStatus.NEW: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
    OrderStatus.CANCELED: 4,
    OrderStatus.REJECTED: 4,
    OrderStatus.EXPIRED: 4,
}

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


def _epoch_ms(moment: datetime | None, fallback: int) -> int:
    if moment is None:
        return fallback
    return int(moment.timestamp() * 1000)


def _side(execution_side: str) -> Side:
    return Side.BUY if execution_side.upper() in ("BOT", "BUY") else Side.SELL


def _broker_id(trade: Any) -> str:
    return str(trade.order.orderId or trade.order.permId)


def _rejection(trade: Any) -> str | None:
    """IB's reason when the order's last word is a rejection code, else None."""
    entry = trade.log[-1] if trade.log else None
    if entry is not None and getattr(entry, "errorCode", 0) in REJECTION_CODES:
        return f"IB {entry.errorCode}: {entry.message}"
    return None


def _detail(trade: Any) -> str:
    """IB's last word on the order (a rejection reason, a cancel message), if any."""
    for entry in reversed(trade.log or []):
        if entry.message:
            return str(entry.message)
    return ""


class IbBroker:
    name = "ib"

    def __init__(
        self,
        settings: IbSettings,
        ib_factory: IbFactory | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        backoff_seconds: tuple[float, float] | None = None,
        poll_seconds: float = 0.5,
        commission_grace_seconds: float = 5.0,
        messages: TokenBucket = MESSAGES,
    ) -> None:
        self._settings = settings
        self._timeout = settings.timeout_seconds
        self._clock = clock
        low, high = backoff_seconds or (settings.backoff_min_seconds, settings.backoff_max_seconds)
        self._backoff = Backoff(low, high)
        self._breaker = CircuitBreaker(settings.breaker_failures)
        self._messages = messages
        self._events: queue.SimpleQueue[BrokerEvent] = queue.SimpleQueue()
        self._cancel_requested: set[str] = set()
        self._ever_connected = False
        self.reconnects = 0
        self.connect_error: str | None = None  # why the last connect failed
        self._poll = poll_seconds
        self._grace = commission_grace_seconds
        self._reports: queue.SimpleQueue[ExecutionReport] = queue.SimpleQueue()
        self._closed = False
        # Owned by the IB thread only: what has been reported, per order and per execution.
        self._last: dict[str, OrderStatus] = {}
        self._reported_execs: set[str] = set()
        self._reported_qty: dict[str, float] = {}
        self._pending_execs: dict[str, tuple[float, Any, Any]] = {}  # execId -> (seen, trade, fill)
        self._supervisor: asyncio.Task[None] | None = None
        self._first_attempt = threading.Event()

        self._loop, self._thread = start_loop_thread("ib")
        factory = ib_factory or ib_api.IB
        try:
            self._ib: Any = self._call(self._start(factory))
        except BaseException:
            self._closed = True
            self._stop_thread()
            raise
        if not self._first_attempt.wait(self._timeout):
            logger.warning("IB connection not established within %.1fs", self._timeout)

    # ---- protocol -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        if self._closed or self._breaker.open:
            return False
        try:
            return bool(self._call(self._sync(self._ib.isConnected)))
        except BrokerUnavailable:
            return False

    @property
    def breaker_open(self) -> bool:
        return self._breaker.open

    def drain_events(self) -> list[BrokerEvent]:
        """Connectivity events since the last call, for the engine to raise as alerts."""
        events: list[BrokerEvent] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def submit(self, order: Order, now: int) -> list[ExecutionReport]:
        return self._call(self._submit(order, now))

    def submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        return self._call(self._submit_bracket(list(orders), now))

    def modify(self, order: Order, now: int) -> list[ExecutionReport]:
        return self._call(self._modify(order, now))

    def cancel(self, client_order_id: str, now: int) -> list[ExecutionReport]:
        return self._call(self._cancel(client_order_id, now))

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        """IB fills real orders on its own; a bar is the cycle's moment to collect reports."""
        reports: list[ExecutionReport] = []
        while True:
            try:
                reports.append(self._reports.get_nowait())
            except queue.Empty:
                return reports

    def lookup(self, client_order_id: str) -> BrokerOrderState | None:
        return self._call(self._lookup(client_order_id))

    def fills(self, client_order_id: str) -> list[Fill]:
        return self._call(self._fills(client_order_id))

    def open_orders(self) -> list[BrokerOpenOrder]:
        return self._call(self._open_orders())

    def executions_since(self, since: int | None) -> list[Fill]:
        return self._call(self._executions_since(since))

    def cancel_foreign(self, broker_order_id: str, now: int) -> bool:
        return self._call(self._cancel_foreign(broker_order_id))

    def account(self) -> BrokerAccount:
        return self._call(self._account())

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._call(self._shutdown())
        except BrokerUnavailable as exc:
            logger.warning("IB did not shut down cleanly: %s", exc)
        self._closed = True
        self._stop_thread()

    def _stop_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout)
        if self._thread.is_alive():
            logger.error("IB thread still running after close")

    # ---- the hand-over to the IB thread ------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise BrokerUnavailable("the IB adapter is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._loop.call_soon_threadsafe(self._failed, "a call timed out")
            raise BrokerUnavailable(f"IB did not answer within {self._timeout:g}s") from None
        except (ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"IB connection failed: {exc}") from exc

    @staticmethod
    async def _sync(fn: Callable[[], T]) -> T:
        return fn()

    # ---- on the IB thread ------------------------------------------------------

    async def _start(self, factory: IbFactory) -> Any:
        ib = factory()
        ib.orderStatusEvent += self._on_status
        ib.execDetailsEvent += self._on_exec
        ib.commissionReportEvent += self._on_commission
        ib.disconnectedEvent += self._on_disconnected
        ib.errorEvent += self._on_error
        self._ib = ib
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(ib))
        return ib

    async def _shutdown(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        ib = self._ib
        ib.orderStatusEvent -= self._on_status
        ib.execDetailsEvent -= self._on_exec
        ib.commissionReportEvent -= self._on_commission
        ib.disconnectedEvent -= self._on_disconnected
        ib.errorEvent -= self._on_error
        if ib.isConnected():
            ib.disconnect()

    async def _supervise(self, ib: Any) -> None:
        s = self._settings
        while True:
            if not ib.isConnected():
                try:
                    await asyncio.wait_for(
                        ib.connectAsync(
                            host=s.host,
                            port=s.port,
                            clientId=s.client_id,
                            timeout=self._timeout,
                            account=s.account,
                        ),
                        self._timeout,
                    )
                    logger.info(
                        "connected to IB at %s:%d as client %d", s.host, s.port, s.client_id
                    )
                    self.connect_error = None
                    self._connected_again()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.connect_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    self._first_attempt.set()
                    delay = self._backoff.next()
                    self._failed(f"connect failed ({type(exc).__name__})")
                    logger.warning("IB connection failed (%s); next attempt in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
            self._first_attempt.set()
            self._sweep_pending_execs()
            await asyncio.sleep(self._poll)

    def _require_connection(self) -> None:
        if not self._ib.isConnected():
            raise BrokerUnavailable("not connected to IB")

    async def _submit(self, order: Order, now: int) -> list[ExecutionReport]:
        self._require_connection()
        coid = order.client_order_id
        existing = self._find_trade(coid, self._ib.trades())
        if existing is not None:
            state = self._state(existing)
            detail = "duplicate submit ignored: IB already has this order"
            return [ExecutionReport(coid, state.status, now, None, state.broker_order_id, detail)]
        problem = order_problem(order)
        if problem is not None:
            logger.info("IB adapter rejects %s before sending: %s", coid, problem)
            return [ExecutionReport(coid, OrderStatus.REJECTED, now, detail=problem)]
        contract = ib_api.Stock(order.symbol, EXCHANGE, CURRENCY)
        await self._messages.take()
        trade = self._ib.placeOrder(contract, to_ib_order(order, self._settings.account))
        broker_id = _broker_id(trade)
        self._advance(coid, OrderStatus.SUBMITTED)
        logger.info("sent %s to IB as order %s", coid, broker_id)
        return [ExecutionReport(coid, OrderStatus.SUBMITTED, now, None, broker_id)]

    async def _submit_bracket(self, orders: list[Order], now: int) -> list[ExecutionReport]:
        self._require_connection()
        session = self._ib.trades()
        known = [t for o in orders if (t := self._find_trade(o.client_order_id, session))]
        if known:
            detail = "duplicate submit ignored: IB already has this order"
            return [
                ExecutionReport(s.client_order_id, s.status, now, None, s.broker_order_id, detail)
                for s in map(self._state, known)
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
            ib_order = to_ib_order(order, self._settings.account)
            if order.parent_id is not None:
                parent = placed.get(order.parent_id)
                if parent is None:
                    raise ValueError(f"{order.client_order_id}: its parent must come first")
                ib_order.parentId = parent.orderId
            if order.oco_group is not None:
                ib_order.ocaGroup = order.oco_group
                ib_order.ocaType = OCA_REDUCE_WITH_BLOCK
            # Nothing is live until the last order goes: IB takes the bracket whole.
            ib_order.transmit = i == len(orders) - 1
            contract = ib_api.Stock(order.symbol, EXCHANGE, CURRENCY)
            await self._messages.take()
            trade = self._ib.placeOrder(contract, ib_order)
            placed[order.client_order_id] = trade.order
            self._advance(order.client_order_id, OrderStatus.SUBMITTED)
            broker_id = _broker_id(trade)
            reports.append(
                ExecutionReport(order.client_order_id, OrderStatus.SUBMITTED, now, None, broker_id)
            )
        logger.info("sent bracket %s to IB", ", ".join(placed))
        return reports

    async def _modify(self, order: Order, now: int) -> list[ExecutionReport]:
        self._require_connection()
        coid = order.client_order_id
        trade = self._find_trade(coid, self._ib.openTrades())
        if trade is None:
            return [
                ExecutionReport(
                    coid,
                    self._last.get(coid, OrderStatus.REJECTED),
                    now,
                    detail="unknown or not working",
                )
            ]
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

    async def _cancel(self, coid: str, now: int) -> list[ExecutionReport]:
        self._require_connection()
        trade = self._find_trade(coid, self._ib.openTrades())
        if trade is None:
            known = self._find_trade(coid, self._ib.trades())
            if known is None:
                return [
                    ExecutionReport(
                        coid, OrderStatus.REJECTED, now, detail="unknown or not working"
                    )
                ]
            state = self._state(known)
            return [
                ExecutionReport(
                    coid, state.status, now, None, state.broker_order_id, "unknown or not working"
                )
            ]
        await self._messages.take()
        self._cancel_requested.add(coid)
        self._ib.cancelOrder(trade.order)
        # The confirmation (Cancelled) arrives as a status event; it is queued for on_bar.
        return []

    async def _lookup(self, coid: str) -> BrokerOrderState | None:
        self._require_connection()
        ib = self._ib
        trade = self._find_trade(coid, ib.trades())
        if trade is None:
            # Not in this session's cache: ask the gateway, which knows other sessions' orders.
            await self._messages.take()
            open_trades = await ib.reqAllOpenOrdersAsync()
            await self._messages.take()
            done_trades = await ib.reqCompletedOrdersAsync(apiOnly=True)
            trade = self._find_trade(coid, [*open_trades, *done_trades, *ib.trades()])
        fills = [f for f in ib.fills() if f.execution.orderRef == coid]
        if trade is None and not fills:
            await self._messages.take()
            fills = [f for f in await ib.reqExecutionsAsync() if f.execution.orderRef == coid]
        if trade is not None:
            return self._state(trade, fills)
        if not fills:
            return None
        # Executions without their order: the total is unknown, so the order stays open.
        qty = sum(f.execution.shares for f in fills)
        avg = sum(f.execution.shares * f.execution.price for f in fills) / qty
        broker_id = str(fills[0].execution.orderId or fills[0].execution.permId)
        return BrokerOrderState(coid, broker_id, OrderStatus.PARTIALLY_FILLED, qty, avg)

    async def _fills(self, coid: str) -> list[Fill]:
        self._require_connection()
        found = [f for f in self._ib.fills() if f.execution.orderRef == coid]
        if not found:
            # Executions from before this session: the gateway keeps the day's.
            await self._messages.take()
            found = [f for f in await self._ib.reqExecutionsAsync() if f.execution.orderRef == coid]
        return self._unique_fills(found)

    def _unique_fills(self, found: Iterable[Any]) -> list[Fill]:
        """ib_async Fills as ours, one per exec id, oldest first."""
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
                _side(execution.side),
                _epoch_ms(execution.time, self._clock()),
                float(execution.shares),
                float(execution.price),
                commission,
            )
        return sorted(fills.values(), key=lambda f: (f.ts, f.exec_id))

    async def _open_orders(self) -> list[BrokerOpenOrder]:
        self._require_connection()
        await self._messages.take()
        listed = await self._ib.reqAllOpenOrdersAsync()
        # This session's own working orders too: one placed a moment ago may not be
        # in the gateway's list yet, and must not read as gone.
        trades = {id(t): t for t in [*listed, *self._ib.openTrades()]}.values()
        account = self._settings.account
        out = []
        for trade in trades:
            order = trade.order
            if trade.isDone() or (account and order.account and order.account != account):
                continue
            out.append(
                BrokerOpenOrder(
                    str(order.orderRef or ""),
                    _broker_id(trade),
                    str(trade.contract.symbol),
                    _side(order.action),
                    float(order.totalQuantity),
                    float(trade.orderStatus.filled),
                    str(order.orderType),
                )
            )
        return out

    async def _executions_since(self, since: int | None) -> list[Fill]:
        self._require_connection()
        # IB's filter takes whole seconds in UTC ("yyyymmdd-hh:mm:ss"); the exact
        # cut is made here, and a repeat of a known exec id is the OMS's to ignore.
        when = ""
        if since is not None:
            when = datetime.fromtimestamp(since // 1000, UTC).strftime("%Y%m%d-%H:%M:%S")
        wanted = ib_api.ExecutionFilter(acctCode=self._settings.account, time=when)
        await self._messages.take()
        found = await self._ib.reqExecutionsAsync(wanted)
        fills = self._unique_fills(found)
        return [f for f in fills if since is None or f.ts >= since]

    async def _cancel_foreign(self, broker_order_id: str) -> bool:
        self._require_connection()
        await self._messages.take()
        for trade in await self._ib.reqAllOpenOrdersAsync():
            ids = {_broker_id(trade), str(trade.order.permId)}
            if broker_order_id in ids and not trade.isDone():
                await self._messages.take()
                self._ib.cancelOrder(trade.order)
                return True
        return False

    async def _account(self) -> BrokerAccount:
        self._require_connection()
        account = self._settings.account
        values = {
            v.currency: float(v.value)
            for v in self._ib.accountValues(account)
            if v.tag == CASH_TAG and v.currency in CASH_CURRENCIES
        }
        cash = next((values[c] for c in CASH_CURRENCIES if c in values), None)
        if cash is None:
            raise BrokerUnavailable(f"IB has not reported {CASH_TAG} yet")
        positions: dict[str, float] = {}
        for p in self._ib.positions(account):
            if p.position:
                positions[p.contract.symbol] = positions.get(p.contract.symbol, 0.0) + float(
                    p.position
                )
        return BrokerAccount(cash, positions)

    @staticmethod
    def _find_trade(coid: str, trades: Iterable[Any]) -> Any | None:
        found = None
        for trade in trades:
            if trade.order.orderRef == coid:
                found = trade  # the latest one wins
        return found

    def _state(self, trade: Any, fills: list[Any] | None = None) -> BrokerOrderState:
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
        return BrokerOrderState(coid, _broker_id(trade), status, filled, avg)

    # ---- IB callbacks (on the IB thread) -------------------------------------------

    def _advance(self, coid: str, status: OrderStatus) -> bool:
        """Record `status` if it moves the order forward; True when it does."""
        last = self._last.get(coid)
        if last is not None and _RANK[status] <= _RANK[last]:
            return False
        self._last[coid] = status
        return True

    def _on_status(self, trade: Any) -> None:
        coid = trade.order.orderRef
        if not coid:
            return  # not one of ours (manual TWS orders)
        status = map_status(trade.orderStatus.status)
        if status is None or status is OrderStatus.FILLED:
            return  # fills drive FILLED, so it never precedes the last fill's report
        rejection = _rejection(trade)
        if (
            status is OrderStatus.CANCELED
            and rejection is not None
            and coid not in self._cancel_requested
        ):
            status = OrderStatus.REJECTED  # IB cancels what it refuses; we asked for nothing
        if status is OrderStatus.REJECTED and self._reported_qty.get(coid, 0.0) > 0:
            status = OrderStatus.CANCELED
        if self._advance(coid, status):
            detail = rejection or _detail(trade)
            self._reports.put(
                ExecutionReport(coid, status, self._clock(), None, _broker_id(trade), detail)
            )

    def _on_exec(self, trade: Any, fill: Any) -> None:
        exec_id = fill.execution.execId
        if trade.order.orderRef and exec_id not in self._reported_execs:
            self._pending_execs.setdefault(exec_id, (self._loop.time(), trade, fill))

    def _on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        self._report_fill(trade, fill, float(report.commission))

    def _on_disconnected(self) -> None:
        logger.warning("disconnected from IB; reconnecting")
        if self._expected():
            self._event(
                Severity.INFO,
                "IB maintenance",
                "disconnected in the gateway's reset or re-login window; reconnecting",
            )
        else:
            self._event(
                Severity.WARNING,
                "IB disconnected",
                "the connection to the gateway dropped; reconnecting with backoff",
            )

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        kind = classify(code, message)
        if kind is IbEvent.CONNECTION_LOST:
            if self._expected():
                self._event(
                    Severity.INFO,
                    "IB maintenance",
                    f"IB {code}: {message} (expected: nightly reset or weekly re-login)",
                )
            else:
                self._event(Severity.HIGH, "IB lost its connection to IB", f"IB {code}: {message}")
        elif kind is IbEvent.RESTORED_DATA_LOST:
            self._event(
                Severity.WARNING,
                "IB connectivity restored, data lost",
                f"IB {code}: {message}; market data is resubscribed",
            )
        elif kind is IbEvent.RESTORED:
            self._event(Severity.INFO, "IB connectivity restored", f"IB {code}: {message}")
        elif kind is IbEvent.SERVER_LINK:
            severity = Severity.INFO if self._expected() else Severity.WARNING
            self._event(severity, "IB gateway lost the IB servers", f"IB {code}: {message}")

    def _expected(self) -> bool:
        s = self._settings
        return in_maintenance(self._clock(), s.maintenance_windows, s.maintenance_timezone)

    def _event(self, severity: Severity, title: str, message: str) -> None:
        self._events.put((severity, title, message))

    def _failed(self, what: str) -> None:
        if self._breaker.failure():
            self._event(
                Severity.HIGH,
                "IB circuit breaker open: entries blocked",
                f"{self._breaker.threshold} failures in a row, the last: {what}; probing with"
                f" backoff up to {self._backoff.high:g} s",
            )

    def _connected_again(self) -> None:
        if self._ever_connected:
            self.reconnects += 1  # the engine reconciles after each one
        self._ever_connected = True
        self._backoff.reset()
        if self._breaker.success():
            self._event(
                Severity.INFO,
                "IB circuit breaker closed",
                "a connect succeeded; entries may resume",
            )

    def _sweep_pending_execs(self) -> None:
        cutoff = self._loop.time() - self._grace
        for exec_id, (seen, trade, fill) in list(self._pending_execs.items()):
            if seen <= cutoff:
                logger.warning(
                    "no commission report for execution %s after %.1fs; reporting it as 0",
                    exec_id,
                    self._grace,
                )
                self._report_fill(trade, fill, 0.0)

    def _report_fill(self, trade: Any, fill: Any, commission: float) -> None:
        coid = trade.order.orderRef
        execution = fill.execution
        self._pending_execs.pop(execution.execId, None)
        if not coid or execution.execId in self._reported_execs:
            return
        self._reported_execs.add(execution.execId)
        qty = float(execution.shares)
        reported = self._reported_qty.get(coid, 0.0) + qty
        self._reported_qty[coid] = reported
        total = float(trade.order.totalQuantity)
        status = OrderStatus.FILLED if reported >= total else OrderStatus.PARTIALLY_FILLED
        if not self._advance(coid, status):
            # A late fill after a cancel: the money moved, the order stays as it ended.
            status = self._last[coid]
        ts = _epoch_ms(execution.time, self._clock())
        self._reports.put(
            ExecutionReport(
                coid,
                status,
                ts,
                Fill(
                    coid,
                    str(execution.execId),
                    str(fill.contract.symbol),
                    _side(execution.side),
                    ts,
                    qty,
                    float(execution.price),
                    commission,
                ),
                _broker_id(trade),
            )
        )
