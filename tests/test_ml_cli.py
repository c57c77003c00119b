"""`python -m engine train` and `models`, driven through run_cli with parsed arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.ml import registry
from engine.ml.cli import OK, register_cli, run_cli
from engine.ml.train import TrainedModel
from engine.process.queued import NO_ENGINE
from store.db import open_reader, open_writer


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("COCKPIT_ML__BOOTSTRAP_BARS", "700")
    monkeypatch.setenv("COCKPIT_ML__ARTIFACTS_DIR", str(tmp_path / "models"))
    return tmp_path / "cockpit.db"


def _registry(db: Path) -> list[tuple]:
    conn = open_reader(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT version, status FROM models")]
    finally:
        conn.close()


def test_train_registers_the_first_model_as_champion(small: Path) -> None:
    code = _run("train", "--db", str(small), "--simulated", "--folds", "2", "--rounds", "10")
    assert code == OK and [s for _, s in _registry(small)] == ["champion"]


def test_list_prints_each_version_with_its_status(
    small: Path, capsys, champion_in: Callable[[Path], TrainedModel]
) -> None:
    db = open_writer(small)
    registry.adopt(db, champion_in(small.parent / "models"))
    db.conn.commit()
    db.conn.close()
    assert _run("models", "list", "--db", str(small)) == OK
    ((version, status),) = _registry(small)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(version))
    assert status in line


def test_promote_without_an_engine_stays_queued(small: Path) -> None:
    code = _run("models", "promote", "v1", "--db", str(small), "--timeout", "0")
    conn = open_reader(small)
    try:
        pending = conn.execute("SELECT kind, status FROM commands").fetchall()
    finally:
        conn.close()
    assert code == NO_ENGINE and [tuple(r) for r in pending] == [("promote", "pending")]


def test_run_cli_dispatches_on_the_parsed_verb(small: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="verb"))
    assert run_cli(parser.parse_args(["models", "--db", str(small)])) != OK  # no db yet
    assert "no state database" in capsys.readouterr().err
