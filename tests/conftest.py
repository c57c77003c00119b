"""Shared fixtures: a clean configuration environment and an engine on a tmp database."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings as hypothesis_settings

from engine.config import Settings, load_settings

if TYPE_CHECKING:
    from engine.ml.train import TrainedModel

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
    # Backtests without --out write under the test's own folder, not the checkout's
    # var/backtests, which every test process on the machine shares.
    monkeypatch.setenv("COCKPIT_BACKTEST__OUT_DIR", str(tmp_path / "backtests"))


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


@pytest.fixture(scope="session")
def _small_champion(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A small model, trained once per session (training is the slowest thing a test
    can do); tests get their own copy of its artifact through `champion_in`."""
    from engine.config import MlSettings
    from engine.market.feeds import generate_history
    from engine.ml.train import TrainParams, train_on_history

    return train_on_history(
        generate_history(["A", "B", "C"], 1_500, seed=2),
        MlSettings(),
        artifacts_dir=tmp_path_factory.mktemp("champion"),
        now=FakeClock()(),
        params=TrainParams(n_folds=2, rounds=20),
    )


@pytest.fixture
def champion_in(_small_champion: TrainedModel) -> Callable[[Path], TrainedModel]:
    """Copy the session's small model into a models folder (e.g. beside a test's
    database), as if it had been trained there: a test may damage its copy."""

    def copy(models: Path) -> TrainedModel:
        folder = models / _small_champion.path.parent.name
        shutil.copytree(_small_champion.path.parent, folder)
        return replace(_small_champion, path=folder / _small_champion.path.name)

    return copy
