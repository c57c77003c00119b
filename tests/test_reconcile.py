"""Reconciliation with the broker: missed executions adopted one by one, unexplained
positions halt trading with a CRITICAL alert, and the operator's audited adoption."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.__main__ import main
from engine.domain import Intent, Purpose, Side, TradingState
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
        db_file, "SELECT severity, message FROM alerts WHERE title LIKE 'Broker positions differ%'"
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
