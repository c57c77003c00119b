"""Alerts page: log, filters and acknowledgement against the database."""

from __future__ import annotations

from pathlib import Path

from store.db import now_ms
from tests.cockpit_support import app, execute, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/alerts.py"


def _add_alerts(db: Path) -> None:
    for severity, source in [("HIGH", "risk"), ("WARNING", "feed"), ("CRITICAL", "risk")]:
        execute(
            db,
            "INSERT INTO alerts (ts, last_ts, severity, source, title, message)"
            " VALUES (?, ?, ?, ?, 'title', 'message')",
            (now_ms(), now_ms(), severity, source),
        )


def test_empty_database_shows_empty_state(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No alerts match" in i.value for i in at.info)


def test_severity_filter_shows_only_that_severity(filled_db: Path) -> None:
    _add_alerts(filled_db)
    at = app(filled_db, PAGE)
    at.multiselect(key="al_sev").select("CRITICAL").run()
    table = next(d.value for d in at.dataframe if "severity" in d.value.columns)
    assert table["severity"].tolist() == ["CRITICAL"]


def test_acknowledge_all_queues_one_command_and_writes_no_alert(filled_db: Path) -> None:
    _add_alerts(filled_db)
    open_before = query(filled_db, "SELECT COUNT(*) FROM alerts WHERE acked_at IS NULL")
    at = app(filled_db, PAGE)
    at.button(key="ack_all").click().run()
    assert query(filled_db, "SELECT kind, args, requested_by FROM commands") == [
        ("ack_alert", '{"all": true}', "cockpit:operator")
    ]
    assert query(filled_db, "SELECT COUNT(*) FROM alerts WHERE acked_at IS NULL") == open_before


def test_acknowledge_one_queues_that_alert_id(filled_db: Path) -> None:
    _add_alerts(filled_db)
    at = app(filled_db, PAGE)
    picked = at.selectbox(key="ack_pick").value
    at.button(key="ack_one").click().run()
    assert query(filled_db, "SELECT kind, args FROM commands") == [
        ("ack_alert", f'{{"id": {picked}}}')
    ]
