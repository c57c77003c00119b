"""The paper broker against real SQLite files: submission, matching, rejections,
persistence across a restart, cancel, and the cash/position bookkeeping."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from engine.config import PaperSettings
from engine.domain import Bar, Order, OrderStatus, OrderType, Purpose, Side
from engine.execution.account import StartingCashChanged
from engine.execution.brokers import paper_book
from engine.execution.brokers.base import Broker, BrokerUnavailable
from engine.execution.brokers.fills import slippage
from engine.execution.brokers.paper import NOT_WORKING, PaperBroker
from store.db import open_writer

FREE = PaperSettings(
    slippage_bps=0,
    slippage_range_share=0,
    commission_per_share=0.01,
    commission_min=1.0,
    max_participation=1.0,
)
CASH = 100_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def db(path: Path) -> Iterator[Database]:
    database = open_writer(path)
    yield database
    database.conn.close()


def bar(ts: int, o: float, h: float, low: float, c: float) -> Bar:
    return Bar("AAA", ts, o, h, low, c, 1e6)


def flat(ts: int, price: float, volume: float = 1e6, symbol: str = "AAA") -> Bar:
    return Bar(symbol, ts, price, price, price, price, volume)


def order(
    coid: str,
    side: Side = Side.BUY,
    qty: float = 100,
    kind: OrderType = OrderType.MARKET,
    *,
    limit: float | None = None,
    stop: float | None = None,
    symbol: str = "AAA",
    expires_at: int | None = None,
) -> Order:
    return Order(
        coid,
        symbol,
        side,
        qty,
        kind,
        Purpose.ENTRY,
        limit_price=limit,
        stop_price=stop,
        expires_at=expires_at,
    )


def broker(db: Database, cash: float = CASH, paper: PaperSettings = FREE) -> PaperBroker:
    return PaperBroker(db, paper, starting_cash=cash)


def statuses(reports: list) -> list[OrderStatus]:
    return [r.status for r in reports]


def test_paper_broker_satisfies_the_protocol(db: Database) -> None:
    assert isinstance(broker(db), Broker)


def test_market_order_reports_submitted_accepted_filled(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    reports = b.submit(order("m1"), now=2)
    assert statuses(reports) == [OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.FILLED]


def test_market_fill_moves_cash_by_price_times_qty_plus_commission(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    fill = b.submit(order("m1", qty=300), now=2)[-1].fill
    assert fill is not None
    assert b.account().cash == pytest.approx(CASH - 300 * fill.price - fill.commission)
    assert b.account().positions == {"AAA": 300}


def test_market_sell_fills_below_the_close_with_slippage(db: Database) -> None:
    paper = PaperSettings(slippage_bps=5, slippage_range_share=0.1)
    b = broker(db, paper=paper)
    last = bar(1, 50, 51, 49, 50.5)
    b.on_bar(last)
    fill = b.submit(order("s1", Side.SELL, 10), now=2)[-1].fill
    assert fill is not None
    assert fill.price == pytest.approx(50.5 - slippage(50.5, last, paper))
    assert fill.ref_price == 50.5


def test_exec_ids_are_unique_across_fills(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    ids = {b.submit(order(f"m{i}", qty=1), now=2)[-1].fill.exec_id for i in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("qty", [0, -5, 1.5, math.nan, math.inf])
def test_bad_quantity_is_rejected(db: Database, qty: float) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    [report] = b.submit(order("bad", qty=qty), now=2)
    assert report.status is OrderStatus.REJECTED
    assert "whole number of shares" in report.detail


def test_limit_order_without_limit_price_is_rejected(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    [report] = b.submit(order("l1", kind=OrderType.LIMIT), now=2)
    assert report.status is OrderStatus.REJECTED and "limit price" in report.detail


def test_stop_order_without_stop_price_is_rejected(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    [report] = b.submit(order("s1", kind=OrderType.STOP_LIMIT, limit=50), now=2)
    assert report.status is OrderStatus.REJECTED and "stop price" in report.detail


def test_unknown_order_type_is_rejected(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    [report] = b.submit(order("t1", kind="TRAILING"), now=2)  # type: ignore[arg-type]
    assert report.status is OrderStatus.REJECTED and "unknown order type" in report.detail


def test_order_without_market_data_is_rejected(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    [report] = b.submit(order("x1", symbol="ZZZ"), now=2)
    assert report.status is OrderStatus.REJECTED
    assert report.detail == "no market data for ZZZ"


def test_buy_costing_exactly_the_cash_is_accepted(db: Database) -> None:
    b = broker(db, cash=100 * 10 + FREE.commission_min)
    b.on_bar(flat(1, 10))
    assert b.submit(order("b1", qty=100), now=2)[-1].status is OrderStatus.FILLED


def test_buy_costing_a_cent_more_than_the_cash_is_rejected(db: Database) -> None:
    b = broker(db, cash=100 * 10 + FREE.commission_min - 0.01)
    b.on_bar(flat(1, 10))
    [report] = b.submit(order("b1", qty=100), now=2)
    assert report.status is OrderStatus.REJECTED and "buying power" in report.detail


def test_buy_limit_is_checked_at_its_limit_price(db: Database) -> None:
    b = broker(db, cash=1_000)
    b.on_bar(flat(1, 10))
    accepted = b.submit(order("l1", qty=100, kind=OrderType.LIMIT, limit=9), now=2)
    rejected = b.submit(order("l2", qty=100, kind=OrderType.LIMIT, limit=11), now=2)
    assert accepted[-1].status is OrderStatus.ACCEPTED
    assert rejected[-1].status is OrderStatus.REJECTED


def test_short_within_half_margin_is_accepted_and_beyond_it_rejected(db: Database) -> None:
    b = broker(db, cash=1_000)
    b.on_bar(flat(1, 10))
    # equity 1,000 carries 2,000 of short notional at 50% margin
    assert b.submit(order("s1", Side.SELL, 200), now=2)[-1].status is OrderStatus.FILLED
    [report] = b.submit(order("s2", Side.SELL, 1), now=3)
    assert report.status is OrderStatus.REJECTED and "margin" in report.detail


def test_closing_a_long_is_never_blocked_by_buying_power(db: Database) -> None:
    b = broker(db, cash=1_001)
    b.on_bar(flat(1, 10))
    b.submit(order("b1", qty=100), now=2)
    b.on_bar(flat(3, 1))  # the long is now worth a tenth, equity is tiny
    assert b.submit(order("x1", Side.SELL, 100), now=4)[-1].status is OrderStatus.FILLED
    assert b.account().positions == {}


def test_covering_a_short_is_never_blocked_by_buying_power(db: Database) -> None:
    b = broker(db, cash=1_000)
    b.on_bar(flat(1, 10))
    b.submit(order("s1", Side.SELL, 200), now=2)
    b.on_bar(flat(3, 20))  # the short lost 2,000: equity is negative
    assert b.submit(order("c1", Side.BUY, 200), now=4)[-1].status is OrderStatus.FILLED


def test_working_limit_fills_only_on_a_bar_that_trades_through(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("l1", qty=10, kind=OrderType.LIMIT, limit=49), now=2)
    assert b.on_bar(bar(3, 50, 51, 49, 50)) == []
    [report] = b.on_bar(bar(4, 50, 51, 48.99, 50))
    assert report.status is OrderStatus.FILLED and report.fill.price == 49


def test_limit_order_does_not_match_the_bar_it_was_submitted_after(db: Database) -> None:
    b = broker(db)
    b.on_bar(bar(1, 50, 51, 45, 50))  # this bar already traded through 49
    reports = b.submit(order("l1", qty=10, kind=OrderType.LIMIT, limit=49), now=2)
    assert reports[-1].status is OrderStatus.ACCEPTED
    assert b.lookup("l1").filled_qty == 0


def test_partial_fills_across_bars_add_up_to_the_order_qty(db: Database) -> None:
    b = broker(db, paper=FREE.model_copy(update={"max_participation": 0.1}))
    b.on_bar(flat(1, 10, volume=300))
    reports = b.submit(order("m1", qty=100), now=2)
    for ts in range(3, 10):
        reports += b.on_bar(flat(ts, 10, volume=300))
    fills = [r for r in reports if r.fill is not None]
    assert [f.fill.qty for f in fills] == [30, 30, 30, 10]
    assert statuses(fills) == [OrderStatus.PARTIALLY_FILLED] * 3 + [OrderStatus.FILLED]
    assert b.account().positions["AAA"] == 100


def test_stop_order_triggers_on_a_later_bar_and_fills_at_the_gap_open(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("s1", Side.BUY, 10, OrderType.STOP, stop=52), now=2)
    assert b.on_bar(bar(3, 50, 52 - 0.01, 49, 51)) == []
    [report] = b.on_bar(bar(4, 53, 54, 52.5, 53))
    assert report.fill.price == 53


def test_cancel_stops_a_working_order_from_filling(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("l1", qty=10, kind=OrderType.LIMIT, limit=49), now=2)
    [report] = b.cancel("l1", now=3)
    assert report.status is OrderStatus.CANCELED
    assert b.on_bar(bar(4, 48, 48, 47, 48)) == []


def test_cancel_of_an_unknown_order_reports_without_raising(db: Database) -> None:
    [report] = broker(db).cancel("nope", now=1)
    assert report.detail == NOT_WORKING


def test_cancel_of_a_filled_order_keeps_its_status(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("m1"), now=2)
    [report] = b.cancel("m1", now=3)
    assert report.status is OrderStatus.FILLED and report.detail == NOT_WORKING


def test_working_order_expires_at_its_expiry(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("l1", qty=10, kind=OrderType.LIMIT, limit=40, expires_at=5), now=2)
    assert b.on_bar(flat(4, 50)) == []
    [report] = b.on_bar(flat(5, 50))
    assert report.status is OrderStatus.EXPIRED


def test_disconnected_broker_refuses_submit(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.set_connected(False)
    assert not b.connected
    with pytest.raises(BrokerUnavailable):
        b.submit(order("m1"), now=2)


def test_resubmitting_a_client_order_id_does_not_trade_twice(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("m1"), now=2)
    [report] = b.submit(order("m1"), now=3)
    assert report.status is OrderStatus.FILLED and report.fill is None
    assert b.account().positions == {"AAA": 100}


def test_a_repeated_bar_does_not_fill_twice(db: Database) -> None:
    b = broker(db, paper=FREE.model_copy(update={"max_participation": 0.1}))
    b.on_bar(flat(1, 10, volume=100))
    b.submit(order("m1", qty=100), now=2)
    b.on_bar(flat(3, 10, volume=100))
    assert b.on_bar(flat(3, 10, volume=100)) == []
    assert b.lookup("m1").filled_qty == 20


def test_lookup_of_an_unseen_order_is_none(db: Database) -> None:
    assert broker(db).lookup("never") is None


# ---- persistence across a restart ---------------------------------------------------------


def test_working_limit_survives_a_restart_and_fills_on_the_next_bar(path: Path) -> None:
    first_db = open_writer(path)
    first = broker(first_db)
    first.on_bar(flat(1, 50))
    first.submit(order("m1", qty=20), now=2)
    first.submit(order("l1", qty=10, kind=OrderType.LIMIT, limit=49), now=3)
    before = first.account()
    first.close()
    first_db.conn.close()

    second_db = open_writer(path)
    second = broker(second_db)
    assert second.account() == before
    [report] = second.on_bar(bar(4, 50, 50, 48, 49))
    second_db.conn.close()
    assert report.client_order_id == "l1" and report.status is OrderStatus.FILLED


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_bar_with_nothing_working_is_the_price_after_a_restart(
    path: Path, in_transaction: bool
) -> None:
    first_db = open_writer(path)
    if in_transaction:
        first_db.conn.execute("BEGIN")
    broker(first_db).on_bar(flat(1, 50))
    first_db.conn.commit()
    first_db.conn.close()
    second_db = open_writer(path)
    *_, filled = broker(second_db).submit(order("m1", qty=10), now=2)
    second_db.conn.close()
    assert filled.status is OrderStatus.FILLED and filled.fill.price == 50


def test_exec_ids_are_not_reused_after_a_restart(path: Path) -> None:
    ids = set()
    for ts in (1, 10):
        database = open_writer(path)
        b = broker(database)
        b.on_bar(flat(ts, 50))
        ids |= {b.submit(order(f"m{ts}-{i}", qty=1), now=ts)[-1].fill.exec_id for i in range(3)}
        database.conn.close()
    assert len(ids) == 6


def test_partial_order_and_triggered_stop_survive_a_restart(path: Path) -> None:
    first_db = open_writer(path)
    first = broker(first_db)
    first.on_bar(flat(1, 50))
    first.submit(order("s1", Side.SELL, 10, OrderType.STOP_LIMIT, stop=49, limit=49), now=2)
    first.on_bar(bar(3, 50, 50, 48.5, 49))  # triggered inside the bar at the limit: waits
    first_db.conn.close()

    second_db = open_writer(path)
    second = broker(second_db)
    [report] = second.on_bar(bar(4, 49, 49.5, 48, 49))  # a triggered sell limit at 49
    second_db.conn.close()
    assert report.fill.price == 49


def test_lookup_after_a_restart_reports_the_filled_order(path: Path) -> None:
    first_db = open_writer(path)
    first = broker(first_db)
    first.on_bar(flat(1, 50))
    first.submit(order("m1", qty=7), now=2)
    first_db.conn.close()
    second_db = open_writer(path)
    state = broker(second_db).lookup("m1")
    second_db.conn.close()
    assert state is not None and state.status is OrderStatus.FILLED and state.filled_qty == 7


def test_state_written_in_the_callers_transaction_commits_with_it(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    db.conn.execute("BEGIN")
    b.submit(order("m1", qty=5), now=2)
    assert db.conn.in_transaction  # the broker used a savepoint, not its own commit
    db.conn.execute("COMMIT")
    assert db.execute("SELECT qty FROM paper_positions WHERE symbol = 'AAA'").fetchone()[0] == 5


# ---- property: cash and positions follow the fills exactly -------------------------------

_prices = st.floats(min_value=1, max_value=500, allow_nan=False, allow_infinity=False)
_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("order"),
            st.sampled_from(["AAA", "BBB"]),
            st.sampled_from(list(Side)),
            st.integers(min_value=1, max_value=400),
            st.sampled_from(list(OrderType)),
            st.floats(min_value=0.8, max_value=1.2),
        ),
        st.tuples(
            st.just("bar"),
            st.sampled_from(["AAA", "BBB"]),
            _prices,
            st.floats(min_value=0, max_value=0.1),
            st.integers(min_value=0, max_value=2_000),
        ),
        st.tuples(st.just("restart")),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(steps=_steps)
def test_cash_and_positions_follow_the_fills_exactly(steps: list[tuple]) -> None:
    db = open_writer(":memory:")
    paper = PaperSettings(slippage_bps=3, slippage_range_share=0.05, max_participation=0.3)
    b = PaperBroker(db, paper, starting_cash=50_000)
    expected_cash, expected = 50_000.0, {"AAA": 0.0, "BBB": 0.0}
    reports = [b.on_bar(flat(0, 100, 1_000, symbol)) for symbol in expected]
    reports = [r for rs in reports for r in rs]
    for ts, step in enumerate(steps, start=1):
        if step[0] == "order":
            _, symbol, side, qty, kind, away = step
            last = b.last_bar(symbol)
            assert last is not None
            price = last.close * away
            reports += b.submit(
                order(f"o{ts}", side, qty, kind, limit=price, stop=price, symbol=symbol), now=ts
            )
        elif step[0] == "bar":
            _, symbol, close, spread, volume = step
            reports += b.on_bar(
                Bar(symbol, ts, close, close * (1 + spread), close * (1 - spread), close, volume)
            )
        else:
            b = PaperBroker(db, paper, starting_cash=50_000)
    for r in reports:
        if r.fill is not None:
            f = r.fill
            expected_cash += -(f.side.sign * f.qty * f.price) - f.commission
            expected[f.symbol] += f.side.sign * f.qty
    account = b.account()
    assert account.cash == pytest.approx(expected_cash, rel=1e-12, abs=1e-9)
    assert {s: account.positions.get(s, 0.0) for s in expected} == expected
    db.close()


def test_a_different_starting_cash_on_an_existing_account_is_refused(db: Database) -> None:
    broker(db).on_bar(flat(1, 50))
    with pytest.raises(StartingCashChanged, match=r"began with 100,000\.00"):
        PaperBroker(db, FREE, starting_cash=50_000)


def test_a_transfer_moves_the_paper_cash_and_survives_a_restart(db: Database) -> None:
    broker(db).transfer(-2_500.0, now=5)
    assert PaperBroker(db, FREE, CASH).account().cash == CASH - 2_500.0


# ---- a write's rows, written together at its end ------------------------------------------


def bracket(entry_qty: float = 100, entry_side: Side = Side.BUY) -> list[Order]:
    """A market entry with its resting stop and target, closing the other way."""
    closing = entry_side.opposite
    common = {"symbol": "AAA", "purpose": Purpose.EXIT, "parent_id": "e1", "oco_group": "g1"}
    return [
        order("e1", entry_side, entry_qty),
        Order("g1-S", side=closing, qty=100, order_type=OrderType.STOP, stop_price=45, **common),
        Order("g1-T", side=closing, qty=100, order_type=OrderType.LIMIT, limit_price=55, **common),
    ]


def book_rows(db: Database) -> tuple[list[tuple], list[tuple], list[tuple], tuple]:
    """Every row of the broker's tables but its bars, in a stable order."""
    orders = db.execute("SELECT * FROM paper_orders ORDER BY client_order_id").fetchall()
    execs = db.execute("SELECT * FROM paper_executions ORDER BY exec_id").fetchall()
    positions = db.execute("SELECT * FROM paper_positions ORDER BY symbol").fetchall()
    account = db.execute("SELECT cash, order_seq, exec_seq FROM paper_account").fetchone()
    return orders, execs, positions, account


