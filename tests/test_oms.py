from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import FrozenInstanceError, astuple, dataclass, fields, replace
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from engine.config import PaperSettings
from engine.domain import (
    Bar,
    ExecutionReport,
    ExitReason,
    Fill,
    Intent,
    Order,
    OrderStatus,
    OrderType,
    Purpose,
    Side,
)
from engine.execution.brokers.base import (
    Broker,
    BrokerAccount,
    BrokerOpenOrder,
    BrokerOrderState,
    BrokerUnavailable,
)
from engine.execution.brokers.paper import PaperBroker
from engine.execution.oms import (
    NEVER_REACHED_BROKER,
    Oms,
    OpenTransaction,
    OrderBatch,
    is_legal_transition,
    new_client_order_id,
)
from engine.execution.portfolio import Portfolio
from store.db import open_reader, open_writer
from store.schema import OPEN_STATUSES

T0 = 1_700_000_000_000
S = OrderStatus


class Crash(BaseException):
    """The process dies: not an Exception, so nothing on the way catches it."""


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        return self.now


Decide = Callable[[Order, int], list[ExecutionReport]]


class FunctionBroker:
    """An in-memory Broker whose answers come from plain functions (like httpx's
    MockTransport). It remembers what it reported, so `lookup` tells the truth."""

    name = "function"

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.on_bar_reports: Callable[[Bar], list[ExecutionReport]] = lambda bar: []
        self.available = True
        self.submitted: list[Order] = []
        self.modified: list[Order] = []
        self.canceled: list[str] = []
        self.orders: dict[str, BrokerOrderState] = {}
        self.executions: dict[str, list[Fill]] = {}

    @property
    def connected(self) -> bool:
        return self.available

    def _check(self) -> None:
        if not self.available:
            raise BrokerUnavailable("broker down")

    def record(self, reports: list[ExecutionReport]) -> list[ExecutionReport]:
        for r in reports:
            prev = self.orders.get(r.client_order_id)
            filled, avg = (prev.filled_qty, prev.avg_price) if prev else (0.0, None)
            if r.fill is not None:
                self.executions.setdefault(r.client_order_id, []).append(r.fill)
                total = filled + r.fill.qty
                avg = ((avg or 0.0) * filled + r.fill.price * r.fill.qty) / total
                filled = total
            broker_id = r.broker_order_id or (prev.broker_order_id if prev else "")
            self.orders[r.client_order_id] = BrokerOrderState(
                r.client_order_id, broker_id, r.status, filled, avg
            )
        return reports

    def submit(self, order: Order, now: int) -> list[ExecutionReport]:
        self._check()
        reports = self.decide(order, now)
        self.submitted.append(order)
        return self.record(reports)

    def submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        """The entry as `decide` says; its stop and target rest, accepted."""
        self._check()
        parent, *children = orders
        reports = self.decide(parent, now)
        reports += [ExecutionReport(c.client_order_id, S.ACCEPTED, now) for c in children]
        self.submitted.extend(orders)
        return self.record(reports)

    def modify(self, order: Order, now: int) -> list[ExecutionReport]:
        self._check()
        self.modified.append(order)
        return []

    def cancel(self, client_order_id: str, now: int) -> list[ExecutionReport]:
        self._check()
        self.canceled.append(client_order_id)
        state = self.orders.get(client_order_id)
        if state is None or not state.status.is_open:
            return []
        return self.record([ExecutionReport(client_order_id, S.CANCELED, now, detail="canceled")])

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        return self.record(self.on_bar_reports(bar))

    def lookup(self, client_order_id: str) -> BrokerOrderState | None:
        self._check()
        return self.orders.get(client_order_id)

    def fills(self, client_order_id: str) -> list[Fill]:
        self._check()
        return list(self.executions.get(client_order_id, []))

    def open_orders(self) -> list[BrokerOpenOrder]:
        self._check()
        return [
            BrokerOpenOrder(o.client_order_id, o.broker_order_id, "", Side.BUY, 0, 0, "")
            for o in self.orders.values()
            if o.status.is_open
        ]

    def executions_since(self, since: int | None) -> list[Fill]:
        self._check()
        found = [f for fills in self.executions.values() for f in fills]
        return sorted((f for f in found if since is None or f.ts >= since), key=lambda f: f.ts)

    def cancel_foreign(self, broker_order_id: str, now: int) -> bool:
        return False

    def account(self) -> BrokerAccount:
        return BrokerAccount(0.0, {})

    def close(self) -> None:
        pass


_exec_ids = count(1)


def fill_of(order: Order, now: int, qty: float | None = None, price: float = 100.0) -> Fill:
    return Fill(
        order.client_order_id,
        f"E{next(_exec_ids)}",
        order.symbol,
        order.side,
        now,
        order.qty if qty is None else qty,
        price,
        1.0,
    )


