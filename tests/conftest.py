"""Shared fixtures: a clean configuration environment and an engine on a tmp database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from engine.config import Settings, load_settings

# A shared 2-core machine stalls any example now and then; a per-example deadline
# would turn that into a failure that says nothing about the code.
hypothesis_settings.register_profile("busy_machine", deadline=None)
hypothesis_settings.load_profile("busy_machine")


@pytest.fixture(autouse=True)
def _clean_config_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's cockpit.toml or COCKPIT_* variable leaks into a test."""
    for name in list(os.environ):
        if name.startswith("COCKPIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COCKPIT_CONFIG", str(tmp_path / "no-such-cockpit.toml"))
    monkeypatch.setenv("COCKPIT_NO_AUTOSTART", "1")
    # Engines in tests don't train a bootstrap model in the background unless a test
    # asks for it: it would compete for the two cores with the test itself.
    monkeypatch.setenv("COCKPIT_ML__BOOTSTRAP", "false")
    # Engines run by tests serve no metrics unless asked: 9108 is shared by every
    # worktree and process on the machine.
    monkeypatch.setenv("COCKPIT_METRICS__PORT", "0")


class FakeClock:
    """Epoch milliseconds that move only when a test moves them."""

    def __init__(self, start: int = 1_767_225_600_000) -> None:  # 2026-01-01 UTC
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


def engine_settings(**engine: Any) -> Settings:
    base: dict[str, Any] = {"cycle_seconds": 1.0, "symbols": 4, "seed": 11, "warmup_bars": 120}
    base.update(engine)
    return load_settings(engine=base)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "cockpit.db"


@pytest.fixture
def open_engines() -> Iterator[list[Any]]:
    """Engines opened by a test are closed after it, even when it fails."""
    engines: list[Any] = []
    yield engines
    for engine in engines:
        engine.close()
