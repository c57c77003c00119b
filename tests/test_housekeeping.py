"""The daily job: pruning per-cycle facts and backing up, on a real engine database."""

from __future__ import annotations

import sqlite3

from engine.process.backup import take_backup
from engine.process.housekeeping import prune
from engine.process.runner import Engine
from tests.conftest import engine_settings


def test_old_cycle_facts_are_pruned_and_the_trading_record_is_kept(db_file, clock, open_engines):
    eng = Engine(engine_settings(), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    for _ in range(120):
        clock.advance(60_000)
        eng.step()
    assert eng.db is not None
    fills_before = eng.db.conn.execute("SELECT count(*) FROM fills").fetchone()[0]

    deleted = prune(eng.db, clock(), keep_days=1 / 24)  # keep the last hour

    conn = eng.db.conn
    oldest = conn.execute("SELECT min(started_at) FROM cycles").fetchone()[0]
    assert deleted["cycles"] > 0 and oldest >= clock() - 3_600_000
    assert conn.execute("SELECT min(ts) FROM regimes").fetchone()[0] >= clock() - 3_600_000
    assert conn.execute("SELECT count(*) FROM fills").fetchone()[0] == fills_before


def test_a_backup_is_a_complete_database_and_old_ones_rotate(
    db_file, clock, open_engines, tmp_path
):
    eng = Engine(engine_settings(), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    eng.step(5)
    assert eng.db is not None
    folder = tmp_path / "backups"
    for i in range(3 + 2):
        target = take_backup(eng.db.conn, db_file, folder, clock() + i * 1000, keep=3)

    copy = sqlite3.connect(target / "cockpit.db")
    cycles = copy.execute("SELECT count(*) FROM cycles").fetchone()[0]
    copy.close()
    assert cycles == eng.db.conn.execute("SELECT count(*) FROM cycles").fetchone()[0]
    assert len(list(folder.glob("cockpit-*"))) == 3


def test_pruning_a_replay_keeps_market_facts_by_market_time(db_file, clock, open_engines):
    eng = Engine(engine_settings(), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    eng.step(30)
    assert eng.db is not None and eng.trader is not None
    regimes = eng.db.conn.execute("SELECT count(*) FROM regimes").fetchone()[0]

    a_year_later = clock() + 365 * 86_400_000  # the wall clock, long after the market's bars
    prune(eng.db, a_year_later, keep_days=1, market_now=eng.trader.market_now)

    assert eng.db.conn.execute("SELECT count(*) FROM regimes").fetchone()[0] == regimes
    assert eng.db.conn.execute("SELECT count(*) FROM cycles").fetchone()[0] == 0
