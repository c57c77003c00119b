"""The paper broker's book: its account, positions, last bars and orders in memory,
and the rows that keep them (store.paper). Each public call of the broker writes
through `PaperBook.write`: memory changes as the call goes, its rows are kept
(`store.paper.Writes`) and written together at its end, in one transaction of its
own or a savepoint inside the caller's. When a write fails, memory is read again
from the database, so the two never disagree. Nothing here decides whether an
order fills: that is the exchange's (engine.execution.brokers.paper).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from engine.domain import (
    Bar,
    ExecutionReport,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Purpose,
    Side,
)
from engine.execution.account import starting_cash_changed
from engine.execution.brokers.base import BrokerOrderState
from engine.execution.brokers.fills import FillDecision
from store import paper as rows

logger = logging.getLogger("engine.execution.brokers.paper")

_DONE_KEPT = 256  # finished orders remembered, so a lookup of one needs no SELECT


@dataclass(frozen=True, slots=True)
class Working:
    order: Order  # status, filled_qty, avg_price and broker_order_id kept current
    triggered: bool
    after_ts: int | None


class PaperBook:
    """The paper account and its orders; single-threaded, like the engine's writer."""

    def __init__(self, db: Database, starting_cash: float) -> None:
        self._db = db
        self._starting_cash = starting_cash
        self._account_saved_at: int | None = None
        self._writes = rows.Writes()
        self._writing = False
        self.load()

    def load(self) -> None:
        """Read everything from the database (at start, and after a failed write)."""
        conn = self._db.conn
        row = rows.account(conn)
        if row is None:
            with self._db.atomic():
                rows.open_account(conn, self._starting_cash)
            row = (self._starting_cash, 0, 0, self._starting_cash)
        elif not math.isclose(row[3], self._starting_cash, rel_tol=0, abs_tol=1e-6):
            raise starting_cash_changed(
                self._starting_cash, float(row[3]), "the paper account in this database"
            )
        self.cash = float(row[0])
        self.order_seq = int(row[1])
        self.exec_seq = int(row[2])
        self.positions: dict[str, float] = rows.positions(conn)
        self.bars: dict[str, Bar] = {
            r[0]: Bar(r[0], int(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows.bars(conn)
        }
        self._done: dict[str, BrokerOrderState] = {}
        self._account_saved_at = None
        self._writes.clear()
        self.working: dict[str, dict[str, Working]] = {}
        # Which symbol each order works on, so finding one by its id does not walk
        # every symbol (a hundred of them, several times an order). An entry may
        # outlive its order; `working` is what says whether it still works.
        self._symbol_of: dict[str, str] = {}
        for working in _rows_to_working(rows.working_orders(conn)):
            self.hold(working)

    def write(self, work: Callable[[], list[ExecutionReport]]) -> list[ExecutionReport]:
        """Run `work`, then write the rows it changed, atomically. What `work` reads
        from the database is as the write found it: memory is the truth during the
        write (every order it touches stays in memory until it ends), and only this
        connection writes the broker's tables."""
        self._writing = True
        try:
            reports = work()
            self._flush_account()
            self._writes.flush(self._db.conn, "paper")
            return reports
        except Exception:
            logger.exception("paper broker write failed; reloading its state from the database")
            self.load()
            raise
        finally:
            self._writing = False
            done = self._done
            while len(done) > _DONE_KEPT:
                del done[next(iter(done))]

    # -- orders ----------------------------------------------------------------------

    def find_working(self, client_order_id: str) -> Working | None:
        symbol = self._symbol_of.get(client_order_id)
        if symbol is None:
            return None
        return self.working.get(symbol, {}).get(client_order_id)

    def hold(self, working: Working) -> None:
        """Keep an order working (new, or as it stands now)."""
        order = working.order
        self.working.setdefault(order.symbol, {})[order.client_order_id] = working
        self._symbol_of[order.client_order_id] = order.symbol

    def remove_working(self, working: Working) -> None:
        coid = working.order.client_order_id
        self.working.get(working.order.symbol, {}).pop(coid, None)
        self._symbol_of.pop(coid, None)
        self.remember_done(working.order)

    def remember_done(self, order: Order) -> None:
        done = self._done
        done[order.client_order_id] = state(order)
        # Kept whole until a write ends: its rows are not written yet, so a lookup
        # must not fall through to the database for an order it finished.
        if len(done) > _DONE_KEPT and not self._writing:
            del done[next(iter(done))]

    def lookup(self, client_order_id: str) -> BrokerOrderState | None:
        working = self.find_working(client_order_id)
        if working is not None:
            return state(working.order)
        done = self._done.get(client_order_id)
        if done is not None:
            return done
        row = rows.order_state(self._db.conn, client_order_id)
        if row is None:
            return None
        return BrokerOrderState(client_order_id, row[0], OrderStatus(row[1]), row[2], row[3])

    def lookup_many(self, coids: list[str]) -> list[BrokerOrderState | None]:
        """`lookup` of each, with one SELECT for those not in memory."""
        found: dict[str, BrokerOrderState | None] = {}
        for coid in coids:
            working = self.find_working(coid)
            if working is not None:
                found[coid] = state(working.order)
            elif coid in self._done:
                found[coid] = self._done[coid]
        unknown = [c for c in coids if c not in found]
        for coid, row in rows.order_states(self._db.conn, unknown).items():
            found[coid] = BrokerOrderState(coid, row[0], OrderStatus(row[1]), row[2], row[3])
        return [found.get(c) for c in coids]

    def executions_since(self, since: int | None) -> list[Fill]:
        return rows.executions_since(self._db.conn, since)

    def executions(self, client_order_id: str) -> list[Fill]:
        return rows.executions(self._db.conn, client_order_id)

    def next_broker_id(self) -> str:
        self.order_seq += 1
        return f"paper-{self.order_seq}"

    def insert_order(self, working: Working, now: int, detail: str) -> None:
        self._writes.insert_order(_order_row(working, now, detail))

    def update_order(self, working: Working, now: int, detail: str = "") -> None:
        o = working.order
        self._writes.update_order(
            (
                o.status.value,
                o.filled_qty,
                o.avg_price,
                int(working.triggered),
                now,
                detail,
                o.client_order_id,
            ),
        )

    def move_prices(self, working: Working, now: int) -> None:
        o = working.order
        self.hold(working)
        self._writes.move_prices(o.client_order_id, o.stop_price, o.limit_price, now)

    def finish(
        self, working: Working, status: OrderStatus, ts: int, detail: str
    ) -> ExecutionReport:
        o = working.order
        done = Working(
            o.with_state(status, o.filled_qty, o.avg_price, o.broker_order_id),
            working.triggered,
            working.after_ts,
        )
        self.update_order(done, ts, detail)
        self.remove_working(done)
        return ExecutionReport(
            done.order.client_order_id, status, ts, None, done.order.broker_order_id, detail
        )

    # -- money -----------------------------------------------------------------------

    def fill(
        self, working: Working, decision: FillDecision, ts: int
    ) -> tuple[Working, ExecutionReport]:
        """Book an execution: cash, position, the order's fill state and the rows."""
        order = working.order
        sign = order.side.sign
        self.exec_seq += 1
        exec_id = f"paper-x{self.exec_seq}"
        self.cash += -(sign * decision.qty * decision.price) - decision.commission
        position = self.positions.get(order.symbol, 0.0) + sign * decision.qty
        self.positions[order.symbol] = position
        filled = order.filled_qty + decision.qty
        avg = ((order.avg_price or 0.0) * order.filled_qty + decision.price * decision.qty) / filled
        status = OrderStatus.FILLED if filled >= order.qty else OrderStatus.PARTIALLY_FILLED
        order = order.with_state(status, filled, avg, order.broker_order_id)
        fill = Fill(
            order.client_order_id,
            exec_id,
            order.symbol,
            order.side,
            ts,
            decision.qty,
            decision.price,
            decision.commission,
            decision.ref_price,
        )
        writes = self._writes
        writes.executions.append(
            (
                exec_id,
                order.client_order_id,
                order.broker_order_id,
                order.symbol,
                order.side.value,
                ts,
                decision.qty,
                decision.price,
                decision.commission,
                decision.ref_price,
            ),
        )
        writes.positions[order.symbol] = (order.symbol, position, ts)
        logger.debug(
            "paper fill %s %s %g %s @ %.4f",
            exec_id,
            order.side,
            decision.qty,
            order.symbol,
            decision.price,
        )
        report = ExecutionReport(order.client_order_id, status, ts, fill, order.broker_order_id)
        return Working(order, working.triggered, working.after_ts), report

    @property
    def in_transaction(self) -> bool:
        return self._db.conn.in_transaction

    def save_bar(self, bar: Bar) -> None:
        """Inside a write: the row is kept with the write's others."""
        row = (bar.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        self._writes.bars[bar.symbol] = row
        self.bars[bar.symbol] = bar

    def write_bar(self, bar: Bar) -> None:
        """Outside a write: stored at once, then remembered, so a failed statement
        leaves memory as the database has it."""
        row = (bar.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        rows.save_bar(self._db.conn, row)
        self.bars[bar.symbol] = bar

    def save_account(self, now: int) -> None:
        """Saved once, at the end of the write's transaction."""
        self._account_saved_at = now

    def _flush_account(self) -> None:
        now = self._account_saved_at
        if now is not None:
            self._account_saved_at = None
            self._writes.account = (self.cash, self.order_seq, self.exec_seq, now)


def _order_row(working: Working, now: int, detail: str) -> tuple[Any, ...]:
    """A new order's `paper_orders` row (store.paper.INSERT_ORDER)."""
    o = working.order
    return (
        o.client_order_id,
        o.broker_order_id,
        o.symbol,
        str(o.side),
        o.qty if isinstance(o.qty, int | float) else None,
        str(o.order_type),
        str(o.purpose),
        o.limit_price,
        o.stop_price,
        o.status.value,
        o.filled_qty,
        o.avg_price,
        int(working.triggered),
        working.after_ts,
        o.expires_at,
        now,
        now,
        detail,
        o.parent_id,
        o.oco_group,
    )


def _rows_to_working(records: Iterable[tuple[Any, ...]]) -> Iterable[Working]:
    for r in records:
        order = Order(
            client_order_id=str(r[0]),
            broker_order_id=str(r[1]),
            symbol=str(r[2]),
            side=Side(r[3]),
            qty=float(r[4]),
            order_type=OrderType(r[5]),
            purpose=Purpose(r[6]),
            limit_price=r[7],
            stop_price=r[8],
            status=OrderStatus(r[9]),
            filled_qty=float(r[10]),
            avg_price=r[11],
            expires_at=r[14],
            created_at=int(r[15]),
            parent_id=r[16],
            oco_group=r[17],
        )
        yield Working(order, bool(r[12]), r[13])


def state(order: Order) -> BrokerOrderState:
    return BrokerOrderState(
        order.client_order_id,
        order.broker_order_id or "",
        order.status,
        order.filled_qty,
        order.avg_price,
    )
