"""Order management: the order lifecycle, persisted before any broker sees it.

The OMS is four parts, one job each:

    engine.execution.orders     the lifecycle's rules, pure (transitions, brackets)
    store.orders                every statement on orders, order_events and fills
    engine.execution.book       the orders in memory and the write-behind buffer;
                                fills booked to the portfolio by engine.execution.ledger
    engine.execution.reconcile  the orders against the broker's (OrderReconciler)

and `Oms` here, which orchestrates the broker: submit, brackets, protect, modify
(placing an order family, its NEW rows then the broker call, is
engine.execution.placing), and cancel and expire (engine.execution.cancels).
A report that asks for an illegal transition is refused and logged. Every
transition is an `order_events` row; fills are recorded even on a terminal
order, because the money moved.

Crash safety: an order is two transactions. The first commits its NEW rows (the
order, its bracket, their events and the intent's `signals` row; for an exit,
first the cancel of the position's resting pair) before any broker sees it. The
second holds the broker call and everything its reports move: statuses, fills,
the position, the round trip. The paper broker writes its own tables on the
same connection, so they join that transaction (a savepoint) and commit with it
or not at all; a remote broker writes nothing here, and the broker calls of a
transaction come before its first write, so a round trip holds no write lock
(unless a protective order left NEW by an outage must be looked up first).
After a restart, `reconcile` asks the broker about every order still open in the
database; one the broker never saw is canceled, never sent late. A cycle's
orders are placed together (`submit_many`): the same two transactions, each
holding every order of the batch, so a cycle of N orders commits twice, not 2N
times.

Brackets: an ENTRY intent with a stop-loss or take-profit becomes three orders,
persisted together and sent together (`Broker.submit_bracket`): the entry, a
resting STOP and a resting LIMIT that name it as parent and share an OCO group.
Their decision prices are their own stop and limit, so a stop's slippage is what
the market took beyond the stop. Any other exit of a protected position cancels
the pair first (`submit` does it), so a resting stop can never fill after the
position was closed and open a new one. `modify_stop` moves the resting stop
(a trailing stop); `protect` puts a new pair in front of a position that lost
its own (after a restart).

Unsent orders: when the broker raises `BrokerUnavailable`, the order stays NEW
with an event that says so. The cycle should call `retry_unsent(max_age_ms)` at
its start: it first asks the broker whether the order arrived after all (a
timeout is not a refusal), resends exits and flattens, and cancels entries older
than `max_age_ms` because their prices are stale.

Exceptions:

    OmsError                    base (RuntimeError): a misuse of the OMS
    └── OpenTransaction         submit inside an open transaction: the NEW row
                                would not be durable before the broker sees it
    BrokerUnavailable           absorbed by submit and retry_unsent; propagates
                                from cancel, expire and reconcile (retry later)
    anything else               propagates; the failed batch is rolled back and
                                the OMS and portfolio memory reloaded from the db
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlite_utils import Database

from engine.domain import (
    Bar,
    ExecutionReport,
    ExitReason,
    Fill,
    Intent,
    Order,
    OrderType,
    Position,
    Side,
)
from engine.execution.book import OmsListener, OrderBook
from engine.execution.brokers.base import Broker
from engine.execution.cancels import Cancels
from engine.execution.ledger import Ledger
from engine.execution.orders import (
    NEVER_REACHED_BROKER,
    Working,
    check_intent,
    decision_price,
    is_legal_transition,
    new_client_order_id,
    protective_pair,
)
from engine.execution.placing import OrderBatch, Placement
from engine.execution.portfolio import Portfolio
from engine.execution.reconcile import OrderReconciler
from store.orders import OrderRepository, last_execution_ts

__all__ = [
    "NEVER_REACHED_BROKER",
    "Oms",
    "OmsError",
    "OmsListener",
    "OpenTransaction",
    "OrderBatch",
    "is_legal_transition",
    "new_client_order_id",
    "protective_pair",
]

log = logging.getLogger(__name__)


class OmsError(RuntimeError):
    pass


class OpenTransaction(OmsError):
    pass


class Oms:
    """The only writer of `orders`, `order_events` and `fills`; single-threaded."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        portfolio: Portfolio,
        clock: Callable[[], int],
        *,
        order_timeout_ms: int | None = 300_000,
        day_end: Callable[[int], int] | None = None,
    ) -> None:
        """`clock` is market time; `day_end(now)` is when the trading day holding `now`
        ends: a resting entry is a day order and expires then at the latest."""
        self._broker = broker
        self._clock = clock
        self._book = OrderBook(OrderRepository(db), Ledger(db, portfolio), clock)
        self._placement = Placement(
            self._book,
            broker,
            clock,
            self.cancel_protection,
            order_timeout_ms=order_timeout_ms,
            day_end=day_end,
        )
        send = self._placement.send_family
        self._reconciler = OrderReconciler(self._book, broker, clock, send)
        self._cancels = Cancels(self._book, broker, clock, self._reconciler)
        # A broker that writes on the engine's connection (paper) joins the OMS's
        # transactions; when one is rolled back, it forgets what it did in it.
        reload = getattr(broker, "reload", None)
        if callable(reload):
            self._book.on_rollback(reload)

    def listen(self, listener: OmsListener) -> None:
        """Tell `listener` every order, change, fill and round trip once it is committed."""
        self._book.listen(listener)

    # -- reading ---------------------------------------------------------------

    def open_orders(self) -> list[Order]:
        return self._book.open_orders()

    def get(self, client_order_id: str) -> Order | None:
        return self._book.get(client_order_id)

    def protection(self, symbol: str) -> list[Order]:
        """The resting stop and target working for the symbol's position."""
        return [o for o in self._book.open_orders(symbol) if o.protective]

    # -- submitting ------------------------------------------------------------

    def submit(
        self,
        intent: Intent,
        ref_price: float,
        signal_id: int | None = None,
        *,
        signal: Sequence[Any] | None = None,
    ) -> Order:
        """Persist the order as NEW (committed), then send it and apply the reports.

        `ref_price` is the price the decision was made at; fills are measured
        against it for slippage. Returns the order as it stands afterwards: still
        NEW when the broker was unavailable (see the module docstring). An entry
        with a stop or target goes out as a bracket; any other exit first cancels
        the resting protection of its symbol (BrokerUnavailable from that cancel
        propagates, and no order is made).

        The intent's `signals` row is linked to the order: `signal_id` names one
        already written; `signal` is one to write (its columns as in
        store.orders.insert_signal) in the order's own transaction. It is written
        even when no order comes of it.
        """
        if self._book.repo.in_transaction:
            raise OpenTransaction(
                "Oms.submit needs the writer outside any transaction: the NEW order"
                " must be committed before the broker sees it"
            )
        try:
            check_intent(intent, ref_price)
        except ValueError:
            if signal is not None:
                with self._book.transaction():
                    self._book.repo.insert_signal(signal, None)
            raise
        orders, unavailable = self._placement.create(intent, ref_price, signal_id, signal)
        if unavailable is not None:
            raise unavailable
        return self._placement.send_family(orders, orders[0].created_at)

    def submit_many(self, fill: Callable[[OrderBatch], None]) -> list[Order]:
        """Orders placed together (a cycle's intents, engine.execution.placing):
        `fill` adds each intent to the batch, gating it first against the orders
        added before it, which are already in `open_orders` and the listener's
        facts. Their NEW rows (and any `signals` rows `fill` writes) are committed
        in one transaction, then every family is sent and the reports applied in
        a second. Returns the orders made, as they stand afterwards, in the order
        they were added: still NEW where the broker was unavailable. An exception
        from `fill` rolls the first transaction back and nothing is sent."""
        if self._book.repo.in_transaction:
            raise OpenTransaction(
                "Oms.submit_many needs the writer outside any transaction: the NEW orders"
                " must be committed before the broker sees them"
            )
        batch = OrderBatch(self._placement, self._book)
        with self._book.transaction():
            fill(batch)
        if not batch.families:
            return []
        return self._placement.send_many(batch.families)

    def protect(self, position: Position) -> list[Order]:
        """Send a resting stop and target (OCO, no parent) for a held position at its
        stop and target levels, when none are working; returns what was sent."""
        if position.qty == 0 or (position.stop is None and position.target is None):
            return []
        if self.protection(position.symbol):
            return []
        now = self._clock()
        orders = protective_pair(
            position.symbol,
            Side.SELL if position.qty > 0 else Side.BUY,
            abs(position.qty),
            position.stop,
            position.target,
            group=self._placement.new_id(now),
            parent_id=None,
            now=now,
        )
        with self._book.transaction():
            for order in orders:
                self._book.add(order, decision_price(order, position.avg_price), now)
        self._placement.send_family(orders, now)
        return [o for o in (self.get(x.client_order_id) for x in orders) if o is not None]

    def modify_stop(self, client_order_id: str, stop: float, reason: ExitReason) -> Order | None:
        """Move a resting stop to `stop` (a trailing stop); its fill will be booked with
        `reason` and measured against the new level. BrokerUnavailable propagates."""
        book = self._book
        working = book.open.get(client_order_id)
        if working is None or working.order.order_type is not OrderType.STOP:
            return self.get(client_order_id)
        if not (math.isfinite(stop) and stop > 0):
            raise ValueError(f"{client_order_id}: a stop must be positive, got {stop!r}")
        old = working.order
        moved = replace(old, stop_price=stop, exit_reason=reason)
        now = self._clock()
        reports = self._broker.modify(moved, now)
        with book.transaction():
            book.repo.move_stop(client_order_id, stop, reason, now)
            book.event(
                client_order_id, now, old.status, f"stop moved {old.stop_price:g} -> {stop:g}"
            )
            book.hold(Working(moved, stop))
            for report in reports:
                book.apply_one(report)
        return self.get(client_order_id)

    def retry_unsent(self, max_age_ms: int) -> list[Order]:
        """Orders an unavailable broker left NEW: see OrderReconciler.retry_unsent."""
        return self._reconciler.retry_unsent(max_age_ms)

    def reconcile(self) -> list[Order]:
        """At start: bring every order still open in the database in line with the
        broker (OrderReconciler.reconcile). BrokerUnavailable propagates."""
        return self._reconciler.reconcile()

    def last_execution_ts(self) -> int | None:
        """When the newest broker execution booked was made: missed ones are asked
        for from there."""
        return last_execution_ts(self._book.repo.conn)

    def adopt_executions(self, executions: Iterable[Fill], why: str) -> list[Fill]:
        """Missed executions booked one by one (OrderReconciler.adopt_executions);
        returns those of orders the engine does not know."""
        return self._reconciler.adopt_executions(executions, why)

    def settle_vanished(self, working_at_broker: Iterable[str], why: str) -> list[Order]:
        """Orders the broker no longer works, settled from their executions
        (OrderReconciler.settle_vanished)."""
        return self._reconciler.settle_vanished(working_at_broker, why)

    # -- reports -----------------------------------------------------------------

    def apply(self, report: ExecutionReport) -> None:
        self._book.apply_batch([report])

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        """Pass the bar to the broker and apply what it reports (resting orders filling)."""
        return self.on_bars([bar])

    def on_bars(self, bars: Sequence[Bar]) -> list[ExecutionReport]:
        """`on_bar` for each of a cycle's bars in turn, in one transaction (a savepoint
        in the cycle's), not one per bar."""
        reports: list[ExecutionReport] = []
        with self._book.transaction():
            for bar in bars:
                for report in self._broker.on_bar(bar):
                    self._book.apply_one(report)
                    reports.append(report)
        return reports

    # -- canceling and expiring ----------------------------------------------------

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel a working order; returns it as it stands (the broker may confirm later)."""
        return self._cancels.cancel(client_order_id)

    def cancel_all(self) -> int:
        """Cancel every open order; returns how many a cancel was issued for."""
        return self._cancels.cancel_all()

    def cancel_protection(self, symbol: str) -> int:
        """Cancel the symbol's resting stop and target; returns how many were canceled."""
        return self._cancels.cancel_protection(symbol)

    def expire(self, now: int) -> list[Order]:
        """Cancel at the broker every working order past its expires_at, marked EXPIRED."""
        return self._cancels.expire(now)