def working(b: PaperBroker) -> list[tuple]:
    """The working orders as the broker stores them."""
    return sorted(
        (o.client_order_id, o.broker_order_id, o.status, float(o.qty), o.filled_qty,
         o.avg_price, o.stop_price, o.limit_price, o.parent_id, o.oco_group)
        for o in b.working_orders()
    )  # fmt: skip


def agrees_with_its_database(b: PaperBroker, db: Database) -> None:
    """What the broker holds in memory is what a new broker reads from its file."""
    fresh = broker(db)
    assert b.account() == fresh.account()
    assert working(b) == working(fresh)
    assert b.last_bar("AAA") == fresh.last_bar("AAA")
    assert b._book.order_seq == fresh._book.order_seq
    assert b._book.exec_seq == fresh._book.exec_seq


def test_a_bracket_in_the_callers_transaction_continues_exactly_after_a_restart(
    path: Path,
) -> None:
    first_db = open_writer(path)
    first = broker(first_db)
    first.on_bar(flat(1, 50))
    first_db.conn.execute("BEGIN")
    reports = first.submit_bracket(bracket(), now=2)
    first_db.conn.execute("COMMIT")
    assert statuses(reports)[-1] is OrderStatus.ACCEPTED
    agrees_with_its_database(first, first_db)
    first_db.conn.close()

    second_db = open_writer(path)
    second = broker(second_db)
    assert {o.client_order_id for o in second.working_orders()} == {"g1-S", "g1-T"}
    stop, target = second.on_bar(bar(3, 50, 50, 44, 46))  # through the stop
    assert (stop.client_order_id, stop.status) == ("g1-S", OrderStatus.FILLED)
    assert stop.fill.exec_id == "paper-x2"  # the entry's was x1: none reused
    assert (target.client_order_id, target.status) == ("g1-T", OrderStatus.CANCELED)
    assert second.working_orders() == [] and second.account().positions == {}
    agrees_with_its_database(second, second_db)
    second_db.conn.close()


