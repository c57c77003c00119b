"""The password gate of app.py: login, logout, idle timeout, the throttle, every page
URL behind it, and the banner or refusal when no password is set."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from cockpit import auth
from tests.cockpit_support import ROOT, app, commands, declared_pages, open_url, query

pytest_plugins = ["tests.cockpit_fixtures"]
PASSWORD = "a long operator password"


def cheap_hash(password: str) -> str:
    """An argon2id hash with the least key stretching: argon2 verifies with the
    parameters a hash carries, so the gate behaves exactly as with the real one while
    each login here skips 0.15 s of deliberate work (tests/test_auth.py holds the
    configured hasher to argon2id)."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)


@pytest.fixture(scope="module")
def password_hash() -> str:
    return cheap_hash(PASSWORD)


def test_with_a_password_nothing_shows_before_login(
    empty_db: Path, password_hash: str, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = app(empty_db)
    assert at.text_input[0].label == "Password"
    assert len(at.sidebar.button) == 0


def test_the_right_password_opens_the_cockpit(
    empty_db: Path, password_hash: str, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = app(empty_db)
    at.text_input[0].input(PASSWORD)
    at.button[0].click().run()
    assert at.sidebar.button(key="ctl_estop").label == "EMERGENCY STOP"


def test_a_wrong_password_is_refused_and_delays_the_next_attempt(
    empty_db: Path, password_hash: str, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = app(empty_db)
    at.text_input[0].input("guess")
    at.button[0].click().run()
    assert at.error[0].value.startswith("Wrong password")
    assert auth.throttle_for(empty_db).failures("local", time.time()) == 1
    assert len(at.sidebar.button) == 0


def _logged_in(db: Path) -> AppTest:
    at = app(db)
    at.text_input[0].input(PASSWORD)
    at.button[0].click().run()
    assert at.sidebar.button(key="logout").label == "Log out"
    return at


def test_failures_before_a_restart_still_delay_the_next_login(
    empty_db: Path, password_hash: str, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    # What an earlier cockpit process left beside the database.
    earlier = auth.LoginThrottle(auth.throttle_path(empty_db))
    for _ in range(6):
        earlier.record_failure("local", time.time())
    at = app(empty_db)
    at.text_input[0].input(PASSWORD)
    at.button[0].click().run()
    assert at.error[0].value.startswith("Too many failed attempts")
    assert len(at.sidebar.button) == 0


def test_log_out_returns_to_the_login_form(empty_db: Path, password_hash: str, monkeypatch) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = _logged_in(empty_db)
    at.sidebar.button(key="logout").click().run()
    assert [t.label for t in at.text_input] == ["Password"]
    assert len(at.sidebar.button) == 0
    at.run()
    assert len(at.sidebar.button) == 0


def test_an_idle_session_must_log_in_again(empty_db: Path, password_hash: str, monkeypatch) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = _logged_in(empty_db)
    at.session_state["last_active"] = time.monotonic() - 31 * 60
    at.run()
    assert [t.label for t in at.text_input] == ["Password"]
    assert "after 30 min without activity" in at.info[0].value
    assert len(at.sidebar.button) == 0


def test_the_idle_timeout_is_configurable_and_activity_resets_it(
    empty_db: Path, password_hash: str, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    monkeypatch.setenv("COCKPIT_COCKPIT__IDLE_TIMEOUT_MINUTES", "5")
    at = _logged_in(empty_db)
    at.session_state["last_active"] = time.monotonic() - 4 * 60
    at.run()  # activity within the timeout: still in, and the clock restarts
    assert at.sidebar.button(key="logout")
    at.session_state["last_active"] = time.monotonic() - 6 * 60
    at.run()
    assert [t.label for t in at.text_input] == ["Password"]


def test_without_a_password_a_banner_says_so(empty_db: Path) -> None:
    at = app(empty_db)
    assert any("No password set" in w.value for w in at.warning)


def test_without_a_password_it_refuses_to_serve_beyond_loopback(
    empty_db: Path, monkeypatch
) -> None:
    real = streamlit.get_option
    monkeypatch.setattr(
        streamlit, "get_option", lambda k: "0.0.0.0" if k == "server.address" else real(k)
    )
    at = app(empty_db)
    assert "only serves on 127.0.0.1" in at.error[0].value
    assert len(at.sidebar.button) == 0


GATED_PAGES = sorted(
    f"pages/{p.name}"
    for p in (ROOT / "pages").glob("*.py")
    if p.name not in {"__init__.py", "ui.py"}
)
URLS = [Path(p).stem for p in GATED_PAGES] + ["ui", "app", "no-such-page"]


def _shows_nothing_but_the_login_form(at: AppTest) -> bool:
    return (
        [t.label for t in at.text_input] == ["Password"]
        and len(at.sidebar.button) == 0
        and len(at.dataframe) == 0
        and len(at.metric) == 0
        and [t.value for t in at.title] == ["Cockpit"]
    )


def test_every_page_file_is_in_the_one_page_list() -> None:
    # A page missing from PAGES is unreachable through app.py, yet Streamlit's own
    # discovery would still run it on a fresh process's first request.
    assert sorted(f"pages/{name}" for name, _, _ in declared_pages()) == GATED_PAGES


@pytest.mark.parametrize("url", URLS)
def test_with_a_password_every_url_shows_only_the_login_form(
    filled_db: Path, password_hash: str, monkeypatch, url: str
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = open_url(filled_db, url)
    assert _shows_nothing_but_the_login_form(at)


@pytest.mark.parametrize("page", [*GATED_PAGES, "cockpit/ui.py"])
def test_a_page_run_without_app_py_draws_only_the_gate(
    filled_db: Path, password_hash: str, monkeypatch, page: str
) -> None:
    # What Streamlit does on a fresh process's first run: the page file alone.
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    monkeypatch.setenv("COCKPIT_DB", str(filled_db))
    at = AppTest.from_file(str(ROOT / page), default_timeout=20).run()
    assert _shows_nothing_but_the_login_form(at)


def test_acknowledge_all_cannot_run_before_login(
    filled_db: Path, password_hash: str, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    before = query(filled_db, "SELECT COUNT(*) FROM alerts WHERE acked_at IS NULL")
    at = open_url(filled_db, "alerts")
    assert not [b for b in at.button if b.key == "ack_all"]
    assert query(filled_db, "SELECT COUNT(*) FROM alerts WHERE acked_at IS NULL") == before


def test_logging_in_on_a_page_url_opens_that_page(
    filled_db: Path, password_hash: str, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = open_url(filled_db, "orders")
    at.text_input[0].input(PASSWORD)
    at.button[0].click().run()
    assert [t.value for t in at.title] == ["Orders"]


def test_a_new_password_logs_a_session_out(empty_db: Path, password_hash: str, monkeypatch) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    at = app(empty_db)
    at.text_input[0].input(PASSWORD)
    at.button[0].click().run()
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", cheap_hash("another long password"))
    at.run()
    assert at.text_input[0].label == "Password"
    assert len(at.sidebar.button) == 0


@pytest.mark.parametrize("url", URLS)
def test_without_a_password_beyond_loopback_every_url_is_refused(
    filled_db: Path, monkeypatch, url: str
) -> None:
    real = streamlit.get_option
    monkeypatch.setattr(
        streamlit, "get_option", lambda k: "0.0.0.0" if k == "server.address" else real(k)
    )
    at = open_url(filled_db, url)
    assert "only serves on 127.0.0.1" in at.error[0].value
    assert len(at.sidebar.button) == 0 and len(at.dataframe) == 0 and len(at.metric) == 0


def test_no_engine_is_started_before_login(empty_db: Path, password_hash: str, monkeypatch) -> None:
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    monkeypatch.delenv("COCKPIT_NO_AUTOSTART")
    at = open_url(empty_db, "overview")
    assert "autostart" not in at.session_state
    assert not empty_db.exists()


def _one_pause_command() -> None:
    import streamlit as st

    from cockpit import ui

    if "tried" not in st.session_state:  # the refusal reruns the script
        st.session_state["tried"] = True
        ui.send_command("pause", {})
    st.markdown("done")


def test_a_command_from_a_session_without_access_is_not_queued(
    filled_db: Path, password_hash: str, monkeypatch
) -> None:
    # A fragment's button runs without app.py: send_command itself must check.
    monkeypatch.setenv("COCKPIT_PASSWORD_HASH", password_hash)
    monkeypatch.setenv("COCKPIT_DB", str(filled_db))
    before = commands(filled_db)
    at = AppTest.from_function(_one_pause_command, default_timeout=20).run()
    assert at.markdown[0].value == "done"
    assert commands(filled_db) == before
