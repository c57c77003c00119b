"""The portfolio's checkpoint: a load replays only the fills after it, and ends
exactly where a replay of every fill ends. A checkpoint that disagrees with the
fills it covers is set aside, and every fill replayed."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from engine.domain import Fill, Side
from engine.execution.portfolio import Portfolio, write_checkpoint
from engine.process.runner import Engine
from store.schema import migrate
from tests.conftest import FakeClock, engine_settings
from tests.test_portfolio import _record, fill, fills_strategy

CASH = 100_000.0


def _fills(rows: list[tuple[Any, ...]]) -> list[Fill]:
    return [
        fill(side, qty, price, symbol=symbol, ts=i, commission=commission, ref_price=price * 0.999)
        for i, (symbol, side, qty, price, commission) in enumerate(rows)
    ]


def _full_replay(db: Database) -> Portfolio:
    """The portfolio from every fill: the checkpoint set aside for the read."""
    db.conn.execute("SAVEPOINT full")
    db.conn.execute("DELETE FROM portfolio_checkpoint")
    try:
        return Portfolio.load(db, CASH)
    finally:
        db.conn.execute("ROLLBACK TO full")
        db.conn.execute("RELEASE full")


def _same(a: Portfolio, b: Portfolio) -> None:
    assert a.state() == b.state()
    assert a.positions == b.positions
    assert (a.cash, a.peak, a.movements) == (b.cash, b.peak, b.movements)
    for symbol in ("AAA", "BBB"):
        assert a.last_price(symbol) == b.last_price(symbol)


@settings(max_examples=60, deadline=None)
@given(fills_strategy, st.integers(0, 40), fills_strategy)
def test_checkpoint_and_the_fills_after_it_equal_a_replay_of_every_fill(rows, cut, more):
    db = Database(memory=True)
    migrate(db)
    fills = _fills(rows)
    cut = min(cut, len(fills))
    for f in fills[:cut]:
        _record(db, f)
    write_checkpoint(db, Portfolio.load(db, CASH), now=1)
    for f in fills[cut:]:
        _record(db, f)

    resumed, full = Portfolio.load(db, CASH), _full_replay(db)
    _same(resumed, full)
    assert resumed.fills_since_checkpoint == len(fills) - cut
    # And they go on alike: the same next fills close the same round trips.
    for f in _fills(more):
        assert resumed.apply_fill(f) == full.apply_fill(f)
    _same(resumed, full)
    db.close()


def test_a_live_portfolio_keeps_its_checkpoint_apart_from_deposits_and_marks(tmp_path: Path):
    db = Database(tmp_path / "c.db")
    migrate(db)
    live = Portfolio.load(db, CASH)
    for f in _fills([("AAA", Side.BUY, 10.0, 101.25, 1.0), ("BBB", Side.SELL, 4.0, 55.5, 0.5)]):
        _record(db, f)
        live.apply_fill(f)
    db["cash_movements"].insert({"ts": 5, "amount": 2_500.0, "actor": "test", "reason": "deposit"})
    live.move_cash(2_500.0)
    live.mark({"AAA": 104.0, "BBB": 50.0}, now=6)  # marks are not fills
    write_checkpoint(db, live, now=7)
    db.conn.commit()

    resumed = Portfolio.load(db, CASH)
    assert resumed.fills_since_checkpoint == 0
    assert resumed.cash == pytest.approx(live.cash, abs=1e-9)
    assert resumed.movements == 2_500.0
    assert resumed.positions == live.positions
    assert resumed.state() == _full_replay(db).state()


@pytest.mark.parametrize(
    "tamper",
    [
        "DELETE FROM fills WHERE id = 2",  # a fill it covers is gone
        "UPDATE fills SET price = price + 1 WHERE id = 1",  # or moved other cash
        "UPDATE portfolio_checkpoint SET state = '{\"version\": 1'",  # or it is unreadable
    ],
)
def test_a_checkpoint_that_disagrees_with_its_fills_is_set_aside(tmp_path, caplog, tamper):
    db = Database(tmp_path / "c.db")
    migrate(db)
    rows = [("AAA", Side.BUY, 10.0, 100.0, 1.0), ("AAA", Side.SELL, 4.0, 110.0, 1.0)]
    for f in _fills(rows):
        _record(db, f)
    write_checkpoint(db, Portfolio.load(db, CASH), now=1)
    db.conn.execute(tamper)
    db.conn.commit()

    with caplog.at_level(logging.WARNING, logger="engine.execution.portfolio"):
        resumed = Portfolio.load(db, CASH)
    assert "checkpoint at fill 2 set aside" in caplog.text
    assert resumed.fills_since_checkpoint == resumed.fills_applied  # every fill replayed
    db.conn.execute("DELETE FROM portfolio_checkpoint")
    assert resumed.state() == Portfolio.load(db, CASH).state()


def test_the_engine_keeps_a_checkpoint_and_a_restart_replays_no_fill(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("engine.process.jobs.CHECKPOINT_FILLS", 5)
    path = tmp_path / "engine.db"
    first = Engine(engine_settings(), path, clock=clock)
    first.open()
    assert first.trader is not None
    checkpoints = set()
    for _ in range(400):
        clock.advance(1000)
        first.step()
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT fill_id FROM portfolio_checkpoint").fetchone()
        if row is not None:
            checkpoints.add(row[0])
        if len(checkpoints) >= 3:
            break
    assert len(checkpoints) >= 3, "the heartbeat writes a checkpoint every few fills"
    assert first.trader.portfolio.fills_since_checkpoint < 5
    before = first.trader.portfolio
    first.close()  # and the stop keeps the rest

    with sqlite3.connect(path) as conn:
        kept, last = conn.execute(
            "SELECT fill_id, (SELECT MAX(id) FROM fills) FROM portfolio_checkpoint"
        ).fetchone()
    assert kept == last
    second = Engine(engine_settings(), path, clock=clock)
    second.open()
    try:
        assert second.trader is not None
        after = second.trader.portfolio
        assert after.fills_since_checkpoint == 0
        assert after.state() == before.state()
        assert after.positions == before.positions
    finally:
        second.close()
