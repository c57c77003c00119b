from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from engine.domain import ExitReason, Fill, Side
from engine.execution.portfolio import (
    EquitySnapshot,
    Portfolio,
    write_position,
    write_snapshot,
    write_trade,
)
from store.db import open_writer
from store.schema import migrate

_exec_ids = count(1)


def fill(
    side: Side,
    qty: float,
    price: float,
    *,
    symbol: str = "AAA",
    ts: int = 1_000,
    commission: float = 0.0,
    ref_price: float | None = None,
) -> Fill:
    return Fill("C1", f"X{next(_exec_ids)}", symbol, side, ts, qty, price, commission, ref_price)


@pytest.fixture
def db(tmp_path) -> Iterator[Database]:
    database = open_writer(tmp_path / "cockpit.db")
    yield database
    database.close()


def test_a_buy_debits_notional_and_commission_from_cash():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0, commission=1.5))
    assert book.cash == pytest.approx(10_000 - 1_000 - 1.5)


def test_adding_to_a_position_weights_the_average_price():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    effect = book.apply_fill(fill(Side.BUY, 30, 104.0))
    assert effect.position is not None
    assert effect.position.qty == 40
    assert effect.position.avg_price == pytest.approx(103.0)


def test_reducing_keeps_the_average_and_realizes_net_of_commission():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    effect = book.apply_fill(fill(Side.SELL, 4, 110.0, commission=1.0))
    assert effect.position is not None
    assert (effect.position.qty, effect.position.avg_price) == (6, 100.0)
    assert effect.realized == pytest.approx(4 * 10 - 1.0)
    assert effect.trade is None


def test_a_short_covered_lower_is_a_profit():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.SELL, 5, 50.0))
    effect = book.apply_fill(fill(Side.BUY, 5, 45.0))
    assert effect.position is None
    assert effect.trade is not None
    assert effect.trade.side is Side.SELL
    assert effect.trade.pnl == pytest.approx(25.0)


def test_flipping_through_zero_closes_the_trade_and_reopens_at_the_fill_price():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0, ts=1))
    effect = book.apply_fill(fill(Side.SELL, 15, 90.0, ts=2, commission=3.0))
    assert effect.trade is not None
    assert effect.trade.qty == 10
    assert effect.trade.pnl == pytest.approx(-100.0 - 2.0)  # 10 of the 15 pay 2 of the 3
    assert effect.position is not None
    assert (effect.position.qty, effect.position.avg_price) == (-5, 90.0)
    assert effect.position.opened_at == 2
    assert effect.position.realized_pnl == pytest.approx(-1.0)


def test_a_round_trip_reports_weighted_prices_commissions_and_slippage():
    book = Portfolio(100_000)
    book.apply_fill(fill(Side.BUY, 10, 101.0, ts=1, commission=1.0, ref_price=100.0))
    book.apply_fill(fill(Side.BUY, 10, 103.0, ts=2, commission=1.0, ref_price=103.0))
    book.apply_fill(fill(Side.SELL, 5, 110.0, ts=3, commission=1.0, ref_price=110.5))
    trade = book.apply_fill(fill(Side.SELL, 15, 106.0, ts=4, commission=1.0)).trade
    assert trade is not None
    assert (trade.side, trade.qty, trade.entry_ts, trade.exit_ts) == (Side.BUY, 20, 1, 4)
    assert trade.entry_price == pytest.approx(102.0)
    assert trade.exit_price == pytest.approx((5 * 110 + 15 * 106) / 20)
    assert trade.commission == pytest.approx(4.0)
    assert trade.pnl == pytest.approx(5 * 8 + 15 * 4 - 4.0)
    assert trade.slippage == pytest.approx(10 * 1.0 + 5 * 0.5)


def test_float_dust_closes_the_position():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 0.1, 100.0))
    book.apply_fill(fill(Side.BUY, 0.2, 100.0))
    effect = book.apply_fill(fill(Side.SELL, 0.3, 100.0))
    assert effect.position is None
    assert book.positions == {}


def test_mark_values_long_and_short_positions_and_exposures():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0, symbol="AAA"))
    book.apply_fill(fill(Side.SELL, 20, 50.0, symbol="BBB"))
    snap = book.mark({"AAA": 110.0, "BBB": 55.0}, now=5)
    assert snap.unrealized == pytest.approx(100.0 - 100.0)
    assert snap.equity == pytest.approx(10_000 - 1_000 + 1_000 + 1_100 - 1_100)
    assert snap.gross_exposure == pytest.approx(1_100 + 1_100)
    assert snap.net_exposure == pytest.approx(0.0)


