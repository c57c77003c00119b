"""Audit page: the chain's state against a database the engine wrote."""

from __future__ import annotations

from pathlib import Path

from engine.alerts import audit
from store.db import open_writer
from tests.cockpit_support import app, execute

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/audit.py"


def audited(db_file: Path, n: int = 3) -> Path:
    db = open_writer(db_file)
    for i in range(n):
        audit.append_audit(db, "cli:op", "state_change", {"i": i})
    db.conn.commit()
    audit.write_anchor(db.conn)
    db.conn.close()
    return db_file


def test_an_intact_chain_shows_verified_with_its_anchored_head(filled_db: Path) -> None:
    at = app(audited(filled_db), PAGE)
    assert not at.exception
    assert any("audit chain verified" in s.value for s in at.success)
    assert [m.value for m in at.metric][1] == [m.value for m in at.metric][2]


def test_an_edited_row_shows_broken_and_names_it(filled_db: Path) -> None:
    execute(audited(filled_db), "UPDATE audit SET actor = 'intruder' WHERE id = 1")
    at = app(filled_db, PAGE)
    assert not at.exception
    assert any("BROKEN at row 1" in e.value for e in at.error)


def test_no_database_shows_the_empty_state(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No audit trail yet" in i.value for i in at.info)
