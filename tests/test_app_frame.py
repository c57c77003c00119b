"""The frame (app.py): sidebar facts, controls and the emergency stop dialog."""

from __future__ import annotations

import json
from pathlib import Path

from store.db import now_ms
from tests.cockpit_support import app, commands, execute, query

pytest_plugins = ["tests.cockpit_fixtures"]


def _sidebar_text(at) -> str:
    return " ".join([m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption])


def test_empty_database_says_no_engine_has_run(empty_db: Path) -> None:
    at = app(empty_db)
    assert not at.exception
    assert "No engine has run on this database yet" in _sidebar_text(at)


def test_sidebar_shows_the_trading_state_the_engine_wrote(filled_db: Path) -> None:
    execute(filled_db, "UPDATE engine SET trading_state = 'PAUSED', state_reason = 'lunch'")
    text = _sidebar_text(app(filled_db))
    assert ":orange-badge[PAUSED]" in text
    assert "lunch" in text


def test_sidebar_shows_the_mode_the_engine_wrote(filled_db: Path) -> None:
    mode = query(filled_db, "SELECT mode FROM engine")[0][0]
    assert f"Mode **:blue[{mode}]**" in _sidebar_text(app(filled_db))


def test_stale_heartbeat_is_shown_in_red(filled_db: Path) -> None:
    execute(filled_db, "UPDATE engine SET heartbeat_at = ?", (now_ms() - 3_600_000,))
    at = app(filled_db)
    assert ":red[**heartbeat 60 min ago — engine not running**]" in _sidebar_text(at)


def test_fresh_heartbeat_is_green(filled_db: Path) -> None:
    # A minute between beats: the page is still "fresh" however long a busy machine
    # takes to render it (liveness allows five beats).
    execute(filled_db, "UPDATE engine SET heartbeat_at = ?, heartbeat_seconds = 60", (now_ms(),))
    at = app(filled_db)
    assert ":green[heartbeat" in _sidebar_text(at)


def test_unacknowledged_alerts_are_counted_by_severity(filled_db: Path) -> None:
    for severity in ["HIGH", "HIGH", "CRITICAL"]:
        execute(
            filled_db,
            "INSERT INTO alerts (ts, severity, source, title, message) VALUES (?, ?, 't', 'x', '')",
            (now_ms(), severity),
        )
    expected = dict(
        query(filled_db, "SELECT severity, COUNT(*) FROM alerts WHERE acked_at IS NULL GROUP BY 1")
    )
    text = _sidebar_text(app(filled_db))
    for severity, n in expected.items():
        assert f"{severity} {n}]" in text


def test_pause_pressed_twice_sends_one_command(filled_db: Path) -> None:
    at = app(filled_db)
    at.sidebar.button(key="ctl_pause").click().run()
    at.sidebar.button(key="ctl_pause").click().run()
    assert commands(filled_db) == [("pause", "{}")]


def test_resume_from_paused_sends_plain_resume(filled_db: Path) -> None:
    execute(filled_db, "UPDATE engine SET trading_state = 'PAUSED'")
    at = app(filled_db)
    at.sidebar.button(key="ctl_resume").click().run()
    assert commands(filled_db) == [("resume", "{}")]


def test_resume_from_halted_needs_a_reason(filled_db: Path) -> None:
    execute(filled_db, "UPDATE engine SET trading_state = 'HALTED'")
    at = app(filled_db)
    at.sidebar.button(key="ctl_resume").click().run()
    assert at.button(key="resume_confirm").disabled
    at.text_input(key="resume_reason").input("stops checked").run()
    at.button(key="resume_confirm").click().run()
    kinds = commands(filled_db)
    assert [(k, json.loads(a)) for k, a in kinds] == [
        ("resume", {"confirm": True, "reason": "stops checked"})
    ]


def test_emergency_stop_stays_disabled_until_stop_is_typed(filled_db: Path) -> None:
    at = app(filled_db)
    at.sidebar.button(key="ctl_estop").click().run()
    at.text_input(key="estop_typed").input("stop").run()
    assert at.button(key="estop_confirm").disabled
    at.text_input(key="estop_typed").input("STOP").run()
    assert not at.button(key="estop_confirm").disabled
    assert commands(filled_db) == []


def test_emergency_stop_confirmed_twice_sends_one_command(filled_db: Path) -> None:
    at = app(filled_db)
    for _ in range(2):
        at.sidebar.button(key="ctl_estop").click().run()
        at.text_input(key="estop_typed").input("STOP").run()
        at.button(key="estop_confirm").click().run()
    assert commands(filled_db) == [("emergency_stop", "{}")]


def test_emergency_stop_shows_progress_until_flat_and_halted(filled_db: Path) -> None:
    at = app(filled_db)
    at.sidebar.button(key="ctl_estop").click().run()
    at.text_input(key="estop_typed").input("STOP").run()
    at.button(key="estop_confirm").click().run()
    open_positions = query(filled_db, "SELECT COUNT(*) FROM positions WHERE qty != 0")[0][0]
    if open_positions:
        assert any("Emergency stop:" in str(p.proto) for p in at.sidebar.get("progress"))
    # The engine goes flat and HALTED: the progress turns into a success message.
    execute(filled_db, "DELETE FROM positions")
    execute(
        filled_db,
        "UPDATE orders SET status = 'CANCELED' WHERE status IN"
        " ('NEW','SUBMITTED','ACCEPTED','PARTIALLY_FILLED')",
    )
    execute(filled_db, "UPDATE engine SET trading_state = 'HALTED'")
    at.run()
    assert any("flat and HALTED" in s.value for s in at.sidebar.success)


def test_flatten_confirm_sends_one_flatten_all(filled_db: Path) -> None:
    at = app(filled_db)
    at.sidebar.button(key="ctl_flatten").click().run()
    at.button(key="flatten_confirm").click().run()
    assert commands(filled_db) == [("flatten", "{}")]
