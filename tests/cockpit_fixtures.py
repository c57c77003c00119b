"""Fixtures for the cockpit's tests; load with `pytest_plugins = ["tests.cockpit_fixtures"]`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.runtime.pages_manager import PagesManager

from tests.cockpit_support import run_engine_into


@pytest.fixture(scope="session")
def engine_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip(
        "engine.process.runner", reason="engine/process/runner.py has not landed yet"
    )
    path = tmp_path_factory.mktemp("engine") / "template.db"
    run_engine_into(path)
    return path


@pytest.fixture
def filled_db(engine_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "cockpit.db"
    # The engine closed its connection, so the WAL is checkpointed into the file.
    shutil.copy(engine_template, path)
    # The secrets key and the audit anchor travel with the database they belong to.
    for suffix in (".key", ".audit-head"):
        if engine_template.with_suffix(suffix).exists():
            shutil.copy(engine_template.with_suffix(suffix), path.with_suffix(suffix))
    return path


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    """A database path where no engine has run yet (the file does not exist)."""
    return tmp_path / "none.db"


@pytest.fixture(autouse=True)
def cockpit_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No autostart, no password, no local config: each test states what it needs."""
    import cockpit.auth

    monkeypatch.setenv("COCKPIT_DB", str(tmp_path / "none.db"))
    monkeypatch.setenv("COCKPIT_NO_AUTOSTART", "1")
    monkeypatch.setenv("COCKPIT_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("COCKPIT_PASSWORD_HASH", raising=False)
    monkeypatch.setattr(cockpit.auth, "SECRETS_FILE", tmp_path / "absent-secrets.toml")
    # AppTest resets PagesManager.uses_pages_directory before every run, and a
    # `pages/` folder then makes every run after the first execute the page alone
    # (multipage v1) instead of app.py. st.navigation apps are v2: keep it so.
    original = PagesManager.__init__

    def init(self: PagesManager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
    yield
