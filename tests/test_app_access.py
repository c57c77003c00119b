"""The password gate of app.py, and the banner when no password is set."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit

from state import auth
from tests.cockpit_support import app

pytest_plugins = ["tests.cockpit_fixtures"]
PASSWORD = "a long operator password"


@pytest.fixture(scope="module")
def password_hash() -> str:
    return auth.hash_password(PASSWORD)


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
    assert auth.throttle.failures == 1
    assert "authenticated" not in at.session_state


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
