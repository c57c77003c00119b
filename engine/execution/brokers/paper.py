"""The paper broker: a simulated account and exchange behind the Broker protocol.

It learns prices only from `on_bar`, decides fills with the pure rules in
`engine.execution.brokers.fills`, and keeps its own account (cash, signed positions), its
orders and its executions in its own tables (migration set "paper_broker") on the
engine's writer connection. A new PaperBroker on the same file continues exactly
where the previous one stopped: working orders keep working, cash and positions
are kept, exec ids are never reused.

Each public call writes in one transaction (`db.atomic()`): its own when the
connection is idle, a savepoint inside the caller's when the caller has one open,
so a cycle that wraps the broker in its transaction commits both together. When a
write fails, the in-memory state is reloaded from the database so the two never
disagree.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from engine.config import PaperSettings
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
from engine.execution.brokers.base import BrokerAccount, BrokerOrderState, BrokerUnavailable
from engine.execution.brokers.fills import (
    FillDecision,
    commission,
    fill_at_market,
    match_bar,
    slipped,
    worse,
)
from store import paper as rows
from store.db import atomic
from store.schema import apply_pending

logger = logging.getLogger(__name__)

SHORT_MARGIN = 0.5  # equity needed per unit of short notional
_DONE_KEPT = 256  # finished orders remembered, so a lookup of one needs no SELECT
NOT_WORKING = "unknown or not working"

migrations = Migrations("paper_broker")

_Work = Callable[[], list["ExecutionReport"]]


@migrations()
def m001_paper_tables(db: Database) -> None:
    db.table("paper_account").create(
        {
            "id": int,
            "cash": float,
            "starting_cash": float,
            "order_seq": int,
            "exec_seq": int,
            "updated_at": int,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("paper_positions").create(
        {"symbol": str, "qty": float, "updated_at": int}, pk="symbol", if_not_exists=True
    )
    db.table("paper_bars").create(  # the last bar seen per symbol: the broker's market data
        {
            "symbol": str,
            "ts": int,
            "open": float,
            "high": float,
            "low": float,
            "close": float,
            "volume": float,
        },
        pk="symbol",
        if_not_exists=True,
    )
    db.table("paper_orders").create(
        {
            "client_order_id": str,
            "broker_order_id": str,
            "symbol": str,
            "side": str,
            "qty": float,
            "type": str,
            "purpose": str,
            "limit_price": float,
            "stop_price": float,
            "status": str,
            "filled_qty": float,
            "avg_price": float,
            "triggered": int,
            "after_ts": int,  # the order works on bars later than this one
            "expires_at": int,
            "created_at": int,
            "updated_at": int,
            "detail": str,
        },
        pk="client_order_id",
        if_not_exists=True,
    )
    db.table("paper_orders").create_index(["status"], if_not_exists=True)
    db.table("paper_executions").create(
        {
            "exec_id": str,
            "client_order_id": str,
            "broker_order_id": str,
            "symbol": str,
            "side": str,
            "ts": int,
            "qty": float,
            "price": float,
            "commission": float,
            "ref_price": float,
        },
        pk="exec_id",
        if_not_exists=True,
    )
    db.table("paper_executions").create_index(["client_order_id"], if_not_exists=True)


@migrations()
def m002_brackets(db: Database) -> None:
    orders = db.table("paper_orders")
    orders.add_column("parent_id", str)
    orders.add_column("oco_group", str)


def apply_migrations(db: Database) -> None:
    apply_pending(migrations, db)


@dataclass(frozen=True, slots=True)
class _Working:
    order: Order  # status, filled_qty, avg_price and broker_order_id kept current
    triggered: bool
    after_ts: int | None


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
    try:
        Side(order.side)
    except ValueError:
        return f"unknown side {order.side!r}"
    try:
        kind = OrderType(order.order_type)
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


class PaperBroker:
    name = "paper"

    def __init__(self, db: Database, settings: PaperSettings, starting_cash: float) -> None:
        self._db = db
        self._settings = settings
        self._starting_cash = starting_cash
        self._connected = True
        self._account_saved_at: int | None = None
        apply_migrations(db)
        self._load()

    # ---- protocol -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def set_connected(self, connected: bool) -> None:
        """Simulate losing (and regaining) the connection."""
        self._connected = connected

    def submit(self, order: Order, now: int) -> list[ExecutionReport]:
        if not self._connected:
            raise BrokerUnavailable("paper broker is disconnected")
        known = self.lookup(order.client_order_id)
        if known is not None:
            # Resubmission after a crash must not create a second order.
            return [
                ExecutionReport(
                    order.client_order_id,
                    known.status,
                    now,
                    broker_order_id=known.broker_order_id,
                    detail="duplicate submit ignored: the broker already has this order",
                )
            ]
        return self._write(
            lambda: self._submit(order, now) + self._settle_protection(order.symbol, now)
        )

    def submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        if not self._connected:
            raise BrokerUnavailable("paper broker is disconnected")
        known = self._lookup_many([o.client_order_id for o in orders])
        if any(k is not None for k in known):
            return [
                ExecutionReport(
                    k.client_order_id,
                    k.status,
                    now,
                    broker_order_id=k.broker_order_id,
                    detail="duplicate submit ignored: the broker already has this order",
                )
                for k in known
                if k is not None
            ]
        return self._write(lambda: self._submit_bracket(orders, now))

    def modify(self, order: Order, now: int) -> list[ExecutionReport]:
        if not self._connected:
            raise BrokerUnavailable("paper broker is disconnected")
        working = self._find_working(order.client_order_id)
        if working is None:
            known = self.lookup(order.client_order_id)
            status = known.status if known else OrderStatus.REJECTED
            broker_id = known.broker_order_id if known else None
            return [
                ExecutionReport(order.client_order_id, status, now, None, broker_id, NOT_WORKING)
            ]
        moved = replace(working.order, stop_price=order.stop_price, limit_price=order.limit_price)
        problem = order_problem(moved)
        if problem is not None:
            raise ValueError(f"cannot modify {order.client_order_id}: {problem}")

        def work() -> list[ExecutionReport]:
            updated = replace(working, order=moved)
            self._replace_working(updated)
            rows.move_prices(
                self._db.conn, moved.client_order_id, moved.stop_price, moved.limit_price, now
            )
            return []

        return self._write(work)

    def cancel(self, client_order_id: str, now: int) -> list[ExecutionReport]:
        if not self._connected:
            raise BrokerUnavailable("paper broker is disconnected")
        working = self._find_working(client_order_id)
        if working is None:
            known = self.lookup(client_order_id)
            status = known.status if known else OrderStatus.REJECTED
            broker_id = known.broker_order_id if known else None
            return [ExecutionReport(client_order_id, status, now, None, broker_id, NOT_WORKING)]

        def work() -> list[ExecutionReport]:
            reports = [self._finish(working, OrderStatus.CANCELED, now, "canceled")]
            return reports + self._settle_protection(working.order.symbol, now)

        return self._write(work)

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        last = self._bars.get(bar.symbol)
        if last is not None and bar.ts <= last.ts:
            logger.warning(
                "paper broker ignores %s bar at %d: not after the last one at %d",
                bar.symbol,
                bar.ts,
                last.ts,
            )
            return []
        return self._write(lambda: self._on_bar(bar))

    def lookup(self, client_order_id: str) -> BrokerOrderState | None:
        working = self._find_working(client_order_id)
        if working is not None:
            return _state(working.order)
        done = self._done.get(client_order_id)
        if done is not None:
            return done
        row = rows.order_state(self._db.conn, client_order_id)
        if row is None:
            return None
        return BrokerOrderState(client_order_id, row[0], OrderStatus(row[1]), row[2], row[3])

    def _lookup_many(self, coids: list[str]) -> list[BrokerOrderState | None]:
        """`lookup` of each, with one SELECT for those not in memory."""
        found: dict[str, BrokerOrderState | None] = {}
        for coid in coids:
            working = self._find_working(coid)
            if working is not None:
                found[coid] = _state(working.order)
            elif coid in self._done:
                found[coid] = self._done[coid]
        unknown = [c for c in coids if c not in found]
        for coid, row in rows.order_states(self._db.conn, unknown).items():
            found[coid] = BrokerOrderState(coid, row[0], OrderStatus(row[1]), row[2], row[3])
        return [found.get(c) for c in coids]

    def reload(self) -> None:
        """Read the broker's state again: a transaction its writes joined was rolled back."""
        self._load()

    def fills(self, client_order_id: str) -> list[Fill]:
        return rows.executions(self._db.conn, client_order_id)

    def account(self) -> BrokerAccount:
        return BrokerAccount(self._cash, {s: q for s, q in self._positions.items() if q != 0})

    def close(self) -> None:
        """Nothing to release: every call has already written its state."""

    # ---- extras for the engine and tests ------------------------------------------

    def transfer(self, amount: float, now: int) -> None:
        """A deposit (> 0) or withdrawal (< 0) of cash, in the caller's transaction."""
        if not math.isfinite(amount):
            raise ValueError(f"a transfer must be a finite amount, got {amount!r}")

        def work() -> list[ExecutionReport]:
            self._cash += amount
            self._save_account(now)
            return []

        self._write(work)

    def last_bar(self, symbol: str) -> Bar | None:
        return self._bars.get(symbol)

    def working_orders(self) -> list[Order]:
        return [w.order for orders in self._working.values() for w in orders.values()]

    # ---- decisions and bookkeeping --------------------------------------------

    def _submit(self, order: Order, now: int) -> list[ExecutionReport]:
        coid = order.client_order_id
        self._order_seq += 1
        broker_id = f"paper-{self._order_seq}"
        last_bar = self._bars.get(order.symbol)
        problem = order_problem(order)
        if problem is None and last_bar is None:
            problem = f"no market data for {order.symbol}"
        if problem is None and order.parent_id is not None:
            parent = self.lookup(order.parent_id)
            if parent is None or parent.status is OrderStatus.REJECTED:
                problem = f"its entry {order.parent_id} was not accepted"
        if problem is None and last_bar is not None and not order.protective:
            # A stop or target only ever closes what is held (reduce-only), so it needs
            # no buying power of its own.
            if not (isinstance(order.side, Side) and isinstance(order.order_type, OrderType)):
                order = replace(
                    order, side=Side(order.side), order_type=OrderType(order.order_type)
                )
            marks = {s: b.close for s, b in self._bars.items()}
            price = estimated_price(order, last_bar, self._settings)
            problem = buying_power_problem(
                order,
                cash=self._cash,
                positions=self._positions,
                marks=marks,
                price=price,
                settings=self._settings,
            )
        order = replace(
            order,
            broker_order_id=broker_id,
            filled_qty=0.0,
            avg_price=None,
            status=OrderStatus.ACCEPTED if problem is None else OrderStatus.REJECTED,
        )
        if problem is not None:
            logger.info("paper broker rejects %s: %s", coid, problem)
            rejected = order
            self._insert_order(_Working(rejected, False, None), now, problem or "")
            self._remember_done(rejected)
            self._save_account(now)
            return [ExecutionReport(coid, OrderStatus.REJECTED, now, None, broker_id, problem)]

        assert last_bar is not None  # rejected above without market data
        working = _Working(order, False, last_bar.ts)
        reports = [
            ExecutionReport(coid, OrderStatus.SUBMITTED, now, None, broker_id),
            ExecutionReport(coid, OrderStatus.ACCEPTED, now, None, broker_id),
        ]
        decision = None
        if order.order_type is OrderType.MARKET:
            decision = fill_at_market(working.order, last_bar, self._settings)
        if decision is None:
            self._insert_order(working, now, "")
        else:
            working, report = self._apply_fill(working, decision, now)
            reports.append(report)
            self._insert_order(working, now, "")
        if working.order.status.is_open:
            self._working.setdefault(order.symbol, {})[coid] = working
        else:
            self._remember_done(working.order)
        self._save_account(now)
        return reports

    def _submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        for order in orders:
            reports += self._submit(order, now)
        symbols = {o.symbol for o in orders}
        for symbol in sorted(symbols):
            reports += self._settle_protection(symbol, now)
        return reports

    def _parent_filled(self, order: Order) -> float | None:
        """How much of the order's entry has filled; None when it has no parent."""
        if order.parent_id is None:
            return None
        parent = self.lookup(order.parent_id)
        return parent.filled_qty if parent is not None else 0.0

    def _closable(self, order: Order) -> float:
        """What a protective order may still fill: what is held on the other side."""
        held = self._positions.get(order.symbol, 0.0)
        closable = max(0.0, -order.side.sign * held)
        return min(order.remaining, closable)

    def _settle_protection(self, symbol: str, now: int) -> list[ExecutionReport]:
        """Cancel protective orders with nothing left to do: their entry ended without
        a fill, or the position they guard is gone (one side of the pair filled, or
        it was closed some other way)."""
        reports = []
        for working in list(self._working.get(symbol, {}).values()):
            order = working.order
            if not order.protective:
                continue
            parent_filled = self._parent_filled(order)
            if parent_filled == 0.0:
                parent = self.lookup(order.parent_id or "")
                if parent is None or not parent.status.is_open:
                    detail = "canceled: its entry ended without a fill"
                    reports.append(self._finish(working, OrderStatus.CANCELED, now, detail))
                continue  # still waiting for its entry
            if self._closable(order) <= 0:
                detail = "canceled: no position left to close (OCO)"
                reports.append(self._finish(working, OrderStatus.CANCELED, now, detail))
        return reports

    def _armed(self, working: _Working) -> bool:
        """A protective order whose entry filled before this bar (or that has none)."""
        filled = self._parent_filled(working.order)
        return filled is None or filled > 0

    def _on_bar(self, bar: Bar) -> list[ExecutionReport]:
        self._bars[bar.symbol] = bar
        rows.save_bar(
            self._db.conn, (bar.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        )
        reports: list[ExecutionReport] = []
        filled = False
        queue = list(self._working.get(bar.symbol, {}).values())
        # Decided before anything fills on this bar: protection whose entry fills on
        # this bar starts working on the next one (the order inside a bar is unknown).
        armed = {w.order.client_order_id for w in queue if self._armed(w)}
        # Stops before targets: when one bar reaches both, assume the stop traded first.
        queue.sort(key=lambda w: 0 if w.order.order_type is not OrderType.LIMIT else 1)
        for queued in queue:
            if queued.after_ts is not None and bar.ts <= queued.after_ts:
                continue
            working = self._find_working(queued.order.client_order_id)
            if working is None:
                continue  # canceled with its pair earlier on this bar
            order = working.order
            if order.expires_at is not None and bar.ts >= order.expires_at:
                reports.append(self._finish(working, OrderStatus.EXPIRED, bar.ts, "expired"))
                continue
            if order.protective:
                if order.client_order_id not in armed:
                    continue
                closable = self._closable(order)
                if closable <= 0:
                    continue
                # Match as if only what is held were left to fill.
                order = replace(order, qty=order.filled_qty + closable)
            match = match_bar(order, bar, self._settings, triggered=working.triggered)
            if match.fill is None:
                if match.triggered != working.triggered:
                    self._replace_working(replace(working, triggered=True))
                    self._update_order(replace(working, triggered=True), bar.ts)
                continue
            updated, report = self._apply_fill(
                replace(working, triggered=match.triggered), match.fill, bar.ts
            )
            reports.append(report)
            self._update_order(updated, bar.ts)
            if updated.order.status.is_open:
                self._replace_working(updated)
            else:
                self._remove_working(updated)
            filled = True
        reports += self._settle_protection(bar.symbol, bar.ts)
        if filled:
            self._save_account(bar.ts)
        return reports

    def _apply_fill(
        self, working: _Working, decision: FillDecision, ts: int
    ) -> tuple[_Working, ExecutionReport]:
        order = working.order
        sign = order.side.sign
        self._exec_seq += 1
        exec_id = f"paper-x{self._exec_seq}"
        self._cash += -(sign * decision.qty * decision.price) - decision.commission
        position = self._positions.get(order.symbol, 0.0) + sign * decision.qty
        self._positions[order.symbol] = position
        filled = order.filled_qty + decision.qty
        avg = ((order.avg_price or 0.0) * order.filled_qty + decision.price * decision.qty) / filled
        status = OrderStatus.FILLED if filled >= order.qty else OrderStatus.PARTIALLY_FILLED
        order = replace(order, filled_qty=filled, avg_price=avg, status=status)
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
        conn = self._db.conn
        rows.insert_execution(
            conn,
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
        rows.save_position(conn, order.symbol, position, ts)
        logger.debug(
            "paper fill %s %s %g %s @ %.4f",
            exec_id,
            order.side,
            decision.qty,
            order.symbol,
            decision.price,
        )
        report = ExecutionReport(order.client_order_id, status, ts, fill, order.broker_order_id)
        return _Working(order, working.triggered, working.after_ts), report

    def _finish(
        self, working: _Working, status: OrderStatus, ts: int, detail: str
    ) -> ExecutionReport:
        done = _Working(replace(working.order, status=status), working.triggered, working.after_ts)
        self._update_order(done, ts, detail)
        self._remove_working(done)
        return ExecutionReport(
            done.order.client_order_id, status, ts, None, done.order.broker_order_id, detail
        )

    # ---- in-memory working set ------------------------------------------------------

    def _find_working(self, client_order_id: str) -> _Working | None:
        for orders in self._working.values():
            found = orders.get(client_order_id)
            if found is not None:
                return found
        return None

    def _replace_working(self, working: _Working) -> None:
        self._working[working.order.symbol][working.order.client_order_id] = working

    def _remove_working(self, working: _Working) -> None:
        self._working.get(working.order.symbol, {}).pop(working.order.client_order_id, None)
        self._remember_done(working.order)

    def _remember_done(self, order: Order) -> None:
        done = self._done
        done[order.client_order_id] = _state(order)
        if len(done) > _DONE_KEPT:
            del done[next(iter(done))]

    # ---- persistence ----------------------------------------------------------------

    def _write(self, work: _Work) -> list[ExecutionReport]:
        try:
            with atomic(self._db.conn, "paper"):
                reports = work()
                self._flush_account()
                return reports
        except Exception:
            logger.exception("paper broker write failed; reloading its state from the database")
            self._load()
            raise

    def _insert_order(self, working: _Working, now: int, detail: str) -> None:
        o = working.order
        rows.insert_order(
            self._db.conn,
            (
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
            ),
        )

    def _update_order(self, working: _Working, now: int, detail: str = "") -> None:
        o = working.order
        rows.update_order(
            self._db.conn,
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

    def _save_account(self, now: int) -> None:
        """Saved once, at the end of the public call's transaction."""
        self._account_saved_at = now

    def _flush_account(self) -> None:
        now = self._account_saved_at
        if now is not None:
            self._account_saved_at = None
            rows.save_account(self._db.conn, self._cash, self._order_seq, self._exec_seq, now)

    def _load(self) -> None:
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
        self._cash = float(row[0])
        self._order_seq = int(row[1])
        self._exec_seq = int(row[2])
        self._positions: dict[str, float] = rows.positions(conn)
        self._bars: dict[str, Bar] = {
            r[0]: Bar(r[0], int(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows.bars(conn)
        }
        self._done: dict[str, BrokerOrderState] = {}
        self._account_saved_at = None
        self._working: dict[str, dict[str, _Working]] = {}
        for working in _rows_to_working(rows.working_orders(conn)):
            self._working.setdefault(working.order.symbol, {})[working.order.client_order_id] = (
                working
            )


def _rows_to_working(records: Iterable[tuple[Any, ...]]) -> Iterable[_Working]:
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
        yield _Working(order, bool(r[12]), r[13])


def _state(order: Order) -> BrokerOrderState:
    return BrokerOrderState(
        order.client_order_id,
        order.broker_order_id or "",
        order.status,
        order.filled_qty,
        order.avg_price,
    )