def test_drawdown_is_the_fraction_below_the_running_peak():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 100, 100.0))
    book.mark({"AAA": 120.0}, now=1)  # equity 12_000
    snap = book.mark({"AAA": 90.0}, now=2)  # equity 9_000
    assert snap.peak == pytest.approx(12_000)
    assert snap.drawdown == pytest.approx(0.25)


def test_a_missing_or_bad_mark_keeps_the_last_price():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    book.mark({"AAA": 105.0}, now=1)
    assert book.mark({"AAA": float("nan")}, now=2).unrealized == pytest.approx(50.0)
    assert book.mark({}, now=3).unrealized == pytest.approx(50.0)


def test_marking_again_on_the_same_prices_and_time_gives_the_same_snapshot():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    first = book.mark({"AAA": 105.0}, now=1)
    assert book.mark({"AAA": 105.0}, now=1) is first


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.apply_fill(fill(Side.BUY, 5, 104.0)),
        lambda b: b.move_cash(500.0),
        lambda b: b.set_protection("AAA", 90.0, 120.0),
    ],
    ids=["fill", "cash movement", "protection"],
)
def test_a_change_to_the_book_between_marks_is_valued_afresh(change):
    book, fresh = Portfolio(10_000), Portfolio(10_000)
    for b in (book, fresh):
        b.apply_fill(fill(Side.BUY, 10, 100.0))
    book.mark({"AAA": 105.0}, now=1)
    for b in (book, fresh):
        change(b)
    assert book.mark({"AAA": 105.0}, now=1) == fresh.mark({"AAA": 105.0}, now=1)


def test_a_new_price_or_time_is_valued_afresh():
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    book.mark({"AAA": 105.0}, now=1)
    assert book.mark({"AAA": 106.0}, now=1).unrealized == pytest.approx(60.0)
    assert book.mark({"AAA": 106.0}, now=2).ts == 2


def test_a_bad_mark_warns_every_time(caplog):
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    prices = {"AAA": float("nan")}
    for _ in range(2):
        book.mark(prices, now=1)
    assert sum("ignored mark" in r.message for r in caplog.records) == 2


def test_protection_is_set_on_the_open_position_only():
    book = Portfolio(10_000)
    assert book.set_protection("AAA", 95.0, 110.0) is False
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    assert book.set_protection("AAA", 95.0, 110.0) is True
    position = book.position("AAA")
    assert position is not None
    assert (position.stop, position.target) == (95.0, 110.0)


def test_bad_fills_are_refused_before_they_touch_cash():
    book = Portfolio(10_000)
    with pytest.raises(ValueError, match="price"):
        book.apply_fill(fill(Side.BUY, 10, float("nan")))
    assert book.cash == 10_000


def test_write_position_upserts_then_deletes_the_row_when_flat(db):
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    write_position(db, book, "AAA", now=1)
    book.apply_fill(fill(Side.BUY, 10, 110.0))
    write_position(db, book, "AAA", now=2)
    assert [(r["qty"], r["avg_price"]) for r in db["positions"].rows] == [(20, 105.0)]
    book.apply_fill(fill(Side.SELL, 20, 110.0))
    write_position(db, book, "AAA", now=3)
    assert db["positions"].count == 0


def test_write_trade_stores_every_column_of_the_round_trip(db):
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.SELL, 10, 100.0, ts=1, commission=1.0, ref_price=100.5))
    book.set_protection("AAA", 103.0, 94.0)
    trade = book.apply_fill(fill(Side.BUY, 10, 95.0, ts=2, commission=1.0)).trade
    assert trade is not None
    row_id = write_trade(db, trade, ExitReason.SIGNAL)
    assert db["trades"].get(row_id) == {
        "id": row_id,
        "symbol": "AAA",
        "side": "SELL",
        "qty": 10.0,
        "entry_ts": 1,
        "exit_ts": 2,
        "entry_price": 100.0,
        "exit_price": 95.0,
        "pnl": 48.0,
        "commission": 2.0,
        "slippage": 5.0,
        "exit_reason": "signal",
        "stop": 103.0,
        "target": 94.0,
    }


def test_write_snapshot_stores_equity_and_marks_positions(db):
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    write_position(db, book, "AAA", now=1)
    snap = book.mark({"AAA": 103.0}, now=7)
    write_snapshot(db, book, snap)
    assert EquitySnapshot(**db["equity"].get(7)) == snap
    position = db["positions"].get("AAA")
    assert (position["last_price"], position["unrealized_pnl"]) == (103.0, 30.0)


