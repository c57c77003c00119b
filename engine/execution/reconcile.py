"""The engine's book against the broker's, at start and after every reconnect.

Orders first (`OrderReconciler`, the OMS's): the broker is asked about every
order still open, and the executions the engine missed are adopted, each as its
own fill with the broker's exec id (a repeat of a known exec id changes nothing);
an order the broker never saw is canceled, never sent late. Orders an
unavailable broker left NEW are settled by `retry_unsent` the same way.

Then positions: every symbol where the engine's quantity differs from the
broker's, a position the engine does not know included, is a `Difference`. Any
difference halts trading with one CRITICAL alert listing them all; trading stays
HALTED until the operator either fixes the account or adopts the broker's view
(`adopt_broker`, from the CLI or the cockpit through a `commands` row). The
adoption books one adjusting fill per symbol at the last price, is written to the
audit trail with the operator and the reason, and leaves the state HALTED:
resuming is a separate, confirmed decision.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
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
from engine.execution.brokers.base import Broker, BrokerOrderState, BrokerUnavailable
from engine.execution.orders import FILL_TOLERANCE, NEVER_REACHED_BROKER, Working
from engine.execution.portfolio import write_position
from store.orders import insert_fill

if TYPE_CHECKING:
    from engine.cycle import Trader

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9
ALERT_KEY = "broker-reconcile"


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


def engine_positions(trader: Trader) -> dict[str, float]:
    return {s: p.qty for s, p in trader.portfolio.positions.items() if p.qty}


def reconcile(trader: Trader, why: str, *, orders: bool = True) -> list[Difference]:
    """Orders (unless the caller just did them), then positions; halts with a
    CRITICAL alert on any difference. BrokerUnavailable propagates: nothing is
    decided without the broker's answer."""
    if orders:
        trader.oms.reconcile()
    account = trader.broker.account()
    found = differences(engine_positions(trader), account.positions)
    if not found:
        logger.info("broker reconciled (%s): positions agree", why)
        trader.db.conn.commit()
        return found
    listed = "; ".join(d.describe() for d in found)
    if trader.state is not TradingState.HALTED:
        trader.set_state(TradingState.HALTED, f"broker positions differ ({why})", "engine")
    trader.alerts.raise_(
        Severity.CRITICAL,
        "broker",
        "Broker positions differ: trading halted",
        f"{why}: {listed}. Fix the account, or adopt the broker's view:"
        " python -m engine adopt-broker --reason TEXT (or the Risk page).",
        dedupe_key=ALERT_KEY,
    )
    trader.db.conn.commit()
    return found


def adopt_broker(trader: Trader, actor: str, reason: str) -> str:
    """Make the engine's positions the broker's: one adjusting fill per difference at
    the last price, audited. Returns a summary; the state stays as it was."""
    if not reason.strip():
        raise ValueError("adopting the broker's positions needs a reason")
    account = trader.broker.account()
    found = differences(engine_positions(trader), account.positions)
    if not found:
        return "nothing to adopt: the engine and the broker agree"
    now = trader.clock()
    booked = []
    for diff in found:
        delta = diff.broker_qty - diff.engine_qty
        price = trader.portfolio.last_price(diff.symbol)
        bar = trader.last_bar.get(diff.symbol)
        if price is None and bar is not None:
            price = bar.close
        if price is None:
            raise ValueError(f"{diff.symbol}: no price to book the adopted position at")
        coid = f"adopt:{now}"
        fill = Fill(
            coid,
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
        booked.append(f"{diff.describe()} -> {diff.broker_qty:g} at {price:g}")
    append_audit(
        trader.db,
        actor,
        "adopt_broker",
        {
            "reason": reason,
            "differences": [
                {"symbol": d.symbol, "engine": d.engine_qty, "broker": d.broker_qty} for d in found
            ],
        },
        ts=now,
    )
    summary = "adopted the broker's positions: " + "; ".join(booked)
    trader.alerts.raise_(
        Severity.INFO, "broker", "Broker positions adopted", f"{summary} ({actor}: {reason})"
    )
    trader.db.conn.commit()
    return summary


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
        fill = self._missing_fill(working, state, now)
        report = ExecutionReport(
            coid,
            state.status,
            now,
            fill,
            state.broker_order_id,
            f"{why}: broker says {state.status}",
        )
        with book.transaction():
            if not book.apply_one(report):
                current = book.status(coid)
                agreement = "agrees" if current is state.status else "disagrees, kept " + current
                book.event(coid, now, current, f"{why}: broker {agreement} ({state.status})")

    def _missing_fill(self, working: Working, state: BrokerOrderState, now: int) -> Fill | None:
        """The broker state has quantities, not executions: one fill stands for what
        we missed, its commission unknown (0). Its id is derived from the broker's
        filled quantity, so a second reconciliation cannot repeat it."""
        order = working.order
        if not _missing(order, state.filled_qty):
            return None
        missing = state.filled_qty - order.filled_qty
        price = _missing_fill_price(working, state, missing)
        if price is None:
            return None
        return Fill(
            order.client_order_id,
            f"{order.client_order_id}:reconciled:{state.filled_qty:g}",
            order.symbol,
            order.side,
            now,
            missing,
            price,
            0.0,
            working.ref_price,
        )

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


def _missing_fill_price(working: Working, state: BrokerOrderState, missing: float) -> float | None:
    order = working.order
    if state.avg_price is None:
        logger.error("broker reports %s filled without a price", order.client_order_id)
        return working.ref_price
    price = state.avg_price * state.filled_qty - (order.avg_price or 0.0) * order.filled_qty
    price /= missing
    return price if math.isfinite(price) and price > 0 else state.avg_price
