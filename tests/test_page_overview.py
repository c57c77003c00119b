"""Overview page: empty states, and figures equal to what the engine stored."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import numpy as np

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


def test_an_outage_breaks_the_equity_line_and_is_marked_as_downtime(filled_db: Path) -> None:
    marks = [t for (t,) in query(filled_db, "SELECT ts FROM equity ORDER BY ts")]
    hole = marks[10:25]
    conn = sqlite3.connect(filled_db)
    conn.execute("DELETE FROM equity WHERE ts BETWEEN ? AND ?", (hole[0], hole[-1]))
    conn.commit()
    conn.close()
    at = app(filled_db, PAGE)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    shapes = spec["layout"].get("shapes", [])
    # one shaded stretch, drawn on both panels (equity and drawdown)
    assert {(s["type"], s["x0"], s["x1"]) for s in shapes} == {
        ("rect", shapes[0]["x0"], shapes[0]["x1"])
    }
    equity = next(t for t in spec["data"] if t["name"] == "equity")["y"]
    values = np.frombuffer(base64.b64decode(equity["bdata"]), dtype=equity["dtype"])
    assert np.isnan(values).sum() == 1  # the line stops at the outage instead of crossing it