def test_an_order_inserted_and_canceled_in_one_write_is_stored_as_it_ended(
    db: Database,
) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("s0", Side.SELL, 100), now=2)  # short 100: the entry below only covers it
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    reports = b.submit_bracket(bracket(), now=3)
    db.conn.set_trace_callback(None)
    written = [s.split()[:3] for s in statements if "paper_orders" in s and "SELECT" not in s]
    assert written == [["INSERT", "INTO", "paper_orders"]] * 3  # final rows, no UPDATE
    assert [(r.client_order_id, r.status) for r in reports[-2:]] == [
        ("g1-S", OrderStatus.CANCELED),
        ("g1-T", OrderStatus.CANCELED),
    ]
    rows = db.execute(
        "SELECT client_order_id, status, detail, created_at, updated_at FROM paper_orders"
        " WHERE oco_group = 'g1' ORDER BY client_order_id"
    ).fetchall()
    detail = "canceled: no position left to close (OCO)"
    assert rows == [("g1-S", "CANCELED", detail, 3, 3), ("g1-T", "CANCELED", detail, 3, 3)]
    agrees_with_its_database(b, db)


def test_a_failed_write_rolls_back_its_rows_and_reloads_memory(db: Database) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("m1", qty=10), now=2)
    before = book_rows(db)
    db.execute(
        "CREATE TRIGGER no_fills BEFORE INSERT ON paper_executions"
        " BEGIN SELECT RAISE(ABORT, 'no more fills'); END"
    )
    db.conn.execute("BEGIN")
    db.conn.execute("INSERT INTO paper_bars (symbol, ts) VALUES ('ZZZ', 1)")  # the caller's
    with pytest.raises(sqlite3.IntegrityError, match="no more fills"):
        b.submit_bracket(bracket(), now=3)
    assert db.conn.in_transaction  # only the broker's savepoint was rolled back
    db.conn.execute("COMMIT")
    db.execute("DROP TRIGGER no_fills")
    assert book_rows(db) == before
    assert db.execute("SELECT count(*) FROM paper_bars WHERE symbol = 'ZZZ'").fetchone() == (1,)
    assert b.account() == broker(db).account()
    assert b.lookup("e1") is None and b.working_orders() == []
    agrees_with_its_database(b, db)
    assert b.submit(order("m2", qty=10), now=4)[-1].fill.exec_id == "paper-x2"


