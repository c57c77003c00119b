"""Placing an order: its NEW rows, then the broker call, as two transactions.

`Placement` is the OMS's part that turns an intent into an order family (the
order and, for an entry, its resting stop and target) written as NEW rows, and
that sends a family to the broker and applies what it reports. The first
transaction is committed before the broker sees anything, so a crash never
duplicates an order (see engine.execution.oms).
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from engine.domain import Intent, Order, OrderStatus, Purpose
from engine.execution.book import OrderBook
from engine.execution.brokers.base import Broker, BrokerUnavailable
from engine.execution.orders import (
    decision_price,
    expiry,
    new_client_order_id,
    order_from_intent,
    protective_pair,
)

log = logging.getLogger(__name__)


class Placement:
    """Creates order families as NEW rows and sends them; single-threaded like the OMS."""

    def __init__(
        self,
        book: OrderBook,
        broker: Broker,
        clock: Callable[[], int],
        cancel_protection: Callable[[str], int],
        *,
        order_timeout_ms: int | None,
        day_end: Callable[[int], int] | None,
    ) -> None:
        self._book = book
        self._broker = broker
        self._clock = clock
        self._cancel_protection = cancel_protection
        self._order_timeout_ms = order_timeout_ms
        self._day_end = day_end
        self._sequence = itertools.count(1)

    def new_id(self, now: int) -> str:
        return new_client_order_id(now, next(self._sequence), secrets.token_hex(3))

    def create(
        self,
        intent: Intent,
        ref_price: float,
        signal_id: int | None,
        signal: Sequence[Any] | None,
    ) -> tuple[list[Order], BrokerUnavailable | None]:
        """One transaction: the symbol's protection canceled (for an exit), the
        signal, and the order with its bracket as NEW rows."""
        book = self._book
        with book.transaction():
            unavailable = None
            if intent.purpose.reduces_exposure:
                try:
                    self._cancel_protection(intent.symbol)
                except BrokerUnavailable as exc:
                    unavailable = exc
            now = self._clock()
            coid = self.new_id(now)
            if signal is not None:
                book.repo.insert_signal(signal, None if unavailable else coid)
            if unavailable is not None:
                return [], unavailable
            expires_at = expiry(intent, now, self._order_timeout_ms, self._day_end)
            order = order_from_intent(intent, coid, now, expires_at)
            children: list[Order] = []
            if intent.purpose is Purpose.ENTRY:
                children = protective_pair(
                    intent.symbol,
                    intent.side.opposite,
                    intent.qty,
                    intent.stop_loss,
                    intent.take_profit,
                    group=coid,
                    parent_id=coid,
                    now=now,
                )
            book.add(order, ref_price, now, json.dumps(intent.sizing, default=str))
            for child in children:
                book.add(child, decision_price(child, ref_price), now)
            if signal_id is not None:
                book.repo.link_signal(signal_id, coid)
        return [order, *children], None

    def send_family(self, orders: list[Order], now: int) -> Order:
        """Send one order, or an entry with its bracket, and apply the reports in one
        transaction; returns the first as it stands."""
        first = orders[0]
        coid = first.client_order_id
        book = self._book
        with book.transaction():
            try:
                if len(orders) > 1:
                    reports = self._broker.submit_bracket(orders, now)
                else:
                    reports = self._broker.submit(book.open[coid].order, now)
            except BrokerUnavailable as exc:
                kind = "bracket" if len(orders) > 1 else "order"
                log.warning("%s %s not sent, broker unavailable: %s", kind, coid, exc)
                for order in orders:
                    book.event(
                        order.client_order_id,
                        now,
                        OrderStatus.NEW,
                        f"not sent, broker unavailable: {exc}",
                    )
                return book.open[coid].order if len(orders) == 1 else first
            for report in reports:
                book.apply_one(report)
        return book.get(coid) or first
