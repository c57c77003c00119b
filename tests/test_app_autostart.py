"""The cockpit's autostart (cockpit/autostart.py): start an engine only when none is alive."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from cockpit import autostart
from store.db import now_ms, open_writer
from tests.cockpit_support import app

pytest_plugins = ["tests.cockpit_fixtures"]


@pytest.fixture
def children(monkeypatch, tmp_path: Path):
    """Launch a stand-in engine (it writes its COCKPIT_DB and sleeps); kill it afterwards."""
    monkeypatch.setattr(autostart, "_children", {})
    marker = tmp_path / "child-saw-db.txt"
    script = (
        f"import os, time; open({str(marker)!r}, 'w').write(os.environ['COCKPIT_DB']);"
        " time.sleep(30)"
    )
    monkeypatch.setattr(autostart, "engine_command", lambda path: [sys.executable, "-c", script])
    monkeypatch.setattr(autostart, "LOG_DIR", tmp_path / "log")
    yield marker
    for child in autostart._children.values():
        os.kill(child.process.pid, signal.SIGKILL)
        child.process.wait(5)


def _alive_engine(path: Path) -> None:
    db = open_writer(path)
    db.table("engine").insert(
        {
            "id": 1,
            "pid": 1,
            "heartbeat_at": now_ms(),
            "trading_state": "ACTIVE",
            "cycle_seconds": 1.0,
        }
    )
    db.conn.commit()
    db.conn.close()


def test_disabled_autostart_launches_nothing(tmp_path: Path, children) -> None:
    result = autostart.ensure_engine(tmp_path / "x.db", enabled=False, log_dir=tmp_path)
    assert result.outcome is autostart.Outcome.DISABLED
    assert autostart._children == {}


def test_a_fresh_heartbeat_launches_nothing(tmp_path: Path, children) -> None:
    _alive_engine(tmp_path / "x.db")
    result = autostart.ensure_engine(tmp_path / "x.db", enabled=True, log_dir=tmp_path)
    assert result.outcome is autostart.Outcome.RUNNING
    assert autostart._children == {}


def test_no_engine_launches_one_on_the_same_database(tmp_path: Path, children: Path) -> None:
    db = tmp_path / "x.db"
    result = autostart.ensure_engine(db, enabled=True, log_dir=tmp_path)
    assert result.outcome is autostart.Outcome.STARTED
    deadline = time.monotonic() + 10
    while not (children.exists() and children.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children.read_text() == str(db.resolve())


def test_a_second_session_waits_for_the_first_child(tmp_path: Path, children) -> None:
    first = autostart.ensure_engine(tmp_path / "x.db", enabled=True, log_dir=tmp_path)
    second = autostart.ensure_engine(tmp_path / "x.db", enabled=True, log_dir=tmp_path)
    assert second.outcome is autostart.Outcome.STARTING
    assert second.pid == first.pid


@pytest.mark.parametrize(
    ("setting", "env", "expected"),
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"COCKPIT_NO_AUTOSTART": "1"}, False),
    ],
)
def test_autostart_is_off_by_setting_or_variable(setting: bool, env: dict, expected: bool) -> None:
    assert autostart.autostart_enabled(setting, env) is expected


def test_the_cockpit_says_it_started_the_engine(empty_db: Path, children, monkeypatch) -> None:
    monkeypatch.delenv("COCKPIT_NO_AUTOSTART")
    at = app(empty_db)
    assert any("the cockpit started the engine" in t.value for t in at.toast)
