"""load_risk_facts reads today's trades, orders, fills and equity from a real state store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from engine.domain import TradingState
from engine.market.calendar import TradingDay
from engine.risk import load_risk_facts
from engine.risk.daily import DailyFacts
from engine.risk.facts import DAY_MS
from store.db import open_writer

DAY = 1_699_920_000_000  # a UTC midnight
NOW = DAY + 10 * 3_600_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_writer(tmp_path / "facts.db")
    yield database
    database.conn.close()


def trade(db: Database, symbol: str, exit_ts: int, pnl: float) -> None:
    db["trades"].insert({"symbol": symbol, "side": "BUY", "qty": 1, "exit_ts": exit_ts, "pnl": pnl})


def order(db: Database, coid: str, created_at: int, purpose: str = "ENTRY", **kw: object) -> None:
    row = {"client_order_id": coid, "symbol": "A", "side": "BUY", "qty": 1, "type": "MARKET"}
    row |= {"status": "FILLED", "filled_qty": 1, "purpose": purpose, "created_at": created_at}
    db["orders"].insert(row | kw)


def test_empty_store_gives_neutral_facts(db: Database) -> None:
    facts = load_risk_facts(db.conn, NOW)
    assert (facts.trades_today, facts.consecutive_losses, facts.peak_equity) == (0, 0, None)


def test_realized_today_sums_only_todays_trades(db: Database) -> None:
    trade(db, "A", DAY - 1, -500.0)
    trade(db, "A", DAY + 1, 200.0)
    trade(db, "B", DAY + 2, -50.0)
    assert load_risk_facts(db.conn, NOW).realized_today == pytest.approx(150.0)


def test_losing_streak_counts_back_to_the_last_win(db: Database) -> None:
    for i, pnl in enumerate([-1.0, 5.0, -2.0, -3.0, -4.0]):
        trade(db, "A", DAY + i, pnl)
    assert load_risk_facts(db.conn, NOW).consecutive_losses == 3


def test_losing_streak_restarts_at_a_state_change(db: Database) -> None:
    for i in range(3):
        trade(db, "A", DAY + i, -1.0)
    db["engine"].insert({"id": 1, "trading_state": "ACTIVE", "state_changed_market_at": DAY + 1})
    assert load_risk_facts(db.conn, NOW).consecutive_losses == 1


def test_losing_streak_belongs_to_the_trading_day(db: Database) -> None:
    for i in range(3):
        trade(db, "A", DAY - 10 - i, -1.0)
    trade(db, "A", DAY + 5, -1.0)
    assert load_risk_facts(db.conn, NOW).consecutive_losses == 1


def test_trades_today_follow_the_exchange_session_not_the_utc_date(db: Database) -> None:
    # 2024-07-08: XNYS closes 20:00 UTC; an entry at 21:00 belongs to Tuesday's session.
    monday_close = 1_720_468_800_000
    order(db, "c1", monday_close - 3_600_000)
    order(db, "c2", monday_close + 3_600_000)
    tuesday_noon = monday_close + 16 * 3_600_000
    facts = load_risk_facts(db.conn, tuesday_noon, day=TradingDay("XNYS"))
    assert facts.trades_today == 1 and facts.day_start == monday_close


def test_a_24_7_day_starts_at_the_configured_boundary(db: Database) -> None:
    order(db, "c1", DAY + 20 * 3_600_000)  # 20:00 UTC
    order(db, "c2", DAY + 22 * 3_600_000)  # 22:00 UTC, after a 21:00 boundary
    late = DAY + 23 * 3_600_000
    assert load_risk_facts(db.conn, late, day=TradingDay(None, 21 * 60)).trades_today == 1
    assert load_risk_facts(db.conn, late).trades_today == 2


def test_trading_state_comes_from_the_engine_row(db: Database) -> None:
    db["engine"].insert({"id": 1, "trading_state": "HALTED"})
    assert load_risk_facts(db.conn, NOW).trading_state is TradingState.HALTED


def test_last_exit_per_symbol(db: Database) -> None:
    trade(db, "A", NOW - 5_000, 1.0)
    trade(db, "A", NOW - 1_000, 1.0)
    trade(db, "B", NOW - 3_000, 1.0)
    assert load_risk_facts(db.conn, NOW).last_exit_at == {"A": NOW - 1_000, "B": NOW - 3_000}


def test_trades_today_counts_entries_filled_or_working_not_rejected_or_exits(db: Database) -> None:
    order(db, "1", DAY + 1)
    order(db, "2", DAY + 2, status="ACCEPTED", filled_qty=0)
    order(db, "3", DAY + 3, status="REJECTED", filled_qty=0)
    order(db, "4", DAY + 4, purpose="EXIT")
    order(db, "5", DAY - 1)
    assert load_risk_facts(db.conn, NOW).trades_today == 2


def test_recent_order_times_cover_the_last_minute(db: Database) -> None:
    for i, ts in enumerate([NOW - 60_000, NOW - 59_999, NOW - 1, NOW + 5]):
        order(db, str(i), ts)
    assert load_risk_facts(db.conn, NOW).order_times == (NOW - 59_999, NOW - 1)


def test_orders_and_fills_today(db: Database) -> None:
    order(db, "1", DAY - 1)
    order(db, "2", DAY + 1)
    db["fills"].insert_all([{"exec_id": "e1", "ts": DAY + 2}, {"exec_id": "e0", "ts": DAY - 2}])
    facts = load_risk_facts(db.conn, NOW)
    assert (facts.orders_today, facts.fills_today) == (1, 1)


def test_day_start_equity_is_the_last_snapshot_before_midnight(db: Database) -> None:
    db["equity"].insert_all(
        [
            {"ts": DAY - DAY_MS, "equity": 90.0},
            {"ts": DAY - 1, "equity": 100.0},
            {"ts": DAY + 1, "equity": 80.0},
        ]
    )
    assert load_risk_facts(db.conn, NOW).day_start_equity == 100.0


def test_day_start_equity_falls_back_to_the_first_snapshot_today(db: Database) -> None:
    db["equity"].insert_all([{"ts": DAY + 1, "equity": 80.0}, {"ts": DAY + 2, "equity": 70.0}])
    assert load_risk_facts(db.conn, NOW).day_start_equity == 80.0


def test_peak_equity_is_the_latest_running_peak(db: Database) -> None:
    rows = [(1.0, 5.0), (3.0, 5.0), (2.0, 4.0)]  # a peak reset (e.g. a new account) counts
    db["equity"].insert_all(
        [{"ts": DAY + i, "equity": e, "peak": p} for i, (e, p) in enumerate(rows)]
    )
    assert load_risk_facts(db.conn, NOW).peak_equity == 4.0


def test_peak_equity_without_a_running_peak_is_the_highest_snapshot(db: Database) -> None:
    db["equity"].insert_all([{"ts": DAY + i, "equity": e} for i, e in enumerate([1.0, 3.0, 2.0])])
    assert load_risk_facts(db.conn, NOW).peak_equity == 3.0


def test_context_carries_the_facts_and_the_live_figures(db: Database) -> None:
    trade(db, "A", NOW - 1_000, -1.0)
    ctx = load_risk_facts(db.conn, NOW).context(equity=5.0, last_prices={"A": 1.0})
    assert (ctx.equity, ctx.consecutive_losses, ctx.last_exit_at) == (5.0, 1, {"A": NOW - 1_000})


def test_daily_facts_start_a_new_day_in_memory_equal_to_the_store(db: Database) -> None:
    trade(db, "A", NOW - 1, -500.0)
    order(db, "E1", NOW - 2)
    db["equity"].insert({"ts": NOW - 1, "equity": 99_000.0, "peak": 100_000.0})
    daily = DailyFacts(db.conn, NOW)
    tomorrow = NOW + DAY_MS
    assert daily.facts(tomorrow) == load_risk_facts(db.conn, tomorrow)
    assert daily.facts(tomorrow).trades_today == 0


def test_daily_facts_read_a_new_day_stamped_ahead_of_them_from_the_store(db: Database) -> None:
    """Rows stamped after the clock (a restart behind the store) are in the next day."""
    tomorrow = NOW + DAY_MS
    order(db, "E2", tomorrow - 5)
    trade(db, "A", tomorrow - 1, -75.0)
    daily = DailyFacts(db.conn, NOW)
    facts = daily.facts(tomorrow)
    assert facts == load_risk_facts(db.conn, tomorrow)
    assert (facts.trades_today, facts.realized_today) == (1, -75.0)
