"""The OMS's memory of its orders and the write-behind buffer in front of the store.

`OrderBook` holds every open order (and the last few finished ones, so a late
report or a `get` needs no SELECT), applies broker reports with the pure rules of
engine.execution.orders, books fills through the `Ledger`, and writes all of one
transaction's changes together just before it commits. When a transaction fails,
the memory (the book's, the portfolio's and the listener's) is read again from
the database, so it never runs ahead of what was committed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from engine.domain import ExecutionReport, Fill, Order, OrderStatus, TradeRecord
from engine.execution.ledger import Ledger
from engine.execution.orders import Working, fill_problem, settle
from store.orders import Event, OrderRepository

log = logging.getLogger(__name__)

_CLOSED_KEPT = 256


def _age(order: Order) -> tuple[int, str]:
    return (order.created_at, order.client_order_id)


class OmsListener(Protocol):
    """Told what the OMS wrote, once it is committed (the gate's daily facts follow it)."""

    def order_created(self, order: Order) -> None: ...

    def order_changed(self, order: Order) -> None: ...

    def filled(self, fill: Fill) -> None: ...

    def trade_closed(self, trade: TradeRecord) -> None: ...

    def reload(self, now: int) -> None:
        """A write failed and was rolled back: read everything again from the store."""


class OrderBook:
    """Open and recently finished orders, and the writes of the current transaction."""

    def __init__(self, repo: OrderRepository, ledger: Ledger, clock: Callable[[], int]) -> None:
        self.repo = repo
        self._ledger = ledger
        self._clock = clock
        self.expiring: set[str] = set()
        self.open: dict[str, Working] = self._load_open()
        self._sorted: list[Order] | None = None  # `open_orders()`, until `open` changes
        self._closed: dict[str, Working] = {}
        self._new: list[tuple[Any, ...]] = []
        self._events: list[Event] = []
        self._dirty: dict[str, tuple[Order, int]] = {}
        self._listener: OmsListener | None = None
        self._notices: list[Callable[[], None]] = []
        self._depth = 0  # transactions open: an inner one joins the outer
        self._rollback_hooks: list[Callable[[], None]] = []

    def listen(self, listener: OmsListener) -> None:
        self._listener = listener

    def on_rollback(self, hook: Callable[[], None]) -> None:
        """Also call `hook` when a transaction was rolled back (a broker whose own
        writes joined it reloads its memory)."""
        self._rollback_hooks.append(hook)

    # -- reading ---------------------------------------------------------------

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Oldest first; with `symbol`, only that symbol's. The list is sorted once per
        change of the open orders: the cycle, the monitor and the gate each ask for it,
        most often with nothing changed between."""
        if self._sorted is None:
            self._sorted = sorted((w.order for w in self.open.values()), key=_age)
        if symbol is None:
            return list(self._sorted)
        return [o for o in self._sorted if o.symbol == symbol]

    def find(self, coid: str) -> Working | None:
        found = self.open.get(coid) or self._closed.get(coid)
        if found is not None:
            return found
        row = self.repo.load(coid)
        return Working(*row) if row else None

    def get(self, coid: str) -> Order | None:
        working = self.find(coid)
        return working.order if working else None

    def status(self, coid: str) -> OrderStatus:
        order = self.get(coid)
        return order.status if order else OrderStatus.NEW

    # -- writing ---------------------------------------------------------------

    def add(
        self, order: Order, ref_price: float, now: int, sizing: str = "{}", *, at_once: bool = False
    ) -> None:
        """A NEW order, inside the caller's transaction; in memory once it commits.

        `at_once`: in memory, and told to the listener, now (a batch of orders
        gates each against those before it; see engine.execution.placing). Should
        the transaction fail, `reload` forgets it again, as it forgets everything."""
        self._new.append(self.repo.order_row(order, ref_price, now, sizing))
        detail = f"{order.purpose} {order.reason}".strip()
        self.event(order.client_order_id, now, OrderStatus.NEW, detail)
        if at_once:
            if self._listener is not None:
                self._listener.order_created(order)
            self._hold(Working(order, ref_price))
            return
        self.tell(lambda listener: listener.order_created(order))
        self._notices.append(lambda: self._hold(Working(order, ref_price)))

    def hold(self, working: Working) -> None:
        """Keep an order in memory as it stands (its row is already written)."""
        self._hold(working)

    def event(self, coid: str, ts: int, status: OrderStatus, detail: str) -> None:
        self._events.append((coid, ts, status.value, detail))

    def tell(self, notice: Callable[[OmsListener], None]) -> None:
        if self._listener is not None:
            self._notices.append(functools.partial(notice, self._listener))

    def apply_batch(self, reports: list[ExecutionReport]) -> None:
        if not reports:
            return
        with self.transaction():
            for report in reports:
                self.apply_one(report)

    def apply_one(self, report: ExecutionReport) -> bool:
        """Apply one report inside the caller's transaction; True when it wrote an event."""
        coid = report.client_order_id
        working = self.find(coid)
        if working is None:
            log.error("report for unknown order %s ignored: %s", coid, report)
            return False
        fill = report.fill
        if fill is not None:
            fill = self._book_fill(working, fill)
            if fill is None:
                return False
        step = settle(working.order, report, fill, expiring=coid in self.expiring)
        if step.refused:
            log.warning(step.refused)
        for status, detail in step.events:
            self.event(coid, report.ts, status, detail)
        if step.changed:
            order = step.order
            self.tell(lambda listener: listener.order_changed(order))
            self._dirty[coid] = (order, report.ts)
            self._hold(Working(order, working.ref_price))
        return bool(step.events)

    def _book_fill(self, working: Working, fill: Fill) -> Fill | None:
        """Book a new execution (None for a repeated one): the fill row, the
        portfolio, the position and any round trip it closed."""
        if working.ref_price is not None:
            # Slippage is what the fill cost against the decision, not against
            # whatever bar the broker happened to fill it on.
            f = fill
            fill = Fill(
                f.client_order_id,
                f.exec_id,
                f.symbol,
                f.side,
                f.ts,
                f.qty,
                f.price,
                f.commission,
                working.ref_price,
            )
        if not self.repo.insert_fill_once(fill):
            log.debug("repeated execution %s for %s ignored", fill.exec_id, fill.client_order_id)
            return None
        booked = fill
        self.tell(lambda listener: listener.filled(booked))
        problem = fill_problem(working.order, fill)
        if problem:
            log.error(problem)
        trade = self._ledger.book(working.order, fill)
        if trade is not None:
            self.tell(lambda listener: listener.trade_closed(trade))
        return fill

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; on failure memory is reloaded, so it never runs ahead of the
        db. Inside another of the book's, it joins that one: one commit, and the
        listener is told once it is done."""
        if self._depth:
            yield
            return
        self._depth = 1
        try:
            with self.repo.transaction():
                yield
                self._flush()
        except Exception:
            log.exception("an OMS write failed and was rolled back; reloading from the database")
            self.reload()
            raise
        finally:
            self._depth = 0
        notices, self._notices = self._notices, []
        for notice in notices:
            notice()

    def reload(self) -> None:
        self._new.clear()
        self._events.clear()
        self._dirty.clear()
        self._closed.clear()
        self._notices.clear()
        self.open = self._load_open()
        self._sorted = None
        self._ledger.reload()
        for hook in self._rollback_hooks:
            hook()
        if self._listener is not None:
            self._listener.reload(self._clock())

    def forget_closed(self) -> None:
        """Read every open order again (reconciliation at start)."""
        self.open = self._load_open()
        self._sorted = None
        self._closed.clear()

    # -- memory ----------------------------------------------------------------

    def _hold(self, working: Working) -> None:
        order = working.order
        coid = order.client_order_id
        self._sorted = None
        if order.status.is_open:
            self.open[coid] = working
            return
        self.open.pop(coid, None)
        self.expiring.discard(coid)
        self._closed[coid] = working
        if len(self._closed) > _CLOSED_KEPT:
            del self._closed[next(iter(self._closed))]

    def _flush(self) -> None:
        if self._new:
            self.repo.insert_orders(self._new)
            self._new.clear()
        if self._events:
            self.repo.insert_events(self._events)
            self._events.clear()
        if self._dirty:
            self.repo.update_orders(self._dirty.values())
            self._dirty.clear()

    def _load_open(self) -> dict[str, Working]:
        return {o.client_order_id: Working(o, ref) for o, ref in self.repo.load_open()}
