"""The engine's book against the broker's, at start and after every reconnect.

1. Orders (`OrderReconciler`, the OMS's): the broker is asked about every order
   still open; an order the broker never saw is canceled, never sent late. Orders
   an unavailable broker left NEW are settled by `retry_unsent` the same way.
2. Executions since the last one the engine knows (`Broker.executions_since`):
   each one missed while down is booked as its own fill with the broker's exec id,
   against its order even when that order is closed here (a bracket's stop canceled
   by the engine but filled at the broker); a repeat of a known exec id changes
   nothing, so a late arrival never counts twice. A broker quantity with no
   execution behind it is never booked as a made-up fill.
3. Open orders (`Broker.open_orders`): an engine order the broker no longer works is
   settled from its executions (FILLED when they cover it, else CANCELED), never
   left open; an order working at the broker that the engine does not know is an
   `OrderDifference`.
4. Positions: every symbol where the engine's quantity differs from the broker's,
   a position the engine does not know included, is a `Difference`.

Any difference halts trading with one CRITICAL alert listing them all; trading stays
HALTED until the operator either fixes the account or adopts the broker's view
(`adopt_broker`, from the CLI or the cockpit through a `commands` row). The
adoption books one adjusting fill per symbol at the last price, asks the broker to
cancel every order the engine does not know (the engine cannot manage an order it
did not decide), is written to the audit trail with the operator and the reason,
and leaves the state HALTED: resuming is a separate, confirmed decision.
Executions of orders the engine never placed are not booked; they raise a WARNING
naming them (the position they leave is a Difference).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.alerts.audit import append_audit
from engine.domain import (
    ExecutionReport,
    Fill,
    Order,
    OrderStatus,
    Purpose,
    Severity,
    Side,
    TradingState,
)
from engine.execution.book import OrderBook
from engine.execution.brokers.base import (
    Broker,
    BrokerOpenOrder,
    BrokerOrderState,
    BrokerUnavailable,
)
from engine.execution.orders import FILL_TOLERANCE, NEVER_REACHED_BROKER
from engine.execution.portfolio import write_position
from store.orders import insert_fill

if TYPE_CHECKING:
    from engine.cycle import Trader

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9
ALERT_KEY = "broker-reconcile"
FOREIGN_KEY = "broker-foreign-executions"


@dataclass(frozen=True, slots=True)
class Difference:
    symbol: str
    engine_qty: float
    broker_qty: float

    def describe(self) -> str:
        if self.engine_qty == 0:
            return f"{self.symbol}: broker holds {self.broker_qty:g}, unknown to the engine"
        if self.broker_qty == 0:
            return f"{self.symbol}: engine holds {self.engine_qty:g}, the broker none"
        return f"{self.symbol}: engine {self.engine_qty:g}, broker {self.broker_qty:g}"


def differences(
    engine: Mapping[str, float], broker: Mapping[str, float], tolerance: float = TOLERANCE
) -> list[Difference]:
    """Every symbol whose quantities differ beyond `tolerance`, by symbol."""
    out = []
    for symbol in sorted(set(engine) | set(broker)):
        ours, theirs = engine.get(symbol, 0.0), broker.get(symbol, 0.0)
        if abs(ours - theirs) > tolerance * max(1.0, abs(ours), abs(theirs)):
            out.append(Difference(symbol, ours, theirs))
    return out


@dataclass(frozen=True, slots=True)
class OrderDifference:
    """An order working at the broker that the engine does not know."""

    order: BrokerOpenOrder

    def describe(self) -> str:
        return f"open order {self.order.describe()}"


Finding = Difference | OrderDifference


def engine_positions(trader: Trader) -> dict[str, float]:
    return {s: p.qty for s, p in trader.portfolio.positions.items() if p.qty}


def unknown_orders(trader: Trader, at_broker: list[BrokerOpenOrder]) -> list[OrderDifference]:
    ours = {o.client_order_id for o in trader.oms.open_orders()}
    return [OrderDifference(o) for o in at_broker if o.client_order_id not in ours]


def reconcile(trader: Trader, why: str, *, orders: bool = True) -> list[Finding]:
    """Orders (unless the caller just did them), missed executions, open orders,
    then positions; halts with a CRITICAL alert on any difference. BrokerUnavailable
    propagates: nothing is decided without the broker's answer."""
    oms, broker = trader.oms, trader.broker
    if orders:
        oms.reconcile()
    foreign = oms.adopt_executions(broker.executions_since(oms.last_execution_ts()), why)
    at_broker = broker.open_orders()
    oms.settle_vanished((o.client_order_id for o in at_broker if o.client_order_id), why)
    found: list[Finding] = [*unknown_orders(trader, at_broker)]
    found += differences(engine_positions(trader), broker.account().positions)
    if foreign:
        listed = "; ".join(
            f"{f.exec_id} {f.side.value} {f.qty:g} {f.symbol} at {f.price:g}" for f in foreign
        )
        trader.alerts.raise_(
            Severity.WARNING,
            "broker",
            "Executions the engine did not order",
            f"{why}: {listed}. They are not booked; a position they leave halts trading.",
            dedupe_key=FOREIGN_KEY,
        )
    if not found:
        logger.info("broker reconciled (%s): orders and positions agree", why)
        trader.db.conn.commit()
        return found
    listed = "; ".join(d.describe() for d in found)
    if trader.state is not TradingState.HALTED:
        trader.set_state(TradingState.HALTED, f"broker book differs ({why})", "engine")
    trader.alerts.raise_(
        Severity.CRITICAL,
        "broker",
        "Broker book differs: trading halted",
        f"{why}: {listed}. Fix the account, or adopt the broker's view (its positions"
        " booked, the orders unknown here canceled):"
        " python -m engine adopt-broker --reason TEXT (or the Risk page).",
        dedupe_key=ALERT_KEY,
    )
    trader.db.conn.commit()
    return found