@pytest.mark.parametrize("resting", [False, True])
def test_a_bar_that_fails_to_be_stored_is_not_the_last_bar(db: Database, resting: bool) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    if resting:  # the bar goes through the exchange (a write), else it is stored at once
        b.submit(order("l1", qty=10, kind=OrderType.LIMIT, limit=40), now=2)
    db.execute(
        "CREATE TRIGGER no_bars BEFORE INSERT ON paper_bars"
        " BEGIN SELECT RAISE(ABORT, 'no more bars'); END"
    )
    db.conn.execute("BEGIN")
    with pytest.raises(sqlite3.IntegrityError, match="no more bars"):
        b.on_bar(flat(3, 30))  # through the limit, when resting
    db.conn.execute("COMMIT")
    assert b.last_bar("AAA") == flat(1, 50)
    agrees_with_its_database(b, db)


def test_a_cancel_in_the_callers_transaction_is_one_statement_without_a_savepoint(
    db: Database,
) -> None:
    b = broker(db)
    b.on_bar(flat(1, 50))
    b.submit(order("l1", qty=10, kind=OrderType.LIMIT, limit=40), now=2)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    db.conn.execute("BEGIN")
    b.cancel("l1", now=3)
    db.conn.execute("COMMIT")
    db.conn.set_trace_callback(None)
    assert [s.split()[0] for s in statements] == ["BEGIN", "UPDATE", "COMMIT"]
    assert db.execute("SELECT status FROM paper_orders").fetchone() == ("CANCELED",)


def test_an_order_finished_early_in_a_write_is_known_until_its_row_is_written(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paper_book, "_DONE_KEPT", 0)  # forget finished orders at once
    b = broker(db)
    b.on_bar(flat(1, 50))
    reports = b.submit_bracket(bracket(), now=2)
    # The stop and target ask for their filled entry before its row is written.
    last = {r.client_order_id: r.status for r in reports}
    accepted = OrderStatus.ACCEPTED
    assert last == {"e1": OrderStatus.FILLED, "g1-S": accepted, "g1-T": accepted}
    assert b.lookup("e1").status is OrderStatus.FILLED  # from its row, once written
