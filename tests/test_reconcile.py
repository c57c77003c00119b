"""Reconciliation with the broker: missed executions adopted one by one, unexplained
positions halt trading with a CRITICAL alert, and the operator's audited adoption."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from ib_async import CommissionReport

from engine.__main__ import main
from engine.domain import Bar, ExecutionReport, Intent, OrderType, Purpose, Side, TradingState
from engine.domain import OrderStatus as Status
from engine.execution.brokers.ib import IbBroker
from engine.execution.oms import Oms
from engine.execution.portfolio import Portfolio
from engine.execution.reconcile import Difference, differences
from engine.market.feeds import SimulatedFeed
from engine.process.runner import Engine
from store.commands import CommandKind, CommandStatus, enqueue_command, get_command
from store.db import open_writer
from tests.conftest import FakeClock, engine_settings
from tests.test_ib_broker import SETTINGS, FakeIB, trade_of, wait_for


def adapter(fake: FakeIB) -> IbBroker:
    return IbBroker(
        SETTINGS,
        ib_factory=lambda: fake,
        clock=lambda: 1_000,
        backoff_seconds=(0.01, 0.05),
        poll_seconds=0.01,
        commission_grace_seconds=0.05,
    )


def rows(db_file: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_file)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_differences_name_unknown_missing_and_unequal_positions() -> None:
    found = differences({"AAPL": 100, "MSFT": 5}, {"AAPL": 150, "IBM": 20})
    assert found == [
        Difference("AAPL", 100, 150),
        Difference("IBM", 0, 20),
        Difference("MSFT", 5, 0),
    ]
    assert found[1].describe() == "IBM: broker holds 20, unknown to the engine"


def test_equal_books_have_no_difference() -> None:
    assert differences({"AAPL": 100.0}, {"AAPL": 100.0 + 1e-12}) == []


def test_a_restart_adopts_each_missed_ib_execution_with_its_own_exec_id(tmp_path: Path) -> None:
    fake, db = FakeIB(), open_writer(tmp_path / "cockpit.db")
    first = adapter(fake)
    clock = FakeClock()
    order = Oms(db, first, Portfolio.load(db, 100_000), clock).submit(
        Intent("AAPL", Side.BUY, 100, Purpose.ENTRY), 100.0
    )
    first.close()  # the engine is down while IB fills the order in two executions
    trade = trade_of(fake, order.client_order_id)
    e1 = fake.gateway_fill(trade, 60, 100.0, 1.0, offline=True)
    e2 = fake.gateway_fill(trade, 40, 100.2, 1.0, offline=True)
    second = adapter(fake)
    try:
        assert wait_for(lambda: second.connected)
        oms = Oms(db, second, Portfolio.load(db, 100_000), clock)
        oms.reconcile()
        oms.reconcile()  # a second pass repeats nothing
        booked = db.execute("SELECT exec_id, qty FROM fills ORDER BY id").fetchall()
        assert booked == [(e1, 60.0), (e2, 40.0)]
        assert oms.get(order.client_order_id).status is Status.FILLED  # type: ignore[union-attr]
    finally:
        second.close()
        db.close()


def paper_engine(db_file: Path, clock: FakeClock, opened: list[Engine]) -> Engine:
    eng = Engine(engine_settings(), db_file, clock=clock)
    eng.open()
    opened.append(eng)
    return eng


def test_a_position_the_engine_cannot_explain_halts_with_a_critical_alert(
    db_file: Path, clock: FakeClock, open_engines: list[Engine]
) -> None:
    paper_engine(db_file, clock, open_engines).close()
    conn = sqlite3.connect(db_file)
    conn.execute("INSERT INTO paper_positions (symbol, qty, updated_at) VALUES ('SIM-A', 50, 0)")
    conn.commit()
    conn.close()
    eng = paper_engine(db_file, clock, open_engines)
    assert eng.trader is not None and eng.trader.state is TradingState.HALTED
    [(severity, message)] = rows(
        db_file, "SELECT severity, message FROM alerts WHERE title LIKE 'Broker book differs%'"
    )
    assert severity == "CRITICAL" and "SIM-A: broker holds 50, unknown to the engine" in message


def test_the_operator_adopts_the_brokers_view_audited_and_still_halted(
    db_file: Path, clock: FakeClock, open_engines: list[Engine]
) -> None:
    paper_engine(db_file, clock, open_engines).close()
    conn = sqlite3.connect(db_file)
    conn.execute("INSERT INTO paper_positions (symbol, qty, updated_at) VALUES ('SIM-A', 50, 0)")
    conn.commit()
    conn.close()
    eng = paper_engine(db_file, clock, open_engines)
    command = enqueue_command(
        CommandKind.ADOPT_BROKER, {"reason": "manual trade in TWS"}, "cli:op", db=db_file
    )
    eng.step()
    done = get_command(command, db=db_file)
    assert done is not None and done.status is CommandStatus.DONE, done
    assert rows(db_file, "SELECT symbol, qty FROM positions") == [("SIM-A", 50.0)]
    [(actor, payload)] = rows(
        db_file, "SELECT actor, payload FROM audit WHERE action = 'adopt_broker'"
    )
    assert actor == "cli:op" and "manual trade in TWS" in payload
    assert eng.trader is not None and eng.trader.state is TradingState.HALTED


def test_adopting_needs_a_reason(db_file: Path) -> None:
    with pytest.raises(ValueError, match="reason"):
        enqueue_command(CommandKind.ADOPT_BROKER, {}, "cli:op", db=db_file)


def test_adopt_broker_from_the_cli_queues_the_command_with_its_reason(
    db_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["adopt-broker", "--db", str(db_file), "--reason", "checked", "--timeout", "0.1"])
    assert code == 3  # no engine answered; the command waits for it
    assert rows(db_file, "SELECT kind, args FROM commands") == [
        ("adopt_broker", '{"reason": "checked"}')
    ]


def test_a_reconnect_reconciles_and_a_trade_made_meanwhile_halts(
    db_file: Path, clock: FakeClock, open_engines: list[Engine]
) -> None:
    fake = FakeIB()
    broker = adapter(fake)
    settings = engine_settings(broker="ib")
    eng = Engine(
        settings, db_file, clock=clock, broker=broker, feed=SimulatedFeed(("AAPL",), 1), history={}
    )
    eng.open()
    open_engines.append(eng)
    fake.gateway_drop()
    fake._positions["AAPL"] = (trade_contract(), 25.0)  # someone traded in TWS meanwhile
    fake.reachable = True
    assert wait_for(lambda: broker.reconnects == 1 and broker.connected)
    eng.step()
    assert eng.trader is not None and eng.trader.state is TradingState.HALTED
    assert "after a reconnect" in eng.trader.state_reason


def trade_contract() -> Any:
    from ib_async import Stock

    return Stock("AAPL", "SMART", "USD")


def ib_engine(fake: FakeIB, db_file: Path, clock: FakeClock, opened: list[Engine]) -> Engine:
    broker = adapter(fake)
    assert wait_for(lambda: broker.connected)
    settings = engine_settings(broker="ib", symbols=("AAPL",))
    eng = Engine(
        settings, db_file, clock=clock, broker=broker, feed=SimulatedFeed(("AAPL",), 1), history={}
    )
    eng.open()
    opened.append(eng)
    return eng


def test_an_order_working_at_the_broker_unknown_to_the_engine_halts_and_is_canceled_on_adoption(
    db_file: Path, clock: FakeClock, open_engines: list[Engine]
) -> None:
    fake = FakeIB()
    manual = fake.gateway_manual_order("AAPL", "BUY", 10, 90.0)  # typed into TWS
    eng = ib_engine(fake, db_file, clock, open_engines)
    assert eng.trader is not None and eng.trader.state is TradingState.HALTED
    [(severity, message)] = rows(
        db_file, "SELECT severity, message FROM alerts WHERE title LIKE 'Broker book differs%'"
    )
    assert severity == "CRITICAL"
    assert "open order BUY 10 AAPL LMT (broker order 900000, no client order id)" in message
    command = enqueue_command(
        CommandKind.ADOPT_BROKER, {"reason": "my test order in TWS"}, "cli:op", db=db_file
    )
    eng.step()
    done = get_command(command, db=db_file)
    assert done is not None and done.status is CommandStatus.DONE, done
    assert manual.orderStatus.status == "PendingCancel"  # the cancel reached the gateway
    [(actor, payload)] = rows(
        db_file, "SELECT actor, payload FROM audit WHERE action = 'adopt_broker'"
    )
    assert actor == "cli:op" and "900000" in payload and "cancel sent" in payload
    assert eng.trader.state is TradingState.HALTED  # resuming is the operator's next step


def test_an_engine_order_the_broker_no_longer_works_is_settled_from_its_executions(
    tmp_path: Path,
) -> None:
    fake, db = FakeIB(), open_writer(tmp_path / "cockpit.db")
    first = adapter(fake)
    clock = FakeClock()
    limit = Intent("AAPL", Side.BUY, 100, Purpose.ENTRY, OrderType.LIMIT, limit_price=99.0)
    order = Oms(db, first, Portfolio.load(db, 100_000), clock).submit(limit, 100.0)
    first.close()  # while the engine is down: 40 fill, the rest is canceled at IB
    trade = trade_of(fake, order.client_order_id)
    e1 = fake.gateway_fill(trade, 40, 99.0, 1.0, offline=True)
    trade.orderStatus.status = "Cancelled"
    fake.forget_completed = True  # the gateway no longer lists the order, only its execution
    second = adapter(fake)
    try:
        assert wait_for(lambda: second.connected)
        oms = Oms(db, second, Portfolio.load(db, 100_000), clock)
        [still] = oms.reconcile()
        assert still.status is Status.PARTIALLY_FILLED  # its executions alone cannot close it
        [settled] = oms.settle_vanished(
            [o.client_order_id for o in second.open_orders()], "at start"
        )
        assert (settled.status, settled.filled_qty) == (Status.CANCELED, 40.0)
        assert db.execute("SELECT exec_id FROM fills").fetchall() == [(e1,)]
        assert oms.open_orders() == []
    finally:
        second.close()
        db.close()


def test_a_restart_adopts_executions_since_the_last_known_one_closed_orders_included(
    tmp_path: Path,
) -> None:
    fake, db = FakeIB(), open_writer(tmp_path / "cockpit.db")
    first = adapter(fake)
    clock = FakeClock()
    oms = Oms(db, first, Portfolio.load(db, 100_000), clock)
    entry = oms.submit(
        Intent("AAPL", Side.BUY, 100, Purpose.ENTRY, stop_loss=95.0, take_profit=110.0), 100.0
    )
    seen = fake.gateway_fill(trade_of(fake, entry.client_order_id), 100, 100.0, 1.0)

    def entry_filled() -> bool:
        oms.on_bar(Bar("AAPL", 1, 1, 1, 1, 1, 1))
        return oms.get(entry.client_order_id).status is Status.FILLED  # type: ignore[union-attr]

    assert wait_for(entry_filled)
    [stop] = [o for o in oms.protection("AAPL") if o.order_type is OrderType.STOP]
    # The engine had the stop closed (a cancel it believed done) when IB filled it.
    oms.apply(ExecutionReport(stop.client_order_id, Status.CANCELED, clock(), detail="test"))
    first.close()
    stop_trade = trade_of(fake, stop.client_order_id)
    missed = fake.gateway_fill(stop_trade, 100, 95.0, 1.0, offline=True)
    second = adapter(fake)
    try:
        assert wait_for(lambda: second.connected)
        oms = Oms(db, second, Portfolio.load(db, 100_000), clock)
        since = oms.last_execution_ts()
        unknown = oms.adopt_executions(second.executions_since(since), "at start")
        assert unknown == []
        assert fake.execution_filters[-1].time != ""  # asked from the last known one
        booked = db.execute("SELECT exec_id, qty FROM fills ORDER BY id").fetchall()
        assert booked == [(seen, 100.0), (missed, 100.0)]
        assert oms.get(stop.client_order_id).status is Status.CANCELED  # type: ignore[union-attr]
        assert "AAPL" not in Portfolio.load(db, 100_000).positions  # flat, as at IB
        # The same execution arriving live afterwards counts once.
        fake.loop.call_soon_threadsafe(  # type: ignore[union-attr]
            fake.commissionReportEvent.emit,
            stop_trade,
            stop_trade.fills[-1],
            CommissionReport(missed, 1.0, "USD"),
        )
        assert wait_for(lambda: bool(oms.on_bar(Bar("AAPL", 2, 1, 1, 1, 1, 1))))
        assert db.execute("SELECT count(*) FROM fills").fetchone() == (2,)
    finally:
        second.close()
        db.close()
