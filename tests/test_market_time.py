"""The engine on market time: the bars' clock drives every trading rule, the wall
clock only liveness. Deterministic: a fake wall clock, simulated or recorded bars."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from engine.config import load_settings
from engine.process.runner import Engine
from tests.conftest import FakeClock

DATA = Path(__file__).parent / "data"
MINUTE = 60_000


def query(db_file: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_file)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def open_engine(db_file: Path, clock: FakeClock, opened: list[Any], **sections: Any) -> Engine:
    engine = {"cycle_seconds": 1.0, "symbols": 4, "seed": 11, "warmup_bars": 120}
    engine.update(sections.pop("engine", {}))
    eng = Engine(load_settings(engine=engine, **sections), db_file, clock=clock)
    eng.open()
    opened.append(eng)
    return eng


def run(eng: Engine, clock: FakeClock, cycles: int, wall_ms: int = 1_000) -> None:
    for _ in range(cycles):
        clock.advance(wall_ms)
        eng.step()


def test_the_trade_limit_lifts_by_itself_at_the_next_trading_day(db_file, clock, open_engines):
    # The fake wall clock starts at 00:00 UTC, so does the simulated market: the
    # 03:00 boundary comes after 180 one-minute bars, whatever the wall clock says.
    eng = open_engine(
        db_file,
        clock,
        open_engines,
        risk={"max_trades_per_day": 1, "day_boundary": "03:00"},
    )
    run(eng, clock, 360, wall_ms=50)

    boundary = clock.now - clock.now % 86_400_000 + 3 * 3_600_000
    entries = query(db_file, "SELECT created_at FROM orders WHERE purpose = 'ENTRY'")
    assert [ts < boundary for (ts,) in entries] == [True, False]
    lifted = query(db_file, "SELECT severity FROM alerts WHERE title LIKE 'Trade limit reset%'")
    assert lifted == [("INFO",)]
    assert query(db_file, "SELECT trading_state FROM engine") == [("ACTIVE",)]


def test_the_cooldown_counts_market_minutes_not_wall_seconds(db_file, clock, open_engines):
    eng = open_engine(db_file, clock, open_engines, risk={"cooldown_minutes": 5})
    run(eng, clock, 400, wall_ms=50)  # 400 market minutes in 20 wall seconds

    reentries = query(
        db_file,
        "SELECT o.created_at - max(t.exit_ts) FROM orders o JOIN trades t"
        " ON t.symbol = o.symbol AND t.exit_ts <= o.created_at"
        " WHERE o.purpose = 'ENTRY' GROUP BY o.id",
    )
    assert reentries, "some symbol traded again after an exit"
    assert min(gap for (gap,) in reentries) >= 5 * MINUTE


def test_a_restart_resumes_the_simulated_market_where_it_stopped(db_file, clock, open_engines):
    first = open_engine(db_file, clock, open_engines)
    run(first, clock, 30)
    (last_before,) = query(db_file, "SELECT max(ts) FROM bars WHERE symbol = 'SIM-A'")[0]
    first.close()
    open_engines.remove(first)

    clock.advance(3 * 86_400_000)  # three days later on the wall
    second = open_engine(db_file, clock, open_engines)
    run(second, clock, 1)

    (resumed,) = query(db_file, "SELECT max(ts) FROM bars WHERE symbol = 'SIM-A'")[0]
    assert resumed == last_before + MINUTE
    (market,) = query(db_file, "SELECT market_time FROM engine")[0]
    assert market == resumed


def test_a_replay_of_real_daily_bars_places_orders(tmp_path, db_file, clock, open_engines):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DATA / "GOOG.csv", data / "GOOG.csv")  # GOOG, 2004-08 to 2006-03
    eng = open_engine(
        db_file,
        clock,
        open_engines,
        engine={"feed": "csv", "data_dir": data, "bar_interval": "1d", "warmup_bars": 60},
        ml={"enabled": False},
    )
    while not eng.replay_done():
        run(eng, clock, 1, wall_ms=50)

    (entries,) = query(db_file, "SELECT count(*) FROM orders WHERE purpose = 'ENTRY'")[0]
    assert entries >= 5
    stale = query(db_file, "SELECT count(*) FROM signals WHERE check_name = 'health'")
    assert stale == [(0,)], "2005 bars are not stale against a 2026 wall clock"
    (first_order,) = query(db_file, "SELECT min(created_at) FROM orders")[0]
    assert first_order < 1_150_000_000_000, "orders are stamped in the bars' time (2004-2006)"


def test_replay_ends_with_a_summary_of_what_it_did(tmp_path, db_file, clock, open_engines):
    from store.status import replay_summary

    data = tmp_path / "data"
    data.mkdir()
    rows = (DATA / "GOOG.csv").read_text().splitlines()
    rows.insert(150, "2005-03-21,abc,1,1,1,1")  # one unreadable row among real ones
    (data / "GOOG.csv").write_text("\n".join(rows) + "\n")
    eng = open_engine(
        db_file,
        clock,
        open_engines,
        engine={"feed": "csv", "data_dir": data, "bar_interval": "1d", "warmup_bars": 60},
        ml={"enabled": False},
    )
    while not eng.replay_done():
        run(eng, clock, 1, wall_ms=50)

    summary = replay_summary(db_file)
    assert summary is not None
    assert (summary.bars, summary.rejected_rows) == (400, 1)
    assert summary.orders > 0 and summary.fills > 0
    assert "1 rows rejected" in summary.describe()
