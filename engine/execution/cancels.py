"""Canceling and expiring orders: the OMS's cancels, one transaction per request.

A NEW order may or may not have reached the broker (a timeout is not a refusal):
it is looked up first, finished here when the broker never saw it, and synced
when it did. Any other order is canceled at the broker and its reports applied
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.domain import ExecutionReport, Order, OrderStatus
from engine.execution.book import OrderBook
from engine.execution.brokers.base import Broker
from engine.execution.reconcile import OrderReconciler

LOCAL_CANCEL = "canceled before it reached the broker"


class Cancels:
    def __init__(
        self,
        book: OrderBook,
        broker: Broker,
        clock: Callable[[], int],
        reconciler: OrderReconciler,
    ) -> None:
        self._book = book
        self._broker = broker
        self._clock = clock
        self._reconciler = reconciler

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel a working order; returns it as it stands (the broker may confirm later)."""
        working = self._book.open.get(client_order_id)
        if working is not None:
            self._cancel(working.order, self._clock(), LOCAL_CANCEL)
        return self._book.get(client_order_id)

    def cancel_all(self) -> int:
        """Cancel every open order; returns how many a cancel was issued for."""
        orders = self._book.open_orders()
        now = self._clock()
        for order in orders:
            self._cancel(order, now, LOCAL_CANCEL)
        return len(orders)

    def cancel_protection(self, symbol: str) -> int:
        """Cancel the symbol's resting stop and target; returns how many were canceled.

        One transaction; the broker is asked for every cancel before any report is
        applied, so a remote broker's round trips hold no write lock."""
        resting = [o for o in self._book.open_orders(symbol) if o.protective]
        now = self._clock()
        with self._book.transaction():
            reports: list[ExecutionReport] = []
            try:
                for order in resting:
                    if order.status is OrderStatus.NEW:
                        self._cancel(order, now, LOCAL_CANCEL)
                    else:
                        reports += self._broker.cancel(order.client_order_id, now)
            finally:
                for report in reports:
                    self._book.apply_one(report)
        return len(resting)

    def expire(self, now: int) -> list[Order]:
        """Cancel at the broker every working order past its expires_at, marked EXPIRED."""
        due = [o for o in self._book.open_orders() if (o.expires_at or now + 1) <= now]
        for order in due:
            self._book.expiring.add(order.client_order_id)
            self._cancel(order, now, "expired before it reached the broker", OrderStatus.EXPIRED)
        return [o for o in (self._book.get(d.client_order_id) for d in due) if o is not None]

    def _cancel(
        self,
        order: Order,
        now: int,
        local_detail: str,
        local_status: OrderStatus = OrderStatus.CANCELED,
    ) -> None:
        coid = order.client_order_id
        if order.status is OrderStatus.NEW:
            # A NEW order may or may not have reached the broker (a timeout is not a refusal).
            state = self._broker.lookup(coid)
            if state is None:
                self._reconciler.finish_locally(coid, local_status, now, local_detail)
                return
            self._reconciler.sync(coid, state, now, "found at the broker when canceling")
            if coid not in self._book.open:
                return
        self._at_broker(lambda: self._broker.cancel(coid, now))

    def _at_broker(self, call: Callable[[], list[ExecutionReport]]) -> None:
        """Ask the broker and apply its reports in one transaction."""
        with self._book.transaction():
            for report in call():
                self._book.apply_one(report)
