"""The paper broker: a simulated account and exchange behind the Broker protocol.

It learns prices only from `on_bar`, decides fills with the pure rules in
`engine.execution.brokers.fills`, and keeps its own account (cash, signed
positions), its orders and its executions in its own tables (migration set
"paper_broker" in `store.schema`) on the engine's writer connection. A new
PaperBroker on the same file continues exactly where the previous one stopped:
working orders keep working, cash and positions are kept, exec ids are never reused.

Three parts: `PaperBroker` (the protocol), `PaperExchange` (what is accepted and
what fills) and `PaperBook` (engine.execution.brokers.paper_book: the account and
orders in memory and their rows). Each public call writes its rows together at
its end, in one transaction: its own when the connection is idle, a savepoint
inside the caller's when the caller has one open (the OMS's, so the broker's rows
commit with the reports they produced), or no savepoint there when the call
changed a single row, which one statement writes atomically. When a write fails,
the in-memory state is reloaded from the database so the two never disagree;
`reload` does the same when the caller rolls back.

Brackets: an entry may carry a resting stop and target (`submit_bracket`). They
name the entry as parent and work only from the bar after it first filled; they
close at most the position there is to close (reduce-only), so the two sides of
an OCO pair can never together close more than is held, and once nothing is left
to close (one side filled, or the position was closed otherwise) the rest of the
pair is canceled. A parent that ends without any fill takes its children with it.
When one bar reaches both the stop and the target, the stop is taken first: which
traded first is unknowable from the bar, and the backtest must not be flattered.

Buying power, checked at submission (exits are never blocked):
- the part of a buy that increases a long must be paid from cash:
  qty x estimated price + commission <= cash;
- the part of a sell that opens or increases a short needs margin, Reg T style:
  equity >= 50% of the account's total short notional after the order.
Working orders do not reserve buying power; a fill that costs more than the
estimate (a gap) may leave cash slightly negative, as a margin account would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlite_utils import Database

from engine.config import PaperSettings
from engine.domain import (
    Bar,
    ExecutionReport,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Side,
)
from engine.execution.brokers.base import (
    BrokerAccount,
    BrokerOpenOrder,
    BrokerOrderState,
    BrokerUnavailable,
)
from engine.execution.brokers.fills import (
    commission,
    fill_at_market,
    match_bar,
    slipped,
    worse,
)
from engine.execution.brokers.paper_book import PaperBook, Working

logger = logging.getLogger(__name__)

SHORT_MARGIN = 0.5  # equity needed per unit of short notional
NOT_WORKING = "unknown or not working"


def _is_whole_positive(qty: float) -> bool:
    return isinstance(qty, int | float) and math.isfinite(qty) and qty > 0 and qty == int(qty)


def _valid_price(price: float | None) -> bool:
    return price is not None and math.isfinite(price) and price > 0


def estimated_price(order: Order, bar: Bar, settings: PaperSettings) -> float:
    """A cautious per-share price for the buying power check."""
    if order.order_type is OrderType.MARKET:
        return slipped(bar.close, order.side, bar, settings)
    if order.order_type is OrderType.STOP:
        return slipped(
            worse(order.side, bar.close, order.stop_price or bar.close), order.side, bar, settings
        )
    if order.side is Side.BUY:
        return order.limit_price or bar.close  # a buy limit never pays more
    return max(bar.close, order.limit_price or bar.close)  # short notional at its largest


def order_problem(order: Order) -> str | None:
    """Why an order is malformed (qty, side, type, prices); None when it is well formed.
    Fractional shares are not supported: a qty must be a whole number."""
    if not _is_whole_positive(order.qty):
        return f"qty must be a positive whole number of shares, got {order.qty!r}"
    # An enum member is valid as it is; only something else (a plain string from a
    # caller that skipped the domain types) needs the enum's lookup, which is slow.
    if not isinstance(order.side, Side):
        try:
            Side(order.side)
        except ValueError:
            return f"unknown side {order.side!r}"
    kind = order.order_type
    if not isinstance(kind, OrderType):
        try:
            kind = OrderType(kind)
        except ValueError:
            allowed = ", ".join(t.value for t in OrderType)
            return f"unknown order type {order.order_type!r}; allowed: {allowed}"
    if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) and not _valid_price(order.limit_price):
        return f"a {kind.value} order needs a positive limit price, got {order.limit_price!r}"
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and not _valid_price(order.stop_price):
        return f"a {kind.value} order needs a positive stop price, got {order.stop_price!r}"
    return None


def buying_power_problem(
    order: Order,
    *,
    cash: float,
    positions: Mapping[str, float],
    marks: Mapping[str, float],
    price: float,
    settings: PaperSettings,
) -> str | None:
    """The buying power rule of the module docstring; None when the order passes."""
    held = positions.get(order.symbol, 0.0)
    if order.side is Side.BUY:
        increase = order.qty - max(0.0, -held)
        if increase <= 0:
            return None
        cost = increase * price + commission(order.qty, settings, price)
        if cost > cash:
            return (
                f"insufficient buying power: buying {increase:g} {order.symbol} needs"
                f" {cost:.2f}, cash is {cash:.2f}"
            )
        return None
    increase = order.qty - max(0.0, held)
    if increase <= 0:
        return None
    equity = cash + sum(q * marks.get(s, 0.0) for s, q in positions.items())
    other_shorts = sum(
        -q * marks.get(s, 0.0) for s, q in positions.items() if q < 0 and s != order.symbol
    )
    short_after = (max(0.0, -held) + increase) * price
    needed = SHORT_MARGIN * (other_shorts + short_after)
    if equity < needed:
        return (
            f"insufficient margin: shorting {increase:g} {order.symbol} needs equity of"
            f" {needed:.2f} ({SHORT_MARGIN:.0%} of short notional), equity is {equity:.2f}"
        )
    return None


class PaperExchange:
    """What the simulated exchange decides: acceptance (well formed, market data, an
    accepted entry, buying power), fills (engine.execution.brokers.fills) and the
    protective orders' one-cancels-other. Writes through the book, inside the
    caller's `PaperBook.write`."""

    def __init__(self, book: PaperBook, settings: PaperSettings) -> None:
        self._book = book
        self._settings = settings

    def accept(self, order: Order, now: int) -> list[ExecutionReport]:
        book = self._book
        coid = order.client_order_id
        broker_id = book.next_broker_id()
        last_bar = book.bars.get(order.symbol)
        problem = self._problem(order, last_bar)
        status = OrderStatus.ACCEPTED if problem is None else OrderStatus.REJECTED
        order = order.with_state(status, 0.0, None, broker_id)
        book.save_account(now)
        if problem is not None or last_bar is None:
            logger.info("paper broker rejects %s: %s", coid, problem)
            book.insert_order(Working(order, False, None), now, problem or "")
            book.remember_done(order)
            detail = problem or ""
            return [ExecutionReport(coid, OrderStatus.REJECTED, now, None, broker_id, detail)]
        working = Working(order, False, last_bar.ts)
        reports = [
            ExecutionReport(coid, OrderStatus.SUBMITTED, now, None, broker_id),
            ExecutionReport(coid, OrderStatus.ACCEPTED, now, None, broker_id),
        ]
        decision = None
        if order.order_type is OrderType.MARKET:
            decision = fill_at_market(working.order, last_bar, self._settings)
        if decision is not None:
            working, report = book.fill(working, decision, now)
            reports.append(report)
        book.insert_order(working, now, "")
        if working.order.status.is_open:
            book.hold(working)
        else:
            book.remember_done(working.order)
        return reports

    def _problem(self, order: Order, last_bar: Bar | None) -> str | None:
        """Why the order is rejected; None when it is accepted."""
        problem = order_problem(order)
        if problem is None and last_bar is None:
            problem = f"no market data for {order.symbol}"
        if problem is None and order.parent_id is not None:
            parent = self._book.lookup(order.parent_id)
            if parent is None or parent.status is OrderStatus.REJECTED:
                problem = f"its entry {order.parent_id} was not accepted"
        if problem is None and last_bar is not None and not order.protective:
            # A stop or target only ever closes what is held (reduce-only), so it needs
            # no buying power of its own.
            if not (isinstance(order.side, Side) and isinstance(order.order_type, OrderType)):
                order = replace(
                    order, side=Side(order.side), order_type=OrderType(order.order_type)
                )
            book = self._book
            # Marks price the account's shorts, which only a sell is checked against.
            marks = {s: b.close for s, b in book.bars.items()} if order.side is Side.SELL else {}
            problem = buying_power_problem(
                order,
                cash=book.cash,
                positions=book.positions,
                marks=marks,
                price=estimated_price(order, last_bar, self._settings),
                settings=self._settings,
            )
        return problem

    def accept_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        for order in orders:
            reports += self.accept(order, now)
        for symbol in sorted({o.symbol for o in orders}):
            reports += self.settle_protection(symbol, now)
        return reports

    def _parent_filled(self, order: Order) -> float | None:
        """How much of the order's entry has filled; None when it has no parent."""
        if order.parent_id is None:
            return None
        parent = self._book.lookup(order.parent_id)
        return parent.filled_qty if parent is not None else 0.0

    def _closable(self, order: Order) -> float:
        """What a protective order may still fill: what is held on the other side."""
        held = self._book.positions.get(order.symbol, 0.0)
        closable = max(0.0, -order.side.sign * held)
        return min(order.remaining, closable)

    def settle_protection(self, symbol: str, now: int) -> list[ExecutionReport]:
        """Cancel protective orders with nothing left to do: their entry ended without
        a fill, or the position they guard is gone (one side of the pair filled, or
        it was closed some other way)."""
        book = self._book
        reports = []
        for working in list(book.working.get(symbol, {}).values()):
            order = working.order
            if not order.protective:
                continue
            parent_filled = self._parent_filled(order)
            if parent_filled == 0.0:
                parent = book.lookup(order.parent_id or "")
                if parent is None or not parent.status.is_open:
                    detail = "canceled: its entry ended without a fill"
                    reports.append(book.finish(working, OrderStatus.CANCELED, now, detail))
                continue  # still waiting for its entry
            if self._closable(order) <= 0:
                detail = "canceled: no position left to close (OCO)"
                reports.append(book.finish(working, OrderStatus.CANCELED, now, detail))
        return reports

    def _armed(self, working: Working) -> bool:
        """A protective order whose entry filled before this bar (or that has none)."""
        filled = self._parent_filled(working.order)
        return filled is None or filled > 0

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        book = self._book
        book.save_bar(bar)
        reports: list[ExecutionReport] = []
        queue = list(book.working.get(bar.symbol, {}).values())
        # Decided before anything fills on this bar: protection whose entry fills on
        # this bar starts working on the next one (the order inside a bar is unknown).
        armed = {w.order.client_order_id for w in queue if self._armed(w)}
        # Stops before targets: when one bar reaches both, assume the stop traded first.
        queue.sort(key=lambda w: 0 if w.order.order_type is not OrderType.LIMIT else 1)
        for queued in queue:
            if queued.after_ts is not None and bar.ts <= queued.after_ts:
                continue
            working = book.find_working(queued.order.client_order_id)
            if working is None:
                continue  # canceled with its pair earlier on this bar
            report = self._match(working, bar, armed)
            if report is not None:
                reports.append(report)
        reports += self.settle_protection(bar.symbol, bar.ts)
        return reports

    def _match(self, working: Working, bar: Bar, armed: set[str]) -> ExecutionReport | None:
        """One working order against the bar: expired, filled, triggered or nothing."""
        book = self._book
        order = working.order
        if order.expires_at is not None and bar.ts >= order.expires_at:
            return book.finish(working, OrderStatus.EXPIRED, bar.ts, "expired")
        if order.protective:
            closable = self._closable(order)
            if order.client_order_id not in armed or closable <= 0:
                return None
            # Match as if only what is held were left to fill.
            order = replace(order, qty=order.filled_qty + closable)
        match = match_bar(order, bar, self._settings, triggered=working.triggered)
        if match.fill is None:
            if match.triggered != working.triggered:
                book.hold(replace(working, triggered=True))
                book.update_order(replace(working, triggered=True), bar.ts)
            return None
        updated, report = book.fill(replace(working, triggered=match.triggered), match.fill, bar.ts)
        book.update_order(updated, bar.ts)
        if updated.order.status.is_open:
            book.hold(updated)
        else:
            book.remove_working(updated)
        book.save_account(bar.ts)
        return report