def adopt_broker(trader: Trader, actor: str, reason: str) -> str:
    """Make the engine's book the broker's: one adjusting fill per position difference
    at the last price, and a cancel at the broker for every order the engine does not
    know; audited. Returns a summary; the state stays as it was."""
    if not reason.strip():
        raise ValueError("adopting the broker's positions needs a reason")
    account = trader.broker.account()
    found = differences(engine_positions(trader), account.positions)
    strangers = unknown_orders(trader, trader.broker.open_orders())
    if not found and not strangers:
        return "nothing to adopt: the engine and the broker agree"
    now = trader.clock()
    canceled = []
    for stranger in strangers:
        taken = trader.broker.cancel_foreign(stranger.order.broker_order_id, now)
        outcome = "cancel sent" if taken else "not canceled: cancel it at the broker"
        canceled.append(f"{stranger.describe()}: {outcome}")
    booked = [_book_adjustment(trader, diff, now) for diff in found]
    append_audit(
        trader.db,
        actor,
        "adopt_broker",
        {
            "reason": reason,
            "differences": [
                {"symbol": d.symbol, "engine": d.engine_qty, "broker": d.broker_qty} for d in found
            ],
            "orders_canceled": canceled,
        },
        ts=now,
    )
    summary = "adopted the broker's book: " + "; ".join(booked + canceled)
    trader.alerts.raise_(
        Severity.INFO, "broker", "Broker positions adopted", f"{summary} ({actor}: {reason})"
    )
    trader.db.conn.commit()
    return summary


def _book_adjustment(trader: Trader, diff: Difference, now: int) -> str:
    """One adjusting fill that brings the engine's position to the broker's, at the
    last price; returns what was booked."""
    delta = diff.broker_qty - diff.engine_qty
    price = trader.portfolio.last_price(diff.symbol)
    bar = trader.last_bar.get(diff.symbol)
    if price is None and bar is not None:
        price = bar.close
    if price is None:
        raise ValueError(f"{diff.symbol}: no price to book the adopted position at")
    fill = Fill(
        f"adopt:{now}",
        f"adopt:{diff.symbol}:{now}",
        diff.symbol,
        Side.BUY if delta > 0 else Side.SELL,
        now,
        abs(delta),
        price,
        0.0,
        price,
    )
    insert_fill(trader.db.conn, fill)
    trader.portfolio.apply_fill(fill)
    write_position(trader.db, trader.portfolio, diff.symbol, now)
    return f"{diff.describe()} -> {diff.broker_qty:g} at {price:g}"


Send = Callable[[list[Order], int], Order]


