"""A backtest asked for by a `commands` row runs in its own process: the command
is done as soon as the process starts, and the run reports itself to the store."""

from __future__ import annotations

import time

import pytest

from cockpit.backtests_views import list_runs
from engine.backtest.launch import LaunchRefused, command_argv
from engine.process.runner import Engine
from store.commands import CommandStatus, enqueue_command, get_command
from tests.conftest import engine_settings


def test_reserved_flags_are_refused() -> None:
    with pytest.raises(LaunchRefused, match="--db is set by the engine"):
        command_argv("backtest", "--sim --db /tmp/other.db")


def test_a_backtest_command_runs_outside_the_engine_and_records_progress(
    db_file, clock, open_engines
) -> None:
    eng = Engine(engine_settings(symbols=1), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    command_id = enqueue_command(
        "backtest",
        {"verb": "backtest", "argv": "--sim --symbols SIMA --bars 120 --bar-interval 1h"},
        db=db_file,
    )
    eng.command_job()
    done = get_command(command_id, db=db_file)
    assert done is not None and done.status is CommandStatus.DONE
    assert "started in its own process" in (done.result or "")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        runs = list_runs(db_file)
        if runs and runs[0].status != "running":
            break
        time.sleep(0.2)
    [run] = list_runs(db_file)
    assert (run.status, run.command_id, run.progress) == ("done", command_id, 1.0)
    assert run.metrics["bars"] == 120
