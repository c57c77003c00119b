"""Placing an order: its NEW rows, then the broker call, as two transactions.

`Placement` is the OMS's part that turns an intent into an order family (the
order and, for an entry, its resting stop and target) written as NEW rows, and
that sends a family to the broker and applies what it reports. The first
transaction is committed before the broker sees anything, so a crash never
duplicates an order (see engine.execution.oms).

A batch (`OrderBatch`, a cycle's intents) is the same two transactions for all
its orders together: every family's NEW rows are committed at once, then each
family is sent in turn and all their reports are applied and committed at once.
Each order is still committed before the broker sees it; an order committed but
not sent (a crash between the two) is left NEW, where `retry_unsent` finds it.
The orders of a batch are in the OMS's memory, and told to its listener (the
gate's daily facts), as each is added, so the next intent is gated against them:
as working orders, since none of them has reached the broker yet.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from engine.domain import ExecutionReport, Intent, Order, OrderStatus, Purpose
from engine.execution.book import OrderBook
from engine.execution.brokers.base import Broker, BrokerUnavailable
from engine.execution.orders import (
    check_intent,
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
        # Drawn once: the counter tells this placement's orders apart, the nonce this
        # placement's from another process's (or a restart's) in the same millisecond.
        # A fresh draw per order was 2% of the order path.
        self._nonce = secrets.token_hex(3)

    def new_id(self, now: int) -> str:
        return new_client_order_id(now, next(self._sequence), self._nonce)

    def create(
        self,
        intent: Intent,
        ref_price: float,
        signal_id: int | None,
        signal: Sequence[Any] | None,
    ) -> tuple[list[Order], BrokerUnavailable | None]:
        """One transaction: the symbol's protection canceled (for an exit), the
        signal, and the order with its bracket as NEW rows."""
        with self._book.transaction():
            return self.add_family(intent, ref_price, signal_id, signal, at_once=False)

    def add_family(
        self,
        intent: Intent,
        ref_price: float,
        signal_id: int | None,
        signal: Sequence[Any] | None,
        *,
        at_once: bool,
    ) -> tuple[list[Order], BrokerUnavailable | None]:
        """`create` inside the caller's transaction; with `at_once`, the orders are in
        memory (and told to the listener) before it commits."""
        book = self._book
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
        sizing = json.dumps(intent.sizing, default=str)
        book.add(order, ref_price, now, sizing, at_once=at_once)
        for child in children:
            book.add(child, decision_price(child, ref_price), now, at_once=at_once)
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
            answer = self._ask(orders, now)
            if isinstance(answer, BrokerUnavailable):
                self._not_sent(orders, now, answer)
                return book.open[coid].order if len(orders) == 1 else first
            for report in answer:
                book.apply_one(report)
        return book.get(coid) or first

    def send_many(self, families: Sequence[list[Order]]) -> list[Order]:
        """Send every family (each at the time it was created) and apply all the
        reports in one transaction, in the families' order; returns each family's
        first order as it stands. The broker is asked for every family before any
        report is applied, so a remote broker's round trips hold no write lock."""
        book = self._book
        with book.transaction():
            answers = [self._ask(f, f[0].created_at) for f in families]
            for family, answer in zip(families, answers, strict=True):
                if isinstance(answer, BrokerUnavailable):
                    self._not_sent(family, family[0].created_at, answer)
                    continue
                for report in answer:
                    book.apply_one(report)
        return [book.get(f[0].client_order_id) or f[0] for f in families]

    def _ask(self, orders: list[Order], now: int) -> list[ExecutionReport] | BrokerUnavailable:
        """The broker's reports on sending the family, or why it could not be sent."""
        try:
            if len(orders) > 1:
                return self._broker.submit_bracket(orders, now)
            return self._broker.submit(self._book.open[orders[0].client_order_id].order, now)
        except BrokerUnavailable as exc:
            return exc

    def _not_sent(self, orders: list[Order], now: int, exc: BrokerUnavailable) -> None:
        kind = "bracket" if len(orders) > 1 else "order"
        log.warning("%s %s not sent, broker unavailable: %s", kind, orders[0].client_order_id, exc)
        for order in orders:
            self._book.event(
                order.client_order_id, now, OrderStatus.NEW, f"not sent, broker unavailable: {exc}"
            )


class OrderBatch:
    """Intents placed together (see the module docstring), filled inside the batch's
    first transaction by `Oms.submit_many`'s caller."""

    def __init__(self, placement: Placement, book: OrderBook) -> None:
        self._placement = placement
        self._book = book
        self.families: list[list[Order]] = []

    def add(
        self, intent: Intent, ref_price: float, signal: Sequence[Any] | None = None
    ) -> BrokerUnavailable | None:
        """The intent's NEW rows (and its `signals` row, as `Oms.submit` takes it),
        in memory at once. For an exit, the symbol's protection is canceled first;
        when the broker is unavailable for that, no order is made and the reason is
        returned. An intent that cannot become an order raises ValueError, its
        signal row written."""
        try:
            check_intent(intent, ref_price)
        except ValueError:
            if signal is not None:
                self._book.repo.insert_signal(signal, None)
            raise
        orders, unavailable = self._placement.add_family(
            intent, ref_price, None, signal, at_once=True
        )
        if orders:
            self.families.append(orders)
        return unavailable
