"""Starting cash is fixed for an account's life; deposits and withdrawals are audited
cash movements that neither P&L nor drawdown nor the kill switch take for trading."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from cockpit.overview_views import account_summary
from engine.domain import TradingState
from engine.execution.account import StartingCashChanged
from engine.process.runner import Engine
from store.commands import CommandStatus, enqueue_command, get_command
from tests.conftest import FakeClock, engine_settings


def start(db_file: Path, clock: FakeClock, opened: list[Any], **engine: Any) -> Engine:
    eng = Engine(engine_settings(**engine), db_file, clock=clock)
    eng.open()
    opened.append(eng)
    return eng


def run(eng: Engine, clock: FakeClock, cycles: int) -> None:
    for _ in range(cycles):
        clock.advance(1000)
        eng.step()


def test_a_restart_with_another_starting_cash_is_refused_and_says_what_to_do(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = start(db_file, clock, open_engines)
    run(eng, clock, 3)
    eng.close()
    with pytest.raises(StartingCashChanged) as refused:
        start(db_file, clock, open_engines, starting_cash=50_000)
    message = str(refused.value)
    assert "began with 100,000.00" in message and "new database" in message
    assert "deposit" in message


def test_the_same_starting_cash_continues_the_account(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = start(db_file, clock, open_engines)
    run(eng, clock, 3)
    eng.close()
    assert start(db_file, clock, open_engines).trader is not None


def withdraw(db_file: Path, eng: Engine, clock: FakeClock, amount: float) -> str:
    cid = enqueue_command("cash_movement", {"amount": amount, "reason": "test"}, db=db_file)
    run(eng, clock, 1)
    cmd = get_command(cid, db=db_file)
    assert cmd is not None
    assert cmd.status is CommandStatus.DONE, cmd.result
    return str(cmd.result)


def fill_count(db_file: Path) -> int:
    with closing(sqlite3.connect(db_file)) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM fills").fetchone()[0])


def cash_from_fills_after(db_file: Path, fill_id: int) -> float:
    with closing(sqlite3.connect(db_file)) as conn:
        row = conn.execute(
            "SELECT TOTAL(CASE side WHEN 'BUY' THEN -qty * price ELSE qty * price END"
            " - commission) FROM fills WHERE id > ?",
            (fill_id,),
        ).fetchone()
    return float(row[0])


def test_a_withdrawal_past_the_daily_loss_limit_is_not_a_loss(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = start(db_file, clock, open_engines)
    run(eng, clock, 3)
    assert eng.trader is not None
    before = account_summary(db_file, clock.now)
    fills_before = fill_count(db_file)
    withdraw(db_file, eng, clock, -20_000.0)  # 20%: far past the 6% daily loss limit
    run(eng, clock, 3)
    after = account_summary(db_file, clock.now)
    assert eng.trader.state is TradingState.ACTIVE
    traded = cash_from_fills_after(db_file, fills_before)  # the strategy may exit meanwhile
    assert after.cash == pytest.approx(before.cash - 20_000 + traded, abs=1e-6)
    assert after.drawdown == pytest.approx(before.drawdown, abs=0.01)
    assert after.total_pnl == pytest.approx(before.total_pnl, abs=2_000)


def test_a_deposit_is_audited_and_reaches_the_paper_account(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = start(db_file, clock, open_engines)
    run(eng, clock, 1)
    assert eng.trader is not None
    withdraw(db_file, eng, clock, 5_000.0)
    conn = sqlite3.connect(db_file)
    audit = conn.execute("SELECT action, payload FROM audit WHERE action = 'deposit'").fetchall()
    conn.close()
    assert len(audit) == 1 and '"amount": 5000.0' in audit[0][1]
    # The books and the paper account agree, so the deposit reached both.
    assert eng.trader.broker.account().cash == pytest.approx(eng.trader.portfolio.cash)
    assert eng.trader.portfolio.movements == 5_000.0


def test_a_withdrawal_without_a_reason_is_refused(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = start(db_file, clock, open_engines)
    cid = enqueue_command("cash_movement", {"amount": -10.0, "reason": " "}, db=db_file)
    run(eng, clock, 1)
    cmd = get_command(cid, db=db_file)
    assert cmd is not None and cmd.status is CommandStatus.FAILED
    assert "reason" in str(cmd.result)