class PaperBroker:
    """The Broker protocol over the paper book and exchange."""

    name = "paper"

    def __init__(self, db: Database, settings: PaperSettings, starting_cash: float) -> None:
        self._connected = True
        self._book = PaperBook(db, starting_cash)
        self._exchange = PaperExchange(self._book, settings)

    @property
    def connected(self) -> bool:
        return self._connected

    def set_connected(self, connected: bool) -> None:
        """Simulate losing (and regaining) the connection."""
        self._connected = connected

    def _check_connected(self) -> None:
        if not self._connected:
            raise BrokerUnavailable("paper broker is disconnected")

    def submit(self, order: Order, now: int) -> list[ExecutionReport]:
        self._check_connected()
        known = self._book.lookup(order.client_order_id)
        if known is not None:
            # Resubmission after a crash must not create a second order.
            return [_duplicate(known, now)]
        exchange = self._exchange
        return self._book.write(
            lambda: exchange.accept(order, now) + exchange.settle_protection(order.symbol, now)
        )

    def submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        self._check_connected()
        known = self._book.lookup_many([o.client_order_id for o in orders])
        if any(k is not None for k in known):
            return [_duplicate(k, now) for k in known if k is not None]
        return self._book.write(lambda: self._exchange.accept_bracket(orders, now))

    def modify(self, order: Order, now: int) -> list[ExecutionReport]:
        self._check_connected()
        working = self._book.find_working(order.client_order_id)
        if working is None:
            return [self._not_working(order.client_order_id, now)]
        moved = replace(working.order, stop_price=order.stop_price, limit_price=order.limit_price)
        problem = order_problem(moved)
        if problem is not None:
            raise ValueError(f"cannot modify {order.client_order_id}: {problem}")

        def work() -> list[ExecutionReport]:
            self._book.move_prices(replace(working, order=moved), now)
            return []

        return self._book.write(work)

    def cancel(self, client_order_id: str, now: int) -> list[ExecutionReport]:
        self._check_connected()
        working = self._book.find_working(client_order_id)
        if working is None:
            return [self._not_working(client_order_id, now)]

        def work() -> list[ExecutionReport]:
            reports = [self._book.finish(working, OrderStatus.CANCELED, now, "canceled")]
            return reports + self._exchange.settle_protection(working.order.symbol, now)

        return self._book.write(work)

    def _not_working(self, client_order_id: str, now: int) -> ExecutionReport:
        known = self._book.lookup(client_order_id)
        status = known.status if known else OrderStatus.REJECTED
        broker_id = known.broker_order_id if known else None
        return ExecutionReport(client_order_id, status, now, None, broker_id, NOT_WORKING)

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        last = self._book.bars.get(bar.symbol)
        if last is not None and bar.ts <= last.ts:
            logger.warning(
                "paper broker ignores %s bar at %d: not after the last one at %d",
                bar.symbol,
                bar.ts,
                last.ts,
            )
            return []
        book = self._book
        if not book.working.get(bar.symbol) and book.in_transaction:
            # Nothing rests on the symbol: the bar is this call's one write, a single
            # statement in the caller's transaction (the cycle's: most symbols, most
            # bars), atomic without a savepoint and written at once, without the
            # bookkeeping of `PaperBook.write` (a backtest does this per symbol per bar).
            book.write_bar(bar)
            return []
        return book.write(lambda: self._exchange.on_bar(bar))

    def lookup(self, client_order_id: str) -> BrokerOrderState | None:
        return self._book.lookup(client_order_id)

    def reload(self) -> None:
        """Read the broker's state again: a transaction its writes joined was rolled back."""
        self._book.load()

    def fills(self, client_order_id: str) -> list[Fill]:
        return self._book.executions(client_order_id)

    def open_orders(self) -> list[BrokerOpenOrder]:
        return [
            BrokerOpenOrder(
                o.client_order_id,
                o.broker_order_id or "",
                o.symbol,
                o.side,
                o.qty,
                o.filled_qty,
                o.order_type.value,
            )
            for o in self.working_orders()
        ]

    def executions_since(self, since: int | None) -> list[Fill]:
        return self._book.executions_since(since)

    def cancel_foreign(self, broker_order_id: str, now: int) -> bool:
        self._check_connected()
        book = self._book
        found = next(
            (
                w
                for orders in book.working.values()
                for w in orders.values()
                if w.order.broker_order_id == broker_order_id
            ),
            None,
        )
        if found is None:
            return False
        book.write(lambda: [book.finish(found, OrderStatus.CANCELED, now, "canceled")])
        return True

    def account(self) -> BrokerAccount:
        book = self._book
        return BrokerAccount(book.cash, {s: q for s, q in book.positions.items() if q != 0})

    def close(self) -> None:
        """Nothing to release: every call has already written its state."""

    # ---- extras for the engine and tests ------------------------------------------

    def transfer(self, amount: float, now: int) -> None:
        """A deposit (> 0) or withdrawal (< 0) of cash, in the caller's transaction."""
        if not math.isfinite(amount):
            raise ValueError(f"a transfer must be a finite amount, got {amount!r}")
        book = self._book

        def work() -> list[ExecutionReport]:
            book.cash += amount
            book.save_account(now)
            return []

        book.write(work)

    def last_bar(self, symbol: str) -> Bar | None:
        return self._book.bars.get(symbol)

    def working_orders(self) -> list[Order]:
        return [w.order for orders in self._book.working.values() for w in orders.values()]


def _duplicate(known: BrokerOrderState, now: int) -> ExecutionReport:
    return ExecutionReport(
        known.client_order_id,
        known.status,
        now,
        broker_order_id=known.broker_order_id,
        detail="duplicate submit ignored: the broker already has this order",
    )
