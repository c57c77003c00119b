"""Orders page: blotter, filters, round trips and denied intents against the database."""

from __future__ import annotations

from pathlib import Path

from tests.cockpit_support import app, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/orders.py"


def test_empty_database_shows_empty_states(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No orders match" in i.value for i in at.info)


def test_blotter_counts_every_order(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    total = query(filled_db, "SELECT COUNT(*) FROM orders")[0][0]
    assert any(c.value.startswith(f"{total} orders match") for c in at.caption)


def test_symbol_filter_keeps_only_that_symbol(filled_db: Path) -> None:
    symbol = query(filled_db, "SELECT MIN(symbol) FROM orders")[0][0]
    at = app(filled_db, PAGE)
    at.multiselect(key="ord_symbols").select(symbol).run()
    blotter = next(d.value for d in at.dataframe if "client_order_id" in d.value.columns)
    expected = query(filled_db, "SELECT COUNT(*) FROM orders WHERE symbol = ?", (symbol,))[0][0]
    assert set(blotter["symbol"]) == {symbol}
    assert len(blotter) == expected


def test_round_trip_pnl_equals_the_trades_table(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    n, pnl = query(filled_db, "SELECT COUNT(*), SUM(pnl) FROM trades")[0]
    m = {x.label: x.value for x in at.metric}
    assert m["Round trips"] == str(n)
    assert m["Net P&L"] == f"{'+' if pnl > 0 else ''}{pnl:,.2f}".replace("-", "−")


def test_denied_intents_show_their_reasons(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    stored = query(filled_db, "SELECT reason FROM signals WHERE verdict = 'denied'")
    table = next(d.value for d in at.dataframe if "check_name" in d.value.columns)
    assert sorted(table["reason"]) == sorted(r[0] for r in stored)


def test_lifecycle_lists_the_order_events(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    chosen = at.selectbox(key="ord_pick").value
    events = query(
        filled_db,
        "SELECT status FROM order_events WHERE client_order_id = ? ORDER BY ts, id",
        (chosen,),
    )
    table = next(
        d.value for d in at.dataframe if list(d.value.columns) == ["ts", "status", "detail"]
    )
    assert table["status"].tolist() == [e[0] for e in events]


def test_round_trips_say_why_each_closed_and_at_which_levels(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    stored = query(filled_db, "SELECT exit_reason, stop, target FROM trades ORDER BY id DESC")
    table = next(d.value for d in at.dataframe if "exit_reason" in d.value.columns)
    shown = list(zip(table["exit_reason"], table["stop"], table["target"], strict=True))
    assert shown == [tuple(r) for r in stored]