class OrderReconciler:
    """The OMS's orders against the broker's: at start, on a cancel of an order that
    may or may not have arrived, and for orders an unavailable broker left NEW."""

    def __init__(
        self, book: OrderBook, broker: Broker, clock: Callable[[], int], send: Send
    ) -> None:
        self._book = book
        self._broker = broker
        self._clock = clock
        self._send = send

    def finish_locally(self, coid: str, status: OrderStatus, now: int, detail: str) -> None:
        self._book.apply_batch([ExecutionReport(coid, status, now, detail=detail)])

    def reconcile(self) -> list[Order]:
        """Bring every order still open in the database in line with the broker;
        returns them as they stand. BrokerUnavailable propagates: the engine should
        not trade before it knows what the broker holds."""
        book = self._book
        now = self._clock()
        book.forget_closed()
        coids = [o.client_order_id for o in book.open_orders()]
        for coid in coids:
            order = book.open[coid].order
            state = self._broker.lookup(coid)
            if state is not None:
                self.sync(coid, state, now, "reconciled")
            elif order.status is OrderStatus.NEW:
                self.finish_locally(coid, OrderStatus.CANCELED, now, NEVER_REACHED_BROKER)
            else:
                logger.warning("order %s (%s) is unknown to the broker", coid, order.status)
                self.finish_locally(
                    coid,
                    OrderStatus.CANCELED,
                    now,
                    f"reconciled: unknown to the broker (was {order.status})",
                )
        return [o for o in (book.get(c) for c in coids) if o is not None]

    def sync(self, coid: str, state: BrokerOrderState, now: int, why: str) -> None:
        """Adopt the broker's status and the executions the database lacks."""
        book = self._book
        working = book.open[coid]
        if _missing(working.order, state.filled_qty):
            self._adopt_executions(coid, why)
            working = book.open.get(coid) or working
        order = working.order
        detail = f"{why}: broker says {state.status}"
        if _missing(order, state.filled_qty):
            # Only executions are booked, each under its own exec id: a quantity with
            # no execution behind it would be counted twice once the execution came.
            # The position it leaves unexplained is reconciliation's to raise.
            logger.warning(
                "%s: broker reports %g filled, executions show %g",
                coid,
                state.filled_qty,
                order.filled_qty,
            )
            detail += f" with {state.filled_qty:g} filled; its executions show {order.filled_qty:g}"
        report = ExecutionReport(coid, state.status, now, None, state.broker_order_id, detail)
        with book.transaction():
            if not book.apply_one(report):
                current = book.status(coid)
                agreement = "agrees" if current is state.status else "disagrees, kept " + current
                book.event(coid, now, current, f"{why}: broker {agreement} ({state.status})")

    def adopt_executions(self, executions: Iterable[Fill], why: str) -> list[Fill]:
        """Book every execution the database lacks against its order, each as its own
        fill with the broker's exec id: an open order moves on by it, a closed one (a
        bracket's stop canceled here but filled at the broker) keeps its status and
        gets the fill. A known exec id changes nothing. Returns the executions of
        orders the engine does not know: they are not booked."""
        book = self._book
        unknown: list[Fill] = []
        adopted = 0
        with book.transaction():
            for fill in executions:
                working = book.find(fill.client_order_id) if fill.client_order_id else None
                if working is None:
                    unknown.append(fill)
                    continue
                order = working.order
                status = order.status
                if status.is_open:
                    done = order.filled_qty + fill.qty >= order.qty * (1 - FILL_TOLERANCE)
                    status = OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED
                report = ExecutionReport(
                    fill.client_order_id,
                    status,
                    fill.ts,
                    fill,
                    detail=f"{why}: missed execution {fill.exec_id}",
                )
                adopted += book.apply_one(report)
        if adopted:
            logger.info("%s: adopted %d missed execution(s)", why, adopted)
        return unknown

    def settle_vanished(self, working_at_broker: Iterable[str], why: str) -> list[Order]:
        """Every order open here (past NEW) that the broker no longer works: its
        executions adopted, then FILLED when they cover it, else CANCELED with what
        did fill. Returns the orders settled."""
        book = self._book
        working = set(working_at_broker)
        now = self._clock()
        settled = []
        for order in book.open_orders():
            coid = order.client_order_id
            if order.status is OrderStatus.NEW or coid in working:
                continue
            self._adopt_executions(coid, why)
            current = book.get(coid)
            if current is None or not current.status.is_open:
                continue
            done = current.filled_qty >= current.qty * (1 - FILL_TOLERANCE)
            self.finish_locally(
                coid,
                OrderStatus.FILLED if done else OrderStatus.CANCELED,
                now,
                f"{why}: no longer working at the broker,"
                f" {current.filled_qty:g} of {current.qty:g} filled",
            )
            settled.append(coid)
        return [o for o in map(book.get, settled) if o is not None]

    def _adopt_executions(self, coid: str, why: str) -> None:
        """Each execution the broker has and the database lacks, as its own fill with
        the broker's exec id; one already booked is a repeat and changes nothing."""
        reports = [
            ExecutionReport(
                coid,
                OrderStatus.PARTIALLY_FILLED,
                fill.ts,
                fill,
                detail=f"{why}: missed execution {fill.exec_id}",
            )
            for fill in self._broker.fills(coid)
        ]
        if reports:
            logger.info("%s: adopting %d execution(s) from the broker", coid, len(reports))
            self._book.apply_batch(reports)

    # -- orders an unavailable broker left NEW ---------------------------------------

    def retry_unsent(self, max_age_ms: int) -> list[Order]:
        """Deal with orders left NEW by an unavailable broker; returns them as they stand.

        An order the broker did receive is adopted, an exit or flatten is resent,
        an entry older than `max_age_ms` is canceled. Stops at the first
        `BrokerUnavailable`: the rest wait for the next cycle.
        """
        book = self._book
        now = self._clock()
        handled: list[str] = []
        for order in book.open_orders():
            current = book.open.get(order.client_order_id)
            if current is None or current.order.status is not OrderStatus.NEW:
                continue  # not unsent, or settled with its bracket earlier in this loop
            if order.parent_id is not None and order.parent_id in book.open:
                continue  # goes out with its entry
            family = self._family(order)
            handled += [o.client_order_id for o in family]
            try:
                if not self._retry(family, max_age_ms, now):
                    break
            except BrokerUnavailable as exc:
                logger.warning("retry of unsent orders stopped, broker unavailable: %s", exc)
                break
        return [o for o in (book.get(c) for c in handled) if o is not None]

    def _retry(self, family: list[Order], max_age_ms: int, now: int) -> bool:
        """Settle one unsent order and its family; False when the broker is away."""
        order = family[0]
        coid = order.client_order_id
        if self._broker.lookup(coid) is not None:
            lost = []
            for member in family:
                found = self._broker.lookup(member.client_order_id)
                if found is not None:
                    self.sync(member.client_order_id, found, now, "found on retry")
                else:
                    lost.append(member.client_order_id)
            if lost:
                self._drop_half_sent(coid, lost, now)
        elif order.purpose is Purpose.ENTRY and now - order.created_at > max_age_ms:
            for member in family:
                self.finish_locally(
                    member.client_order_id,
                    OrderStatus.CANCELED,
                    now,
                    f"not sent within {max_age_ms} ms; the entry is stale",
                )
        elif self._send(family, now).status is OrderStatus.NEW:
            return False
        return True

    def _drop_half_sent(self, coid: str, lost: list[str], now: int) -> None:
        """Part of a bracket reached the broker and part did not (the send timed out
        half way): an entry without its stop must not trade, so the lost orders are
        canceled here and the entry at the broker; a position it already opened is
        guarded by the cycle's fallback exit until the next restart protects it."""
        logger.warning("bracket %s reached the broker without %s", coid, ", ".join(lost))
        for member in lost:
            self.finish_locally(member, OrderStatus.CANCELED, now, NEVER_REACHED_BROKER)
        order = self._book.get(coid)
        if order is not None and order.status.is_open and order.purpose is Purpose.ENTRY:
            self._book.apply_batch(self._broker.cancel(coid, now))

    def _family(self, order: Order) -> list[Order]:
        """The order and the unsent orders that go out with it: its bracket children,
        or the other side of a parentless protective pair."""
        if order.parent_id is not None:
            return [order]
        group = order.oco_group or order.client_order_id
        members = [
            o
            for o in self._book.open_orders()
            if o.status is OrderStatus.NEW
            and o.client_order_id != order.client_order_id
            and (o.parent_id == order.client_order_id or (o.oco_group == group))
        ]
        return [order, *members]


def _missing(order: Order, broker_filled: float) -> bool:
    return broker_filled - order.filled_qty > FILL_TOLERANCE * max(order.qty, 1.0)
