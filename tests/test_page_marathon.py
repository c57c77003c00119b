"""Marathon page: empty state, and cycle facts equal to the cycles table."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cockpit_support import app, execute, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/marathon.py"


def test_empty_database_shows_empty_state(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No cycles yet" in i.value for i in at.info)


def test_cycle_counts_equal_the_database(filled_db: Path) -> None:
    execute(
        filled_db, "UPDATE cycles SET error = 'boom' WHERE id IN (SELECT id FROM cycles LIMIT 2)"
    )
    at = app(filled_db, PAGE)
    cycles, failed = query(filled_db, "SELECT COUNT(*), COUNT(error) FROM cycles")[0]
    m = {x.label: x.value for x in at.metric}
    assert m["Cycles run"] == f"{cycles:,}"
    assert m["Failed"] == f"{failed:,}"


def test_readiness_fails_a_short_marathon(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    table = next(d.value for d in at.dataframe if "check" in d.value.columns)
    row = table[table["check"] == "Marathon length"].iloc[0]
    assert row["result"] == "FAIL"


def test_hours_without_cycles_are_marked_as_engine_downtime(filled_db: Path) -> None:
    first = query(filled_db, "SELECT MIN(started_at) FROM cycles")[0][0]
    for hours in (12, 11):  # two cycles well before the run, then nothing for hours
        execute(
            filled_db,
            "INSERT INTO cycles (started_at, duration_ms) VALUES (?, 5.0)",
            (first - hours * 3_600_000,),
        )
    at = app(filled_db, PAGE)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    cycle_chart = next(s for s in specs if any(t.get("name") == "p50" for t in s["data"]))
    shapes = cycle_chart["layout"].get("shapes", [])
    assert [s["type"] for s in shapes] == ["rect"]