def fills_at_once(order: Order, now: int) -> list[ExecutionReport]:
    coid = order.client_order_id
    return [
        ExecutionReport(coid, S.SUBMITTED, now, broker_order_id="B-" + coid),
        ExecutionReport(coid, S.ACCEPTED, now),
        ExecutionReport(coid, S.FILLED, now, fill_of(order, now)),
    ]


def rests(order: Order, now: int) -> list[ExecutionReport]:
    coid = order.client_order_id
    return [
        ExecutionReport(coid, S.SUBMITTED, now, broker_order_id="B-" + coid),
        ExecutionReport(coid, S.ACCEPTED, now),
    ]


def crash(order: Order, now: int) -> list[ExecutionReport]:
    raise Crash


def buy(qty: float = 10, **kwargs) -> Intent:
    return Intent("AAA", Side.BUY, qty, kwargs.pop("purpose", Purpose.ENTRY), **kwargs)


def limit_buy(qty: float = 10, limit: float = 99.0) -> Intent:
    return buy(qty, order_type=OrderType.LIMIT, limit_price=limit)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "cockpit.db"


@pytest.fixture
def db(path) -> Iterator[Database]:
    database = open_writer(path)
    yield database
    database.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_oms(db: Database, broker: Broker, clock: Clock, cash: float = 100_000) -> Oms:
    return Oms(db, broker, Portfolio.load(db, cash), clock)


def events(db: Database, coid: str) -> list[str]:
    rows = db.execute(
        "SELECT status FROM order_events WHERE client_order_id = ? ORDER BY id", (coid,)
    )
    return [r[0] for r in rows]


def last_detail(db: Database, coid: str) -> str:
    row = db.execute(
        "SELECT detail FROM order_events WHERE client_order_id = ? ORDER BY id DESC LIMIT 1",
        (coid,),
    ).fetchone()
    return str(row[0])


def order_row(db: Database, coid: str) -> dict:
    return next(db["orders"].rows_where("client_order_id = ?", [coid]))


# -- lifecycle -------------------------------------------------------------------


def test_submit_commits_the_new_order_before_the_broker_sees_it(db, path, clock):
    seen: list[str] = []

    def decide(order: Order, now: int) -> list[ExecutionReport]:
        with open_reader(path) as other_connection:
            row = other_connection.execute(
                "SELECT status FROM orders WHERE client_order_id = ?", (order.client_order_id,)
            ).fetchone()
        seen.append(row["status"])
        return rests(order, now)

    make_oms(db, FunctionBroker(decide), clock).submit(buy(), 100.0)
    assert seen == ["NEW"]


def test_a_market_fill_records_every_transition_as_an_event(db, clock):
    order = make_oms(db, FunctionBroker(fills_at_once), clock).submit(buy(), 100.0)
    assert events(db, order.client_order_id) == ["NEW", "SUBMITTED", "ACCEPTED", "FILLED"]
    row = order_row(db, order.client_order_id)
    assert (row["status"], row["filled_qty"], row["avg_price"]) == ("FILLED", 10.0, 100.0)
    assert row["broker_order_id"] == "B-" + order.client_order_id


