"""Marathon page: empty state, and cycle facts equal to the cycles table."""

from __future__ import annotations

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
