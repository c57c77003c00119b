"""Alerts (dedupe, delivery from the engine) and the audit hash chain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.alerts.alerts import Alerts
from engine.alerts.audit import append_audit, verify_chain
from engine.domain import Severity
from engine.process.runner import Engine
from store.commands import enqueue_command
from store.db import open_writer
from tests.conftest import FakeClock, engine_settings
from tests.http_support import receiving


def test_a_repeated_alert_counts_instead_of_flooding(tmp_path: Path):
    db = open_writer(tmp_path / "a.db")
    alerts = Alerts(db, FakeClock())
    first = alerts.raise_(Severity.WARNING, "feed", "bad bar", "one", dedupe_key="k")
    again = alerts.raise_(Severity.HIGH, "feed", "bad bar", "two", dedupe_key="k")
    rows = db.conn.execute("SELECT id, count, severity, message FROM alerts").fetchall()
    assert first == again
    assert rows == [(first, 2, "HIGH", "two")], "the worse severity and the latest message win"


def test_an_acknowledged_alert_is_not_reopened_by_a_repeat(tmp_path: Path):
    db = open_writer(tmp_path / "a.db")
    alerts = Alerts(db, FakeClock())
    first = alerts.raise_(Severity.WARNING, "feed", "bad bar", dedupe_key="k")
    db.conn.execute("UPDATE alerts SET acked_at = 1 WHERE id = ?", (first,))
    second = alerts.raise_(Severity.WARNING, "feed", "bad bar", dedupe_key="k")
    assert second != first


def test_the_audit_chain_verifies_and_names_the_first_tampered_row(tmp_path: Path):
    db = open_writer(tmp_path / "a.db")
    for i in range(5):
        append_audit(db, "op", "state_change", {"i": i}, ts=i)
    db.conn.commit()
    assert verify_chain(db.conn) is None
    db.conn.execute("UPDATE audit SET payload = '{\"i\": 99}' WHERE id = 3")
    assert verify_chain(db.conn) == 3


def test_an_emergency_stop_alert_reaches_the_operators_webhook(db_file: Path, clock: FakeClock):
    with receiving("/hook") as hook:
        settings = engine_settings().model_copy(
            update={"alerts": engine_settings().alerts.model_copy(update={"webhook_url": hook.url})}
        )
        eng = Engine(settings, db_file, clock=clock)
        eng.open()
        try:
            enqueue_command("emergency_stop", {"reason": "drill"}, "cli:tester", db=db_file)
            clock.advance(1000)
            eng.step()
        finally:
            eng.close()  # drains the delivery queue
    titles = [m["title"] for m in hook.bodies]
    assert any("Emergency stop" in t for t in titles)
    assert all(m["severity"] in ("HIGH", "CRITICAL") for m in hook.bodies)
    conn = sqlite3.connect(db_file)
    assert conn.execute("SELECT count(*) FROM alerts WHERE severity = 'CRITICAL'").fetchone()[0]
    conn.close()