def test_submit_writes_in_two_transactions(db, clock):
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    oms.submit(buy(), 100.0)
    db.conn.set_trace_callback(None)
    # Each takes the write lock as it begins: the first reads before it writes.
    ends = [s for s in statements if s in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT")]
    assert ends == ["BEGIN IMMEDIATE", "COMMIT"] * 2


def test_client_order_ids_are_unique_and_sort_in_creation_order(db, clock):
    oms = make_oms(db, FunctionBroker(rests), clock)
    ids = []
    for i in range(30):
        clock.now = T0 + i // 10  # several orders within the same millisecond
        ids.append(oms.submit(buy(), 100.0).client_order_id)
    assert len(set(ids)) == 30
    assert sorted(ids) == ids


def test_a_restart_within_the_same_millisecond_makes_new_ids(db, clock):
    """A new OMS (a restart) counts from 1 again: its nonce keeps its ids apart."""
    before = make_oms(db, FunctionBroker(fills_at_once), clock).submit(buy(), 100.0)
    after = make_oms(db, FunctionBroker(fills_at_once), clock).submit(buy(), 100.0)
    assert before.client_order_id.split("-")[:3] == after.client_order_id.split("-")[:3]
    assert before.client_order_id != after.client_order_id


def test_client_order_id_reads_as_utc_time():
    assert new_client_order_id(T0 + 5, 42, "abc123") == "C20231114-221320005-000042-abc123"


def test_client_order_ids_across_second_and_day_boundaries_read_their_own_time():
    # The date and time to the second are formatted once per second and kept.
    day_end = 1_700_006_399_000  # 2023-11-14 23:59:59 UTC
    stamps = [new_client_order_id(day_end + ms, 1, "x") for ms in (998, 999, 1000, 1001, 998)]
    assert stamps == [
        "C20231114-235959998-000001-x",
        "C20231114-235959999-000001-x",
        "C20231115-000000000-000001-x",
        "C20231115-000000001-000001-x",
        "C20231114-235959998-000001-x",
    ]


def test_a_bad_intent_is_refused_before_anything_is_stored(db, clock):
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    with pytest.raises(ValueError, match="quantity"):
        oms.submit(buy(qty=float("nan")), 100.0)
    with pytest.raises(ValueError, match="limit_price"):
        oms.submit(buy(order_type=OrderType.LIMIT), 100.0)
    assert db["orders"].count == 0


def test_submit_inside_an_open_transaction_is_refused(db, clock):
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    with pytest.raises(OpenTransaction), db.atomic():
        oms.submit(buy(), 100.0)


def test_submit_links_the_signal_row_to_its_order(db, clock):
    signal_id = db["signals"].insert({"symbol": "AAA", "side": "BUY"}).last_pk
    order = make_oms(db, FunctionBroker(rests), clock).submit(buy(), 100.0, signal_id=signal_id)
    assert db["signals"].get(signal_id)["client_order_id"] == order.client_order_id


def test_partial_fills_weight_the_order_average_price(db, clock):
    def partially(order: Order, now: int) -> list[ExecutionReport]:
        coid = order.client_order_id
        return [
            *rests(order, now),
            ExecutionReport(coid, S.PARTIALLY_FILLED, now, fill_of(order, now, 4, 100.0)),
            ExecutionReport(coid, S.PARTIALLY_FILLED, now, fill_of(order, now, 4, 101.0)),
            ExecutionReport(coid, S.FILLED, now, fill_of(order, now, 2, 106.0)),
        ]

    order = make_oms(db, FunctionBroker(partially), clock).submit(buy(), 100.0)
    assert order.status is S.FILLED
    assert order.avg_price == pytest.approx(101.6)
    assert events(db, order.client_order_id)[-3:] == ["PARTIALLY_FILLED"] * 2 + ["FILLED"]


def test_an_entry_fill_sets_the_positions_stop_and_target(db, clock):
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    oms.submit(buy(stop_loss=95.0, take_profit=110.0), 100.0)
    row = db["positions"].get("AAA")
    assert (row["qty"], row["stop"], row["target"]) == (10.0, 95.0, 110.0)


def test_a_fill_is_measured_against_the_decision_price(db, clock):
    make_oms(db, FunctionBroker(fills_at_once), clock).submit(buy(), 99.5)
    assert next(db["fills"].rows)["ref_price"] == 99.5


def test_a_repeated_exec_id_is_ignored(db, clock):
    oms = make_oms(db, FunctionBroker(rests), clock)
    order = oms.submit(buy(), 100.0)
    report = ExecutionReport(order.client_order_id, S.FILLED, T0, fill_of(order, T0))
    oms.apply(report)
    oms.apply(report)
    assert db["fills"].count == 1
    assert db["positions"].get("AAA")["qty"] == 10.0


@pytest.mark.parametrize(
    ("current", "new", "legal"),
    [
        (S.NEW, S.FILLED, True),
        (S.ACCEPTED, S.SUBMITTED, False),
        (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, True),
        (S.PARTIALLY_FILLED, S.REJECTED, False),
        (S.PARTIALLY_FILLED, S.EXPIRED, True),
        (S.FILLED, S.CANCELED, False),
        (S.CANCELED, S.FILLED, False),
    ],
)
def test_transition_rules(current, new, legal):
    assert is_legal_transition(current, new) is legal


def test_an_illegal_transition_is_refused_logged_and_not_recorded(db, clock, caplog):
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    order = oms.submit(buy(), 100.0)
    with caplog.at_level(logging.WARNING, logger="engine.execution.oms"):
        oms.apply(ExecutionReport(order.client_order_id, S.CANCELED, T0 + 1))
    assert order_row(db, order.client_order_id)["status"] == "FILLED"
    assert events(db, order.client_order_id)[-1] == "FILLED"
    assert "refused FILLED -> CANCELED" in caplog.text


def test_a_stale_report_later_in_the_same_batch_does_not_undo_the_fill(db, clock):
    def out_of_order(order: Order, now: int) -> list[ExecutionReport]:
        return [*fills_at_once(order, now), ExecutionReport(order.client_order_id, S.ACCEPTED, now)]

    order = make_oms(db, FunctionBroker(out_of_order), clock).submit(buy(), 100.0)
    assert order.status is S.FILLED
    assert order_row(db, order.client_order_id)["status"] == "FILLED"


def test_a_finished_order_is_read_back_after_a_restart(db, clock):
    order = make_oms(db, FunctionBroker(fills_at_once), clock).submit(buy(), 100.0)
    again = make_oms(db, FunctionBroker(fills_at_once), clock).get(order.client_order_id)
    assert again == order


def test_a_late_fill_on_a_canceled_order_still_moves_the_position(db, clock):
    oms = make_oms(db, FunctionBroker(rests), clock)
    order = oms.submit(limit_buy(), 100.0)
    oms.cancel(order.client_order_id)
    oms.apply(ExecutionReport(order.client_order_id, S.FILLED, T0 + 1, fill_of(order, T0 + 1)))
    assert order_row(db, order.client_order_id)["status"] == "CANCELED"
    assert db["positions"].get("AAA")["qty"] == 10.0


def test_on_bar_applies_the_fills_the_broker_reports(db, clock):
    broker = FunctionBroker(rests)
    oms = make_oms(db, broker, clock)
    order = oms.submit(limit_buy(), 100.0)
    broker.on_bar_reports = lambda bar: [
        ExecutionReport(order.client_order_id, S.FILLED, bar.ts, fill_of(order, bar.ts, 10, 98.0))
    ]
    oms.on_bar(Bar("AAA", T0 + 60_000, 100, 101, 97, 99, 1_000))
    assert oms.get(order.client_order_id).status is S.FILLED
    assert oms.open_orders() == []


def test_a_cycles_bars_are_matched_in_one_transaction_in_bar_order(db, clock):
    # One savepoint for the cycle's bars, not one per bar (20 a cycle at 20 symbols);
    # each bar's reports are applied before the broker sees the next bar.
    broker = FunctionBroker(rests)
    oms = make_oms(db, broker, clock)
    order = oms.submit(limit_buy(), 100.0)
    seen: list[tuple[str, str]] = []
    broker.on_bar_reports = lambda bar: (
        seen.append((bar.symbol, oms.get(order.client_order_id).status.value))
        or (
            [ExecutionReport(order.client_order_id, S.FILLED, bar.ts, fill_of(order, bar.ts))]
            if bar.symbol == "AAA"
            else []
        )
    )
    statements: list[str] = []
    db.conn.execute("BEGIN")  # the cycle's own transaction
    db.conn.set_trace_callback(statements.append)
    reports = oms.on_bars(
        [Bar(s, T0 + 60_000, 100, 101, 97, 99, 1_000) for s in ("AAA", "BBB", "CCC")]
    )
    db.conn.set_trace_callback(None)
    db.conn.commit()
    assert [r.status for r in reports] == [S.FILLED]
    assert seen == [("AAA", "ACCEPTED"), ("BBB", "FILLED"), ("CCC", "FILLED")]
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1
    assert db["positions"].get("AAA")["qty"] == 10.0


def test_a_failed_write_rolls_back_and_reloads_memory_from_the_database(db, clock):
    book = Portfolio(100_000)
    oms = Oms(db, FunctionBroker(rests), book, clock)
    order = oms.submit(buy(), 100.0)
    db.execute("CREATE TRIGGER no_fills BEFORE INSERT ON fills BEGIN SELECT RAISE(ABORT, 'x'); END")
    with pytest.raises(sqlite3.IntegrityError):
        oms.apply(ExecutionReport(order.client_order_id, S.FILLED, T0, fill_of(order, T0)))
    assert oms.get(order.client_order_id).status is S.ACCEPTED
    assert book.positions == {}


# -- broker failures -----------------------------------------------------------------


def test_broker_unavailable_leaves_the_order_new_with_an_explaining_event(db, clock):
    broker = FunctionBroker(fills_at_once)
    broker.available = False
    order = make_oms(db, broker, clock).submit(buy(), 100.0)
    assert order.status is S.NEW
    assert order_row(db, order.client_order_id)["status"] == "NEW"
    assert "broker unavailable" in last_detail(db, order.client_order_id)


def test_other_broker_errors_propagate_and_the_order_stays_new(db, clock):
    def broken(order: Order, now: int) -> list[ExecutionReport]:
        raise KeyError("bug in the adapter")

    oms = make_oms(db, FunctionBroker(broken), clock)
    with pytest.raises(KeyError):
        oms.submit(buy(), 100.0)
    assert [o.status for o in oms.open_orders()] == [S.NEW]


def test_retry_unsent_resends_exits_and_cancels_stale_entries(db, clock):
    broker = FunctionBroker(fills_at_once)
    oms = make_oms(db, broker, clock)
    broker.available = False
    entry = oms.submit(buy(), 100.0)
    exit_ = oms.submit(buy(purpose=Purpose.EXIT), 100.0)
    broker.available = True
    clock.now += 10_000
    oms.retry_unsent(max_age_ms=5_000)
    assert oms.get(entry.client_order_id).status is S.CANCELED
    assert oms.get(exit_.client_order_id).status is S.FILLED
    assert [o.client_order_id for o in broker.submitted] == [exit_.client_order_id]


def test_retry_unsent_adopts_an_order_the_broker_received_before_timing_out(db, clock):
    broker = FunctionBroker(fills_at_once)

    def times_out(order: Order, now: int) -> list[ExecutionReport]:
        broker.record(fills_at_once(order, now))
        raise BrokerUnavailable("timeout waiting for the answer")

    broker.decide = times_out
    oms = make_oms(db, broker, clock)
    order = oms.submit(buy(), 100.0)
    broker.decide = fills_at_once
    oms.retry_unsent(max_age_ms=60_000)
    assert oms.get(order.client_order_id).status is S.FILLED
    assert broker.submitted == []  # never sent a second time
    assert db["positions"].get("AAA")["qty"] == 10.0


# -- cancel and expire ------------------------------------------------------------


def test_cancel_of_a_working_order_marks_it_canceled(db, clock):
    broker = FunctionBroker(rests)
    oms = make_oms(db, broker, clock)
    order = oms.submit(limit_buy(), 100.0)
    assert oms.cancel(order.client_order_id).status is S.CANCELED
    assert broker.canceled == [order.client_order_id]


def test_cancel_all_cancels_every_open_order_and_counts_them(db, clock):
    oms = make_oms(db, FunctionBroker(rests), clock)
    for _ in range(3):
        oms.submit(limit_buy(), 100.0)
    assert oms.cancel_all() == 3
    assert oms.open_orders() == []


def test_cancel_of_an_unsent_order_does_not_ask_the_broker_to_cancel(db, clock):
    broker = FunctionBroker(rests)
    oms = make_oms(db, broker, clock)
    broker.available = False
    order = oms.submit(limit_buy(), 100.0)
    broker.available = True
    assert oms.cancel(order.client_order_id).status is S.CANCELED
    assert broker.canceled == []


def test_expire_cancels_at_the_broker_and_marks_the_order_expired(db, clock):
    broker = FunctionBroker(rests)
    oms = Oms(db, broker, Portfolio(100_000), clock, order_timeout_ms=60_000)
    order = oms.submit(limit_buy(), 100.0)
    expired = oms.expire(T0 + 60_000)
    assert [o.status for o in expired] == [S.EXPIRED]
    assert broker.canceled == [order.client_order_id]
    assert events(db, order.client_order_id)[-1] == "EXPIRED"


def test_expire_leaves_orders_before_their_deadline_alone(db, clock):
    oms = Oms(db, FunctionBroker(rests), Portfolio(100_000), clock, order_timeout_ms=60_000)
    oms.submit(limit_buy(), 100.0)
    assert oms.expire(T0 + 59_999) == []
    assert len(oms.open_orders()) == 1


# -- reconciliation and crashes ---------------------------------------------------------


def restart(path, broker: Broker, clock: Clock) -> tuple[Database, Oms]:
    db = open_writer(path)
    return db, make_oms(db, broker, clock)


def test_crash_before_the_broker_then_restart_sends_nothing(path, clock):
    db = open_writer(path)
    with pytest.raises(Crash):
        make_oms(db, FunctionBroker(crash), clock).submit(buy(), 100.0)
    db.close()
    broker = FunctionBroker(fills_at_once)  # the broker never saw the order
    db, oms = restart(path, broker, clock)
    [order] = oms.reconcile()
    assert order.status is S.CANCELED
    assert last_detail(db, order.client_order_id) == NEVER_REACHED_BROKER
    assert broker.submitted == []
    assert db["orders"].count == 1
    db.close()


def test_crash_after_the_broker_filled_then_restart_adopts_the_fill_once(path, clock):
    broker = FunctionBroker(fills_at_once)

    def fills_then_dies(order: Order, now: int) -> list[ExecutionReport]:
        broker.record(fills_at_once(order, now))
        raise Crash

    broker.decide = fills_then_dies
    db = open_writer(path)
    with pytest.raises(Crash):
        make_oms(db, broker, clock).submit(buy(), 100.0)
    db.close()
    broker.decide = fills_at_once
    db, oms = restart(path, broker, clock)
    [order] = oms.reconcile()
    oms.reconcile()
    assert (order.status, order.filled_qty) == (S.FILLED, 10.0)
    assert len(broker.orders) == 1
    assert broker.submitted == []
    assert db["fills"].count == 1
    assert db["positions"].get("AAA")["qty"] == 10.0
    db.close()


def test_reconcile_records_an_event_when_the_broker_agrees(db, clock):
    broker = FunctionBroker(rests)
    order = make_oms(db, broker, clock).submit(limit_buy(), 100.0)
    [reconciled] = make_oms(db, broker, clock).reconcile()
    assert reconciled.status is S.ACCEPTED
    assert last_detail(db, order.client_order_id) == "reconciled: broker agrees (ACCEPTED)"


def test_reconcile_cancels_an_order_the_broker_has_forgotten(db, clock):
    broker = FunctionBroker(rests)
    order = make_oms(db, broker, clock).submit(limit_buy(), 100.0)
    broker.orders.clear()
    [reconciled] = make_oms(db, broker, clock).reconcile()
    assert reconciled.status is S.CANCELED
    assert "unknown to the broker" in last_detail(db, order.client_order_id)


# -- with the real paper broker -------------------------------------------------------


def bar(ts: int, close: float = 100.0, *, low: float | None = None, volume: float = 1e6) -> Bar:
    low = close - 1 if low is None else low
    return Bar("AAA", ts, close, close + 1, low, close, volume)


@pytest.fixture
def paper(db) -> PaperBroker:
    broker = PaperBroker(db, PaperSettings(), 100_000)
    broker.on_bar(bar(T0 - 60_000))
    return broker


def test_paper_market_order_fills_and_both_books_agree(db, clock, paper):
    book = Portfolio(100_000)
    order = Oms(db, paper, book, clock).submit(buy(qty=20), 100.0)
    assert order.status is S.FILLED
    assert book.positions["AAA"].qty == paper.account().positions["AAA"] == 20
    assert book.cash == pytest.approx(paper.account().cash)


def test_paper_limit_order_rests_then_fills_on_a_bar_trading_through(db, clock, paper):
    oms = make_oms(db, paper, clock)
    order = oms.submit(limit_buy(limit=98.0), 100.0)
    assert order.status is S.ACCEPTED
    oms.on_bar(bar(T0 + 60_000, 99.0, low=97.0))
    assert oms.get(order.client_order_id).status is S.FILLED


def test_paper_rejection_is_recorded_with_the_brokers_reason(db, clock, paper):
    order = make_oms(db, paper, clock).submit(buy(qty=5_000), 100.0)
    assert order.status is S.REJECTED
    assert "buying power" in last_detail(db, order.client_order_id)


def test_paper_expiry_through_the_oms_marks_the_order_expired(db, clock, paper):
    oms = Oms(db, paper, Portfolio(100_000), clock, order_timeout_ms=60_000)
    order = oms.submit(limit_buy(limit=90.0), 100.0)
    oms.expire(T0 + 60_000)
    assert oms.get(order.client_order_id).status is S.EXPIRED
    assert paper.working_orders() == []


def test_paper_crash_after_the_broker_filled_then_restart_adopts_it(path, clock):
    db = open_writer(path)
    PaperBroker(db, PaperSettings(), 100_000).on_bar(bar(T0 - 60_000))
    with pytest.raises(Crash):
        make_oms(db, FunctionBroker(crash), clock).submit(buy(), 100.0)
    [order] = make_oms(db, FunctionBroker(crash), clock).open_orders()
    PaperBroker(db, PaperSettings(), 100_000).submit(order, T0)  # sent, then the process died
    db.close()
    db = open_writer(path)
    paper = PaperBroker(db, PaperSettings(), 100_000)
    book = Portfolio.load(db, 100_000)
    [reconciled] = Oms(db, paper, book, clock).reconcile()
    assert (reconciled.status, reconciled.filled_qty) == (S.FILLED, 10.0)
    assert db["paper_orders"].count == 1
    assert book.positions["AAA"].qty == paper.account().positions["AAA"]
    db.close()


def test_paper_crash_before_the_broker_then_restart_sends_nothing(path, clock):
    db = open_writer(path)
    PaperBroker(db, PaperSettings(), 100_000).on_bar(bar(T0 - 60_000))
    with pytest.raises(Crash):
        make_oms(db, FunctionBroker(crash), clock).submit(buy(), 100.0)
    db.close()
    db = open_writer(path)
    oms = make_oms(db, PaperBroker(db, PaperSettings(), 100_000), clock)
    [reconciled] = oms.reconcile()
    assert reconciled.status is S.CANCELED
    assert db["paper_orders"].count == 0
    db.close()


def test_a_resend_to_the_paper_broker_never_duplicates(db, clock, paper):
    oms = make_oms(db, paper, clock)
    order = oms.submit(buy(), 100.0)
    again = paper.submit(replace(order, status=S.NEW), T0 + 1)
    oms.apply(again[0])
    assert db["paper_orders"].count == 1
    assert db["fills"].count == 1


def test_a_partial_fills_remainder_is_measured_against_the_decision_price(db, clock):
    broker = PaperBroker(db, PaperSettings(), 100_000)
    broker.on_bar(bar(T0 - 60_000, volume=200))  # room for 50 of the 100 shares
    oms = make_oms(db, broker, clock)
    order = oms.submit(buy(qty=100), 100.0)
    assert order.status is S.PARTIALLY_FILLED
    oms.on_bar(Bar("AAA", T0, 101.0, 101.6, 100.9, 101.5, 1e6))  # the rest, at the open
    rows = db.execute("SELECT price, ref_price FROM fills ORDER BY id").fetchall()
    assert [ref for _, ref in rows] == [100.0, 100.0]
    second = rows[1][0]
    assert second == pytest.approx(101.0 + 101.0 * 1e-4 + 0.02 * 0.7)  # the open + slippage


class HalfSending(FunctionBroker):
    """A bracket whose send times out after the entry reached the broker."""

    def submit_bracket(self, orders: Sequence[Order], now: int) -> list[ExecutionReport]:
        parent = orders[0].client_order_id
        self.record([ExecutionReport(parent, S.ACCEPTED, now, broker_order_id="B-1")])
        raise BrokerUnavailable("timed out")


def test_an_entry_that_reached_the_broker_without_its_stop_is_canceled_on_retry(db, clock):
    broker = HalfSending(fills_at_once)
    oms = make_oms(db, broker, clock)
    entry = oms.submit(buy(order_type=OrderType.LIMIT, limit_price=99.0, stop_loss=95.0), 100.0)
    assert entry.status is S.NEW
    oms.retry_unsent(max_age_ms=60_000)
    assert broker.canceled == [entry.client_order_id]
    assert oms.open_orders() == []
    stop = oms.get(f"{entry.client_order_id}-S")
    assert stop is not None and stop.status is S.CANCELED


def test_a_resting_entry_is_a_day_order_and_expires_when_the_trading_day_ends(db, clock):
    day_end = clock() + 30_000  # the session closes before the order's own timeout
    oms = Oms(
        db,
        FunctionBroker(rests),
        Portfolio(100_000),
        clock,
        order_timeout_ms=60_000,
        day_end=lambda now: day_end,
    )
    order = oms.submit(limit_buy(), 100.0)
    assert order.expires_at == day_end
    assert [o.status for o in oms.expire(day_end)] == [S.EXPIRED]


def test_an_orders_new_state_keeps_every_other_field() -> None:
    order = Order(
        "C1", "A", Side.SELL, 7.0, OrderType.STOP_LIMIT, Purpose.EXIT, OrderStatus.ACCEPTED,
        limit_price=9.5, stop_price=9.6, stop_loss=9.0, take_profit=12.0, filled_qty=2.0,
        avg_price=9.55, broker_order_id="b-1", created_at=11, expires_at=22, reason="why",
        parent_id="P", oco_group="G", exit_reason=ExitReason.STOP,
    )  # fmt: skip
    moved = order.with_state(OrderStatus.FILLED, 7.0, 9.4, "b-2")
    expected = replace(
        order, status=OrderStatus.FILLED, filled_qty=7.0, avg_price=9.4, broker_order_id="b-2"
    )
    assert moved == expected and hash(moved) == hash(expected)
    assert type(moved) is Order and repr(moved) == repr(expected)
    assert [getattr(moved, f.name) for f in fields(Order)] == list(astuple(expected))
    with pytest.raises(FrozenInstanceError):
        moved.status = OrderStatus.NEW  # type: ignore[misc]


# -- a batch of orders (Oms.submit_many) --------------------------------------------


def on(symbol: str, intent: Intent) -> Intent:
    return replace(intent, symbol=symbol)


def test_a_batch_commits_every_new_order_before_the_broker_sees_any(db, path, clock):
    seen: list[str] = []

    def decide(order: Order, now: int) -> list[ExecutionReport]:
        with open_reader(path) as other_connection:
            rows = other_connection.execute("SELECT status FROM orders ORDER BY id").fetchall()
        seen.append(",".join(r["status"] for r in rows))
        return fills_at_once(order, now)

    broker = FunctionBroker(decide)
    oms = make_oms(db, broker, clock)
    orders = oms.submit_many(lambda batch: [batch.add(on(s, buy()), 100.0) for s in "ABC"])
    assert seen[0] == "NEW,NEW,NEW"
    assert [o.status for o in orders] == [S.FILLED] * 3
    assert [o.symbol for o in broker.submitted] == ["A", "B", "C"]


def test_a_batch_is_two_commits_whatever_its_size(db, clock):
    commits: list[str] = []
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    oms.submit_many(lambda batch: [batch.add(on(s, buy()), 100.0) for s in "ABCDEFGH"])
    db.conn.set_trace_callback(None)
    assert len(commits) == 2
    assert db["fills"].count == 8


def test_each_order_of_a_batch_is_open_as_soon_as_it_is_added(db, clock):
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    open_before: list[int] = []

    def fill(batch: OrderBatch) -> None:
        for symbol in "AB":
            open_before.append(len(oms.open_orders()))
            batch.add(on(symbol, buy(stop_loss=95.0, take_profit=110.0)), 100.0)

    oms.submit_many(fill)
    assert open_before == [0, 3]  # the first entry and its stop and target


def test_the_broker_rejecting_one_order_of_a_batch_leaves_the_others_filled(db, clock):
    def rejects_b(order: Order, now: int) -> list[ExecutionReport]:
        if order.symbol == "B":
            return [ExecutionReport(order.client_order_id, S.REJECTED, now, detail="no")]
        return fills_at_once(order, now)

    oms = make_oms(db, FunctionBroker(rejects_b), clock)
    orders = oms.submit_many(lambda batch: [batch.add(on(s, buy()), 100.0) for s in "ABC"])
    assert [o.status for o in orders] == [S.FILLED, S.REJECTED, S.FILLED]
    assert [r[0] for r in db.execute("SELECT symbol FROM positions ORDER BY 1")] == ["A", "C"]


def test_a_broker_lost_mid_batch_leaves_the_rest_new_for_retry_unsent(db, clock):
    broker = FunctionBroker(fills_at_once)

    def loses_the_line_at_b(order: Order, now: int) -> list[ExecutionReport]:
        if order.symbol == "B":
            broker.available = False
            raise BrokerUnavailable("connection reset")
        return fills_at_once(order, now)

    broker.decide = loses_the_line_at_b
    oms = make_oms(db, broker, clock)
    exits = [on(s, buy(purpose=Purpose.EXIT)) for s in "ABC"]
    orders = oms.submit_many(lambda batch: [batch.add(i, 100.0) for i in exits])
    assert [o.status for o in orders] == [S.FILLED, S.NEW, S.NEW]
    assert "broker unavailable" in last_detail(db, orders[2].client_order_id)
    broker.available, broker.decide = True, fills_at_once
    oms.retry_unsent(max_age_ms=60_000)
    assert [oms.get(o.client_order_id).status for o in orders] == [S.FILLED] * 3


def test_a_crash_between_the_two_transactions_leaves_the_batch_for_retry_unsent(path, clock):
    db = open_writer(path)
    broker = FunctionBroker(crash)
    with pytest.raises(Crash):
        make_oms(db, broker, clock).submit_many(
            lambda batch: [batch.add(on(s, buy(purpose=Purpose.EXIT)), 100.0) for s in "AB"]
        )
    db.close()
    broker.decide = fills_at_once
    db, oms = restart(path, broker, clock)
    assert [o.status for o in oms.open_orders()] == [S.NEW, S.NEW]
    resent = oms.retry_unsent(max_age_ms=60_000)
    assert [(o.symbol, o.status) for o in resent] == [("A", S.FILLED), ("B", S.FILLED)]
    assert [o.symbol for o in broker.submitted] == ["A", "B"]
    db.close()


def test_an_exception_while_filling_a_batch_stores_and_sends_nothing(db, clock):
    broker = FunctionBroker(fills_at_once)
    oms = make_oms(db, broker, clock)

    def fill(batch: OrderBatch) -> None:
        batch.add(on("A", buy()), 100.0)
        raise KeyError("bug in the caller")

    with pytest.raises(KeyError):
        oms.submit_many(fill)
    assert db["orders"].count == 0
    assert oms.open_orders() == []
    assert broker.submitted == []


def test_submit_many_inside_an_open_transaction_is_refused(db, clock):
    oms = make_oms(db, FunctionBroker(fills_at_once), clock)
    with pytest.raises(OpenTransaction), db.atomic():
        oms.submit_many(lambda batch: None)


def _stored_open(db: Database) -> list[str]:
    rows = db.execute(
        f"SELECT client_order_id FROM orders WHERE status IN {OPEN_STATUSES}"
        " ORDER BY created_at, client_order_id"
    )
    return [r[0] for r in rows]


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["entry", "limit", "exit", "cancel", "bar"]),
            st.floats(min_value=90.0, max_value=110.0),
        ),
        max_size=25,
    )
)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_open_orders_in_memory_are_the_stores_after_any_sequence(tmp_path_factory, steps):
    """`open_orders()` is kept sorted between changes: after any mix of brackets,
    resting limits, exits, cancels and bars that fill stops and targets, it lists the
    orders the store holds open, oldest first."""
    db = open_writer(tmp_path_factory.mktemp("open") / "cockpit.db")
    clock = Clock()
    paper = PaperBroker(db, PaperSettings(), 100_000)
    paper.on_bar(bar(T0 - 60_000))
    portfolio = Portfolio.load(db, 100_000)
    oms = Oms(db, paper, portfolio, clock)
    price = 100.0
    try:
        for i, (step, level) in enumerate(steps):
            clock.now = T0 + (i + 1) * 60_000
            if step == "entry":
                oms.submit(buy(qty=5, stop_loss=price * 0.97, take_profit=price * 1.03), price)
            elif step == "limit":
                oms.submit(limit_buy(qty=5, limit=level), price)
            elif step == "exit":
                held = portfolio.positions.get("AAA")
                if held is not None and held.qty > 0:
                    oms.submit(Intent("AAA", Side.SELL, held.qty, Purpose.EXIT), price)
            elif step == "cancel" and oms.open_orders():
                oms.cancel(oms.open_orders()[0].client_order_id)
            elif step == "bar":
                price = level
                oms.on_bar(bar(clock.now, price, low=price - 2))
            listed = [o.client_order_id for o in oms.open_orders()]
            assert listed == _stored_open(db)
    finally:
        db.close()