def test_every_mark_runs_the_same_statements(db):
    # Fixed statement text lets SQLite reuse its compiled statements: a mark runs
    # every cycle, inside the cycle's transaction.
    book = Portfolio(10_000)
    book.apply_fill(fill(Side.BUY, 10, 100.0))
    runs: list[list[str]] = []
    db.conn.execute("BEGIN")
    for now in (7, 8):
        runs.append([])
        db.conn.set_trace_callback(runs[-1].append)
        write_snapshot(db, book, book.mark({"AAA": 100.0 + now}, now=now))
        db.conn.set_trace_callback(None)
    db.conn.commit()
    assert [s.split(" VALUES")[0] for s in runs[0]] == [s.split(" VALUES")[0] for s in runs[1]]
    assert any(s.startswith("SAVEPOINT") for s in runs[0])


def _record(db: Database, f: Fill) -> None:
    db["fills"].insert(
        {
            "client_order_id": f.client_order_id,
            "exec_id": f.exec_id,
            "ts": f.ts,
            "symbol": f.symbol,
            "side": f.side.value,
            "qty": f.qty,
            "price": f.price,
            "commission": f.commission,
            "ref_price": f.ref_price,
        }
    )


def test_load_rebuilds_cash_positions_protection_and_peak(db):
    book = Portfolio(10_000)
    for f in [
        fill(Side.BUY, 10, 100.0, commission=1.0),
        fill(Side.SELL, 5, 50.0, symbol="BBB", commission=1.0),
    ]:
        _record(db, f)
        book.apply_fill(f)
    book.set_protection("AAA", 90.0, 130.0)
    write_snapshot(db, book, book.mark({"AAA": 150.0, "BBB": 50.0}, now=1))
    loaded = Portfolio.load(db, 10_000)
    assert loaded.cash == pytest.approx(book.cash)
    assert loaded.positions == book.positions
    assert loaded.peak == pytest.approx(book.peak)
    assert loaded.realized == pytest.approx(book.realized)


# -- invariants over random fill sequences --------------------------------------

fills_strategy = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB"]),
        st.sampled_from(list(Side)),
        st.integers(1, 50).map(float) | st.floats(0.01, 50, allow_nan=False),
        st.floats(1.0, 500.0, allow_nan=False),
        st.floats(0.0, 5.0, allow_nan=False),
    ),
    max_size=40,
)
marks_strategy = st.fixed_dictionaries({"AAA": st.floats(1.0, 500.0), "BBB": st.floats(1.0, 500.0)})


def _replay(rows) -> tuple[Portfolio, list[Fill], list[float]]:
    book = Portfolio(100_000)
    fills, trade_pnls = [], []
    for i, (symbol, side, qty, price, commission) in enumerate(rows):
        f = fill(side, qty, price, symbol=symbol, ts=i, commission=commission)
        fills.append(f)
        trade = book.apply_fill(f).trade
        if trade:
            trade_pnls.append(trade.pnl)
    return book, fills, trade_pnls


@given(fills_strategy)
def test_every_position_is_the_signed_sum_of_its_fills(rows):
    book, fills, _ = _replay(rows)
    for symbol in ("AAA", "BBB"):
        signed = sum(f.side.sign * f.qty for f in fills if f.symbol == symbol)
        position = book.position(symbol)
        assert (position.qty if position else 0.0) == pytest.approx(signed, abs=1e-6)


@given(fills_strategy, marks_strategy)
def test_equity_is_cash_plus_marked_positions_and_reconciles_with_pnl(rows, marks):
    book, _, _ = _replay(rows)
    snap = book.mark(marks, now=0)
    marked = sum(p.qty * marks[s] for s, p in book.positions.items())
    assert snap.equity == pytest.approx(snap.cash + marked, abs=1e-6)
    assert book.realized_gross + snap.unrealized - book.commissions == pytest.approx(
        snap.equity - book.starting_cash, abs=1e-6
    )
    assert snap.realized + snap.unrealized == pytest.approx(
        snap.equity - book.starting_cash, abs=1e-6
    )


@given(fills_strategy)
def test_realized_pnl_is_split_between_closed_trades_and_open_positions(rows):
    book, _, trade_pnls = _replay(rows)
    open_realized = sum(p.realized_pnl for p in book.positions.values())
    assert sum(trade_pnls) + open_realized == pytest.approx(book.realized, abs=1e-6)


@settings(max_examples=30)
@given(fills_strategy)
def test_load_from_the_fills_table_round_trips_the_portfolio(rows):
    db = Database(memory=True)
    migrate(db)
    book, fills, _ = _replay(rows)
    for f in fills:
        _record(db, f)
    loaded = Portfolio.load(db, 100_000)
    assert loaded.positions == book.positions
    assert loaded.cash == book.cash
    db.close()
