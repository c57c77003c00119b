"""The Interactive Brokers adapter: the Broker protocol over ib_async (or ib_insync).

Threading: the IB client is owned by one dedicated thread running its own asyncio
loop. Every call from another thread is handed over with
`asyncio.run_coroutine_threadsafe(...).result(timeout)`; no answer within
`IbSettings.timeout_seconds` raises BrokerUnavailable (the OMS retries next cycle,
and treats a timed-out submit as "maybe sent": it looks the order up first).

Reports: IB's callbacks become ExecutionReports in a thread-safe queue that
`on_bar` drains, so the engine's cycle picks them up (`ib_reports`: fills drive
PARTIALLY_FILLED and FILLED, a report only moves an order forward, IB's order
errors 201, 202, 10147 and 110 on an order we did not cancel are REJECTED with
IB's reason).

Identity: every order carries `orderRef = client_order_id`; that is how `lookup`
finds an order after a restart. The parts, one job each: `ib_orders` (our orders
in IB's terms and back; placing, native brackets, modify, cancel), `ib_reports`
(callbacks to reports), `ib_queries` (what reconciliation asks: lookup, fills,
open orders, executions since, the account, canceling a foreign order) and
`ib_connection` (connect, reconnect with backoff, the circuit breaker, the
operator's events). The adapter here owns the thread and the hand-over.

Connection: while disconnected, or while the circuit breaker is open, the
adapter reads as disconnected (the monitor blocks entries), and submit and
cancel raise BrokerUnavailable. Every message to IB first takes a token from the
process's 45/s budget (`ib_link.MESSAGES`), shared with the IB market-data feed.

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
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from engine.config import IbSettings
from engine.domain import Bar, ExecutionReport, Fill, Order
from engine.execution.brokers.base import (
    BrokerAccount,
    BrokerOpenOrder,
    BrokerOrderState,
    BrokerUnavailable,
)
from engine.execution.brokers.ib_connection import BrokerEvent, IbConnection
from engine.execution.brokers.ib_link import MESSAGES, Backoff, TokenBucket, start_loop_thread
from engine.execution.brokers.ib_orders import IbPlacement, map_status, new_client, to_ib_order
from engine.execution.brokers.ib_queries import IbQueries
from engine.execution.brokers.ib_reports import IbReports
from store.db import now_ms

__all__ = ["BrokerEvent", "IbBroker", "IbFactory", "map_status", "to_ib_order"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
IbFactory = Callable[[], Any]  # returns an object with ib_async.IB's public API


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
        low, high = backoff_seconds or (settings.backoff_min_seconds, settings.backoff_max_seconds)
        self._link = IbConnection(settings, clock, Backoff(low, high), poll_seconds=poll_seconds)
        self._events = self._link.events
        self._messages = messages
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None

        self._loop, self._thread = start_loop_thread("ib")
        self._reports = IbReports(clock, self._loop.time, commission_grace_seconds)
        factory = ib_factory or new_client
        try:
            self._ib: Any = self._call(self._start(factory))
        except BaseException:
            self._closed = True
            self._stop_thread()
            raise
        self._placement = IbPlacement(
            self._ib, self._reports, messages, settings.account, settings.contracts
        )
        self._queries = IbQueries(self._ib, messages, settings.account, clock)
        if not self._link.first_attempt.wait(self._timeout):
            logger.warning("IB connection not established within %.1fs", self._timeout)

    # ---- protocol -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        if self._closed or self._link.breaker.open:
            return False
        try:
            return bool(self._call(self._sync(self._ib.isConnected)))
        except BrokerUnavailable:
            return False

    @property
    def breaker_open(self) -> bool:
        return self._link.breaker.open

    @property
    def reconnects(self) -> int:
        """Successful connects after the first: the engine reconciles after each one."""
        return self._link.reconnects

    @property
    def connect_error(self) -> str | None:
        """Why the last connect failed; None once one succeeds."""
        return self._link.connect_error

    def drain_events(self) -> list[BrokerEvent]:
        """Connectivity events since the last call, for the engine to raise as alerts."""
        events: list[BrokerEvent] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def submit(self, order: Order, now: int) -> list[ExecutionReport]:
        return self._call(self._placement.submit(order, now))

    def submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        return self._call(self._placement.submit_bracket(list(orders), now))

    def modify(self, order: Order, now: int) -> list[ExecutionReport]:
        return self._call(self._placement.modify(order, now))

    def cancel(self, client_order_id: str, now: int) -> list[ExecutionReport]:
        return self._call(self._placement.cancel(client_order_id, now))

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        """IB fills real orders on its own; a bar is the cycle's moment to collect reports."""
        return self._reports.drain()

    def lookup(self, client_order_id: str) -> BrokerOrderState | None:
        return self._call(self._queries.lookup(client_order_id))

    def fills(self, client_order_id: str) -> list[Fill]:
        return self._call(self._queries.fills(client_order_id))

    def open_orders(self) -> list[BrokerOpenOrder]:
        return self._call(self._queries.open_orders())

    def executions_since(self, since: int | None) -> list[Fill]:
        return self._call(self._queries.executions_since(since))

    def cancel_foreign(self, broker_order_id: str, now: int) -> bool:
        return self._call(self._queries.cancel_foreign(broker_order_id))

    def account(self) -> BrokerAccount:
        return self._call(self._queries.account())

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
            self._loop.call_soon_threadsafe(self._link.failed, "a call timed out")
            raise BrokerUnavailable(f"IB did not answer within {self._timeout:g}s") from None
        except (ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"IB connection failed: {exc}") from exc

    @staticmethod
    async def _sync(fn: Callable[[], T]) -> T:
        return fn()

    # ---- on the IB thread ------------------------------------------------------

    async def _start(self, factory: IbFactory) -> Any:
        ib = factory()
        ib.orderStatusEvent += self._reports.on_status
        ib.execDetailsEvent += self._reports.on_exec
        ib.commissionReportEvent += self._reports.on_commission
        ib.disconnectedEvent += self._link.on_disconnected
        ib.errorEvent += self._link.on_error
        self._ib = ib
        supervise = self._link.supervise(ib, self._reports.sweep_pending)
        self._supervisor = asyncio.get_running_loop().create_task(supervise)
        return ib

    async def _shutdown(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        ib = self._ib
        ib.orderStatusEvent -= self._reports.on_status
        ib.execDetailsEvent -= self._reports.on_exec
        ib.commissionReportEvent -= self._reports.on_commission
        ib.disconnectedEvent -= self._link.on_disconnected
        ib.errorEvent -= self._link.on_error
        if ib.isConnected():
            ib.disconnect()
