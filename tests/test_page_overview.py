"""Overview page: empty states, and figures equal to what the engine stored."""

from __future__ import annotations

from pathlib import Path

from tests.cockpit_support import app, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/overview.py"


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_empty_database_shows_empty_states(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No equity yet" in i.value for i in at.info)
    assert _metrics(at)["Equity"] == "—"


def test_equity_and_positions_equal_the_database(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    equity = query(filled_db, "SELECT equity FROM equity ORDER BY ts DESC LIMIT 1")[0][0]
    positions = query(filled_db, "SELECT COUNT(*) FROM positions WHERE qty != 0")[0][0]
    m = _metrics(at)
    assert m["Equity"] == f"{equity:,.0f}"
    assert m["Open positions"] == f"{positions} / 5"


def test_total_pnl_is_equity_against_the_first_mark(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    (first,), (last,) = (
        query(filled_db, "SELECT equity FROM equity ORDER BY ts LIMIT 1")[0],
        query(filled_db, "SELECT equity FROM equity ORDER BY ts DESC LIMIT 1")[0],
    )
    pnl = last - first
    assert _metrics(at)["Total P&L"] == f"{'+' if pnl > 0 else ''}{pnl:,.2f}".replace("-", "−")


def test_positions_table_lists_every_open_position(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    stored = sorted(r[0] for r in query(filled_db, "SELECT symbol FROM positions WHERE qty != 0"))
    table = next(d for d in at.dataframe if "unrealized_pnl" in d.value.columns)
    assert sorted(table.value["symbol"]) == stored
