"""Order management: the order lifecycle, persisted before any broker sees it.

    NEW -> SUBMITTED -> ACCEPTED -> PARTIALLY_FILLED -> FILLED
      any open status -> CANCELED | EXPIRED;  REJECTED only before the first fill

A status may skip forward (a broker that fills at once reports FILLED straight
after SUBMITTED) but never goes back, and a terminal status never changes; a
report that asks for anything else is refused and logged. Every transition is an
`order_events` row; fills are recorded even on a terminal order, because the
money moved.

Crash safety: `submit` commits the NEW row (one transaction) before calling the
broker, then applies the broker's reports (a second transaction). After a
restart, `reconcile` asks the broker about every order still open in the
database; one the broker never saw is canceled, never sent late.

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

import functools
import itertools
import json
import logging
import math
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlite_utils import Database

from engine.domain import (
    Bar,
    ExecutionReport,
    ExitReason,
    Fill,
    Intent,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Purpose,
    Side,
)
from engine.execution.brokers.base import Broker, BrokerOrderState, BrokerUnavailable
from engine.execution.portfolio import Portfolio, TradeRecord, write_position, write_trade

log = logging.getLogger(__name__)

NEVER_REACHED_BROKER = "never reached the broker before the restart"
_FILL_TOLERANCE = 1e-9
_CLOSED_KEPT = 256

_FORWARD = {
    OrderStatus.NEW: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
}


class OmsError(RuntimeError):
    pass


class OmsListener(Protocol):
    """Told what the OMS wrote, once it is committed (the gate's daily facts follow it)."""

    def order_created(self, order: Order) -> None: ...

    def order_changed(self, order: Order) -> None: ...

    def filled(self, fill: Fill) -> None: ...

    def trade_closed(self, trade: TradeRecord) -> None: ...

    def reload(self, now: int) -> None:
        """A write failed and was rolled back: read everything again from the store."""


class OpenTransaction(OmsError):
    pass


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
    moment = datetime.fromtimestamp(now / 1000, UTC)
    return f"C{moment:%Y%m%d-%H%M%S}{now % 1000:03d}-{sequence:06d}-{suffix}"


def _check_intent(intent: Intent, ref_price: float) -> None:
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


@dataclass(frozen=True, slots=True)
class _Working:
    order: Order
    ref_price: float | None


_ORDER_COLUMNS = (
    "client_order_id, symbol, side, qty, type, purpose, status, limit_price, stop_price,"
    " stop_loss, take_profit, filled_qty, avg_price, broker_order_id, created_at, expires_at,"
    " reason, ref_price, parent_id, oco_group, exit_reason"
)
_OPEN_STATUSES = tuple(s.value for s in OrderStatus if s.is_open)


def _working_from_row(row: Iterable[Any]) -> _Working:
    r = tuple(row)
    order = Order(
        client_order_id=r[0],
        symbol=r[1],
        side=Side(r[2]),
        qty=r[3],
        order_type=OrderType(r[4]),
        purpose=Purpose(r[5]),
        status=OrderStatus(r[6]),
        limit_price=r[7],
        stop_price=r[8],
        stop_loss=r[9],
        take_profit=r[10],
        filled_qty=r[11] or 0.0,
        avg_price=r[12],
        broker_order_id=r[13],
        created_at=r[14] or 0,
        expires_at=r[15],
        reason=r[16] or "",
        parent_id=r[18],
        oco_group=r[19],
        exit_reason=ExitReason(r[20]) if r[20] else None,
    )
    return _Working(order, r[17])


def _default_exit_reason(intent: Intent) -> ExitReason | None:
    if intent.exit_reason is not None:
        return intent.exit_reason
    if intent.purpose is Purpose.EXIT:
        return ExitReason.SIGNAL
    if intent.purpose is Purpose.FLATTEN:
        return ExitReason.FLATTEN
    return None


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
    if stop is not None:
        orders.append(
            Order(
                client_order_id=f"{group}-S",
                symbol=symbol,
                side=closing,
                qty=qty,
                order_type=OrderType.STOP,
                purpose=Purpose.EXIT,
                stop_price=stop,
                created_at=now,
                reason=f"stop-loss at {stop:g}",
                parent_id=parent_id,
                oco_group=group,
                exit_reason=ExitReason.STOP,
            )
        )
    if target is not None:
        orders.append(
            Order(
                client_order_id=f"{group}-T",
                symbol=symbol,
                side=closing,
                qty=qty,
                order_type=OrderType.LIMIT,
                purpose=Purpose.EXIT,
                limit_price=target,
                created_at=now,
                reason=f"take-profit at {target:g}",
                parent_id=parent_id,
                oco_group=group,
                exit_reason=ExitReason.TARGET,
            )
        )
    return orders


def _decision_price(order: Order, fallback: float) -> float:
    """What a protective order was decided at: its own level."""
    if order.order_type is OrderType.STOP and order.stop_price is not None:
        return order.stop_price
    if order.order_type is OrderType.LIMIT and order.limit_price is not None:
        return order.limit_price
    return fallback


def _fill_detail(fill: Fill) -> str:
    return f"fill {fill.qty:g} @ {fill.price:g} ({fill.exec_id})"


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
        self._db = db
        self._broker = broker
        self._portfolio = portfolio
        self._clock = clock
        self._order_timeout_ms = order_timeout_ms
        self._day_end = day_end
        self._sequence = itertools.count(1)
        self._expiring: set[str] = set()
        self._open = self._load_open()
        # Recently finished orders, so a late report or `get` needs no SELECT.
        self._closed: dict[str, _Working] = {}
        # Writes of the current transaction, flushed once before it commits.
        self._events: list[tuple[str, int, str, str]] = []
        self._dirty: dict[str, tuple[Order, int]] = {}
        # What the listener is told once the current transaction has committed.
        self._listener: OmsListener | None = None
        self._notices: list[Callable[[], None]] = []

    def listen(self, listener: OmsListener) -> None:
        """Tell `listener` every order, change, fill and round trip once it is committed."""
        self._listener = listener

    # -- reading ---------------------------------------------------------------

    def open_orders(self) -> list[Order]:
        return sorted(
            (w.order for w in self._open.values()),
            key=lambda o: (o.created_at, o.client_order_id),
        )

    def get(self, client_order_id: str) -> Order | None:
        working = self._find(client_order_id)
        return working.order if working else None

    # -- submitting ------------------------------------------------------------

    def submit(self, intent: Intent, ref_price: float, signal_id: int | None = None) -> Order:
        """Persist the order as NEW (committed), then send it and apply the reports.

        `ref_price` is the price the decision was made at; fills are measured
        against it for slippage. Returns the order as it stands afterwards: still
        NEW when the broker was unavailable (see the module docstring). An entry
        with a stop or target goes out as a bracket; any other exit first cancels
        the resting protection of its symbol.
        """
        if self._db.conn.in_transaction:
            raise OpenTransaction(
                "Oms.submit needs the writer outside any transaction: the NEW order"
                " must be committed before the broker sees it"
            )
        _check_intent(intent, ref_price)
        if intent.purpose.reduces_exposure:
            self.cancel_protection(intent.symbol)
        now = self._clock()
        coid = new_client_order_id(now, next(self._sequence), secrets.token_hex(3))
        expires_at = None
        if intent.order_type is not OrderType.MARKET and self._order_timeout_ms is not None:
            expires_at = now + self._order_timeout_ms
        resting_entry = (
            intent.order_type is not OrderType.MARKET and intent.purpose is Purpose.ENTRY
        )
        if resting_entry and self._day_end is not None:
            day_end = self._day_end(now)
            expires_at = day_end if expires_at is None else min(expires_at, day_end)
        order = Order(
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
            exit_reason=_default_exit_reason(intent),
        )
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
        with self._transaction():
            self._insert_order(order, ref_price, now, json.dumps(intent.sizing, default=str))
            for child in children:
                self._insert_order(child, _decision_price(child, ref_price), now, "{}")
            if signal_id is not None:
                self._db.execute(
                    "UPDATE signals SET client_order_id = ? WHERE id = ?", (coid, signal_id)
                )
        self._open[coid] = _Working(order, ref_price)
        for child in children:
            self._open[child.client_order_id] = _Working(child, _decision_price(child, ref_price))
        if children:
            return self._send_bracket([order, *children], now)
        return self._send(coid, now)

    def _insert_order(self, order: Order, ref_price: float, now: int, sizing: str) -> None:
        self._db.execute(
            "INSERT INTO orders (client_order_id, symbol, side, qty, type, purpose, status,"
            " limit_price, stop_price, stop_loss, take_profit, filled_qty, ref_price, sizing,"
            " reason, created_at, updated_at, expires_at, parent_id, oco_group, exit_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0.0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order.client_order_id,
                order.symbol,
                order.side.value,
                order.qty,
                order.order_type.value,
                order.purpose.value,
                OrderStatus.NEW.value,
                order.limit_price,
                order.stop_price,
                order.stop_loss,
                order.take_profit,
                ref_price,
                sizing,
                order.reason,
                now,
                now,
                order.expires_at,
                order.parent_id,
                order.oco_group,
                order.exit_reason.value if order.exit_reason else None,
            ),
        )
        self._tell(lambda listener: listener.order_created(order))
        self._event(
            order.client_order_id,
            now,
            OrderStatus.NEW,
            f"{order.purpose} {order.reason}".strip(),
        )

    def _send_bracket(self, orders: list[Order], now: int) -> Order:
        parent = orders[0].client_order_id
        try:
            reports = self._broker.submit_bracket(orders, now)
        except BrokerUnavailable as exc:
            log.warning("bracket %s not sent, broker unavailable: %s", parent, exc)
            with self._transaction():
                for order in orders:
                    self._event(
                        order.client_order_id,
                        now,
                        OrderStatus.NEW,
                        f"not sent, broker unavailable: {exc}",
                    )
            return orders[0]
        self._apply_batch(reports)
        return self.get(parent) or orders[0]

    def protection(self, symbol: str) -> list[Order]:
        """The resting stop and target working for the symbol's position."""
        return [o for o in self.open_orders() if o.symbol == symbol and o.protective]

    def cancel_protection(self, symbol: str) -> int:
        """Cancel the symbol's resting stop and target; returns how many were canceled."""
        resting = self.protection(symbol)
        now = self._clock()
        for order in resting:
            self._cancel(order, now, "canceled before it reached the broker")
        return len(resting)

    def protect(self, position: Position) -> list[Order]:
        """Send a resting stop and target (OCO, no parent) for a held position at its
        stop and target levels, when none are working; returns what was sent."""
        if position.qty == 0 or (position.stop is None and position.target is None):
            return []
        if self.protection(position.symbol):
            return []
        now = self._clock()
        group = new_client_order_id(now, next(self._sequence), secrets.token_hex(3))
        closing = Side.SELL if position.qty > 0 else Side.BUY
        orders = protective_pair(
            position.symbol,
            closing,
            abs(position.qty),
            position.stop,
            position.target,
            group=group,
            parent_id=None,
            now=now,
        )
        with self._transaction():
            for order in orders:
                self._insert_order(order, _decision_price(order, position.avg_price), now, "{}")
        for order in orders:
            price = _decision_price(order, position.avg_price)
            self._open[order.client_order_id] = _Working(order, price)
        self._send_bracket(orders, now)
        return [o for o in (self.get(x.client_order_id) for x in orders) if o is not None]

    def modify_stop(self, client_order_id: str, stop: float, reason: ExitReason) -> Order | None:
        """Move a resting stop to `stop` (a trailing stop); its fill will be booked with
        `reason` and measured against the new level. BrokerUnavailable propagates."""
        working = self._open.get(client_order_id)
        if working is None or working.order.order_type is not OrderType.STOP:
            return self.get(client_order_id)
        if not (math.isfinite(stop) and stop > 0):
            raise ValueError(f"{client_order_id}: a stop must be positive, got {stop!r}")
        old = working.order
        moved = replace(old, stop_price=stop, exit_reason=reason)
        now = self._clock()
        reports = self._broker.modify(moved, now)
        with self._transaction():
            self._db.execute(
                "UPDATE orders SET stop_price = ?, exit_reason = ?, ref_price = ?,"
                " updated_at = ? WHERE client_order_id = ?",
                (stop, reason.value, stop, now, client_order_id),
            )
            self._event(
                client_order_id, now, old.status, f"stop moved {old.stop_price:g} -> {stop:g}"
            )
            self._open[client_order_id] = _Working(moved, stop)
            for report in reports:
                self._apply_one(report)
        return self.get(client_order_id)

    def _send(self, coid: str, now: int) -> Order:
        order = self._open[coid].order
        try:
            reports = self._broker.submit(order, now)
        except BrokerUnavailable as exc:
            log.warning("order %s not sent, broker unavailable: %s", coid, exc)
            with self._transaction():
                self._event(coid, now, OrderStatus.NEW, f"not sent, broker unavailable: {exc}")
            return order
        self._apply_batch(reports)
        return self.get(coid) or order

    def retry_unsent(self, max_age_ms: int) -> list[Order]:
        """Deal with orders left NEW by an unavailable broker; returns them as they stand.

        An order the broker did receive is adopted, an exit or flatten is resent,
        an entry older than `max_age_ms` is canceled. Stops at the first
        `BrokerUnavailable`: the rest wait for the next cycle.
        """
        now = self._clock()
        handled: list[str] = []
        for order in self.open_orders():
            if order.status is not OrderStatus.NEW:
                continue
            coid = order.client_order_id
            current = self._open.get(coid)
            if current is None or current.order.status is not OrderStatus.NEW:
                continue  # settled with its bracket earlier in this loop
            family = self._family(order)
            if order.parent_id is not None and order.parent_id in self._open:
                continue  # goes out with its entry
            handled += [o.client_order_id for o in family]
            try:
                state = self._broker.lookup(coid)
                if state is not None:
                    lost = []
                    for member in family:
                        found = self._broker.lookup(member.client_order_id)
                        if found is not None:
                            self._sync(member.client_order_id, found, now, "found on retry")
                        else:
                            lost.append(member.client_order_id)
                    if lost:
                        self._drop_half_sent(coid, lost, now)
                elif order.purpose is Purpose.ENTRY and now - order.created_at > max_age_ms:
                    for member in family:
                        self._finish_locally(
                            member.client_order_id,
                            OrderStatus.CANCELED,
                            now,
                            f"not sent within {max_age_ms} ms; the entry is stale",
                        )
                elif len(family) > 1:
                    if self._send_bracket(family, now).status is OrderStatus.NEW:
                        break
                elif self._send(coid, now).status is OrderStatus.NEW:
                    break
            except BrokerUnavailable as exc:
                log.warning("retry of unsent orders stopped, broker unavailable: %s", exc)
                break
        return [o for o in (self.get(c) for c in handled) if o is not None]

    def _drop_half_sent(self, coid: str, lost: list[str], now: int) -> None:
        """Part of a bracket reached the broker and part did not (the send timed out
        half way): an entry without its stop must not trade, so the lost orders are
        canceled here and the entry at the broker; a position it already opened is
        guarded by the cycle's fallback exit until the next restart protects it."""
        log.warning("bracket %s reached the broker without %s", coid, ", ".join(lost))
        for member in lost:
            self._finish_locally(member, OrderStatus.CANCELED, now, NEVER_REACHED_BROKER)
        order = self.get(coid)
        if order is not None and order.status.is_open and order.purpose is Purpose.ENTRY:
            self._apply_batch(self._broker.cancel(coid, now))

    def _family(self, order: Order) -> list[Order]:
        """The order and the unsent orders that go out with it: its bracket children,
        or the other side of a parentless protective pair."""
        if order.parent_id is not None:
            return [order]
        group = order.oco_group or order.client_order_id
        members = [
            o
            for o in self.open_orders()
            if o.status is OrderStatus.NEW
            and o.client_order_id != order.client_order_id
            and (o.parent_id == order.client_order_id or (o.oco_group == group))
        ]
        return [order, *members]

    # -- reports -----------------------------------------------------------------

    def apply(self, report: ExecutionReport) -> None:
        self._apply_batch([report])

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        """Pass the bar to the broker and apply what it reports (resting orders filling)."""
        reports = self._broker.on_bar(bar)
        self._apply_batch(reports)
        return reports

    def _apply_batch(self, reports: list[ExecutionReport]) -> None:
        if not reports:
            return
        with self._transaction():
            for report in reports:
                self._apply_one(report)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction; on failure memory is reloaded, so it never runs ahead of the db."""
        try:
            with self._db.atomic():
                yield
                self._flush()
        except Exception:
            log.exception("an OMS write failed and was rolled back; reloading from the database")
            self._events.clear()
            self._dirty.clear()
            self._closed.clear()
            self._notices.clear()
            self._open = self._load_open()
            self._portfolio.rebuild(self._db)
            if self._listener is not None:
                self._listener.reload(self._clock())
            raise
        notices, self._notices = self._notices, []
        for notice in notices:
            notice()

    def _tell(self, notice: Callable[[OmsListener], None]) -> None:
        if self._listener is not None:
            self._notices.append(functools.partial(notice, self._listener))

    def _apply_one(self, report: ExecutionReport) -> bool:
        """Apply one report inside the caller's transaction; True when it wrote an event."""
        coid = report.client_order_id
        working = self._find(coid)
        if working is None:
            log.error("report for unknown order %s ignored: %s", coid, report)
            return False
        order = working.order
        changed = evented = False
        if report.broker_order_id and report.broker_order_id != order.broker_order_id:
            order = replace(order, broker_order_id=report.broker_order_id)
            changed = True
        details = [report.detail] if report.detail else []
        fill = report.fill
        if fill is not None:
            if working.ref_price is not None:
                # Slippage is what the fill cost against the decision, not against
                # whatever bar the broker happened to fill it on.
                fill = replace(fill, ref_price=working.ref_price)
            if not self._insert_fill(fill):
                log.debug("repeated execution %s for %s ignored", fill.exec_id, coid)
                return False
            self._tell(lambda listener: listener.filled(fill))
            order = self._add_fill(order, fill)
            details.insert(0, _fill_detail(fill))
            changed = True
        status = report.status
        if coid in self._expiring and status is OrderStatus.CANCELED:
            status = OrderStatus.EXPIRED
            details.append(f"expired (working past {order.expires_at})")
        detail = "; ".join(details)
        if status is not order.status:
            if is_legal_transition(order.status, status):
                order = replace(order, status=status)
                self._event(coid, report.ts, status, detail)
                changed = evented = True
            else:
                log.warning("refused %s -> %s for %s (%s)", order.status, status, coid, detail)
                if fill is not None:
                    self._event(coid, report.ts, order.status, f"{detail}; kept {order.status}")
                    evented = True
        elif fill is not None:
            self._event(coid, report.ts, status, detail)
            evented = True
        if changed:
            self._tell(lambda listener: listener.order_changed(order))
            self._dirty[coid] = (order, report.ts)
            self._remember(working, order)
        return evented

    def _add_fill(self, order: Order, fill: Fill) -> Order:
        if fill.symbol != order.symbol or fill.side is not order.side:
            log.error("fill %s does not match order %s", fill, order.client_order_id)
        filled = order.filled_qty + fill.qty
        if filled > order.qty * (1 + _FILL_TOLERANCE):
            log.error("order %s overfilled: %g of %g", order.client_order_id, filled, order.qty)
        avg = ((order.avg_price or 0.0) * order.filled_qty + fill.price * fill.qty) / filled
        before = self._portfolio.position(fill.symbol)
        effect = self._portfolio.apply_fill(fill)
        position = effect.position
        if (
            order.purpose is Purpose.ENTRY
            and position is not None
            and position.qty * order.side.sign > 0
            and (order.stop_loss is not None or order.take_profit is not None)
        ):
            self._portfolio.set_protection(
                order.symbol,
                order.stop_loss if order.stop_loss is not None else position.stop,
                order.take_profit if order.take_profit is not None else position.target,
            )
        write_position(self._db, self._portfolio, fill.symbol, fill.ts)
        if effect.trade is not None:
            reason = order.exit_reason
            if reason is None and before is not None and before.qty * order.side.sign < 0:
                reason = ExitReason.SIGNAL  # a closing order from before reasons were kept
            write_trade(self._db, effect.trade, reason)
            trade = effect.trade
            self._tell(lambda listener: listener.trade_closed(trade))
        return replace(order, filled_qty=filled, avg_price=avg)

    # -- canceling and expiring ----------------------------------------------------

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel a working order; returns it as it stands (the broker may confirm later)."""
        working = self._open.get(client_order_id)
        if working is None:
            return self.get(client_order_id)
        self._cancel(working.order, self._clock(), "canceled before it reached the broker")
        return self.get(client_order_id)

    def cancel_all(self) -> int:
        """Cancel every open order; returns how many a cancel was issued for."""
        orders = self.open_orders()
        now = self._clock()
        for order in orders:
            self._cancel(order, now, "canceled before it reached the broker")
        return len(orders)

    def expire(self, now: int) -> list[Order]:
        """Cancel at the broker every working order past its expires_at, marked EXPIRED."""
        due = [o for o in self.open_orders() if o.expires_at is not None and o.expires_at <= now]
        for order in due:
            self._expiring.add(order.client_order_id)
            self._cancel(order, now, "expired before it reached the broker", OrderStatus.EXPIRED)
        return [o for o in (self.get(d.client_order_id) for d in due) if o is not None]

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
                self._finish_locally(coid, local_status, now, local_detail)
                return
            self._sync(coid, state, now, "found at the broker when canceling")
            if coid not in self._open:
                return
        self._apply_batch(self._broker.cancel(coid, now))

    def _finish_locally(self, coid: str, status: OrderStatus, now: int, detail: str) -> None:
        self._apply_batch([ExecutionReport(coid, status, now, detail=detail)])

    # -- reconciliation --------------------------------------------------------------

    def reconcile(self) -> list[Order]:
        """At start: bring every order still open in the database in line with the broker.

        Returns the reconciled orders as they stand. BrokerUnavailable propagates:
        the engine should not trade before it knows what the broker holds.
        """
        now = self._clock()
        self._open = self._load_open()
        self._closed.clear()
        coids = [o.client_order_id for o in self.open_orders()]
        for coid in coids:
            order = self._open[coid].order
            state = self._broker.lookup(coid)
            if state is not None:
                self._sync(coid, state, now, "reconciled")
            elif order.status is OrderStatus.NEW:
                self._finish_locally(coid, OrderStatus.CANCELED, now, NEVER_REACHED_BROKER)
            else:
                log.warning("order %s (%s) is unknown to the broker", coid, order.status)
                self._finish_locally(
                    coid,
                    OrderStatus.CANCELED,
                    now,
                    f"reconciled: unknown to the broker (was {order.status})",
                )
        return [o for o in (self.get(c) for c in coids) if o is not None]

    def _sync(self, coid: str, state: BrokerOrderState, now: int, why: str) -> None:
        """Adopt the broker's status and the executions the database lacks."""
        working = self._open[coid]
        if state.filled_qty - working.order.filled_qty > _FILL_TOLERANCE * max(
            working.order.qty, 1.0
        ):
            self._adopt_executions(coid, why)
            working = self._open.get(coid) or working
        order = working.order
        fill = None
        missing = state.filled_qty - order.filled_qty
        if missing > _FILL_TOLERANCE * max(order.qty, 1.0):
            price = self._missing_fill_price(working, state, missing)
            if price is not None:
                # The broker state has quantities, not executions: one fill stands for
                # what we missed, its commission unknown (0). Its id is derived from the
                # broker's filled quantity, so a second reconciliation cannot repeat it.
                fill = Fill(
                    coid,
                    f"{coid}:reconciled:{state.filled_qty:g}",
                    order.symbol,
                    order.side,
                    now,
                    missing,
                    price,
                    0.0,
                    working.ref_price,
                )
        report = ExecutionReport(
            coid,
            state.status,
            now,
            fill,
            state.broker_order_id,
            f"{why}: broker says {state.status}",
        )
        with self._transaction():
            if not self._apply_one(report):
                current = self._current_status(coid)
                agreement = "agrees" if current is state.status else "disagrees, kept " + current
                self._event(coid, now, current, f"{why}: broker {agreement} ({state.status})")

    def _adopt_executions(self, coid: str, why: str) -> None:
        """Each execution the broker has and the database lacks, as its own fill with
        the broker's exec id; one already booked is a repeat and changes nothing."""
        executions = self._broker.fills(coid)
        reports = [
            ExecutionReport(
                coid,
                OrderStatus.PARTIALLY_FILLED,
                fill.ts,
                fill,
                detail=f"{why}: missed execution {fill.exec_id}",
            )
            for fill in executions
        ]
        if reports:
            log.info("%s: adopting %d execution(s) from the broker", coid, len(reports))
            self._apply_batch(reports)

    def _missing_fill_price(
        self, working: _Working, state: BrokerOrderState, missing: float
    ) -> float | None:
        order = working.order
        if state.avg_price is None:
            log.error("broker reports %s filled without a price", order.client_order_id)
            return working.ref_price
        price = state.avg_price * state.filled_qty - (order.avg_price or 0.0) * order.filled_qty
        price /= missing
        return price if math.isfinite(price) and price > 0 else state.avg_price

    def _current_status(self, coid: str) -> OrderStatus:
        order = self.get(coid)
        return order.status if order else OrderStatus.NEW

    # -- storage -------------------------------------------------------------------

    def _find(self, coid: str) -> _Working | None:
        return self._open.get(coid) or self._closed.get(coid) or self._load(coid)

    def _remember(self, working: _Working, order: Order) -> None:
        coid = order.client_order_id
        if order.status.is_open:
            self._open[coid] = replace(working, order=order)
            return
        self._open.pop(coid, None)
        self._expiring.discard(coid)
        self._closed[coid] = replace(working, order=order)
        if len(self._closed) > _CLOSED_KEPT:
            del self._closed[next(iter(self._closed))]

    def _event(self, coid: str, ts: int, status: OrderStatus, detail: str) -> None:
        self._events.append((coid, ts, status.value, detail))

    def _flush(self) -> None:
        if self._events:
            self._db.conn.executemany(
                "INSERT INTO order_events (client_order_id, ts, status, detail)"
                " VALUES (?, ?, ?, ?)",
                self._events,
            )
            self._events.clear()
        if self._dirty:
            self._db.conn.executemany(
                "UPDATE orders SET status = ?, filled_qty = ?, avg_price = ?,"
                " broker_order_id = ?, updated_at = ? WHERE client_order_id = ?",
                [
                    (
                        o.status.value,
                        o.filled_qty,
                        o.avg_price,
                        o.broker_order_id,
                        now,
                        o.client_order_id,
                    )
                    for o, now in self._dirty.values()
                ],
            )
            self._dirty.clear()

    def _insert_fill(self, fill: Fill) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO fills (client_order_id, exec_id, ts, symbol, side, qty, price,"
            " commission, ref_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fill.client_order_id,
                fill.exec_id,
                fill.ts,
                fill.symbol,
                fill.side.value,
                fill.qty,
                fill.price,
                fill.commission,
                fill.ref_price,
            ),
        )
        return cursor.rowcount == 1

    def _load(self, coid: str) -> _Working | None:
        row = self._db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_order_id = ?", (coid,)
        ).fetchone()
        return _working_from_row(row) if row else None

    def _load_open(self) -> dict[str, _Working]:
        marks = ",".join("?" * len(_OPEN_STATUSES))
        rows = self._db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status IN ({marks}) ORDER BY id",
            _OPEN_STATUSES,
        ).fetchall()
        return {w.order.client_order_id: w for w in map(_working_from_row, rows)}
