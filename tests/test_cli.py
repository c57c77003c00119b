"""`python -m engine` against a real engine process on a tmp database."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.__main__ import main
from store.db import PROJECT_ROOT, now_ms
from store.status import read_status


def verb(*args: str) -> subprocess.CompletedProcess[str]:
    """A CLI verb run in this process (`engine.__main__.main`), its output captured.

    Verbs that talk to the engine through the database (stop, status, resume, ...)
    need no interpreter of their own; `cli` starts one for the verbs that are an
    engine (`run`)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["engine", *args], code, out.getvalue(), err.getvalue())


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=PROJECT_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
    )


@pytest.fixture
def running_engine(db_file: Path, tmp_path: Path):
    log = (tmp_path / "engine.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "run",
            "--db",
            str(db_file),
            "--cycle-seconds",
            "0.1",
            "--symbols",
            "3",
            "--seed",
            "4",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            status = read_status(db_file, now_ms()) if db_file.exists() else None
            if status is not None and status.running and status.cycles > 3:
                break
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()
            assert time.monotonic() < deadline, "the engine did not start cycling"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_stop_halts_flattens_and_reports_how_long_it_took(db_file, running_engine):
    stopped = verb("stop", "--db", str(db_file), "--reason", "drill")
    status = json.loads(verb("status", "--json", "--db", str(db_file)).stdout)

    assert stopped.returncode == 0, stopped.stderr
    assert "HALTED and flat in" in stopped.stdout
    assert status["trading_state"] == "HALTED" and status["open_positions"] == 0


def test_sigterm_stops_the_engine_cleanly_and_releases_the_lease(db_file, running_engine):
    running_engine.send_signal(signal.SIGTERM)
    assert running_engine.wait(timeout=15) == 0
    status = json.loads(verb("status", "--json", "--db", str(db_file)).stdout)
    assert status["running"] is False
    second = subprocess.run(
        [sys.executable, "-m", "engine", "run", "--db", str(db_file), "--for", "0.5"],
        cwd=PROJECT_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr


def test_a_second_engine_process_is_refused_with_a_message(db_file, running_engine):
    second = cli("run", "--db", str(db_file), "--for", "1")
    assert second.returncode == 1
    assert "another engine" in second.stderr


def test_resume_from_halted_without_a_reason_is_refused(db_file, running_engine):
    assert verb("stop", "--db", str(db_file)).returncode == 0
    refused = verb("resume", "--db", str(db_file))
    resumed = verb("resume", "--confirm", "--reason", "drill over", "--db", str(db_file))
    assert refused.returncode == 1 and "confirmation and a reason" in refused.stderr
    assert resumed.returncode == 0 and "ACTIVE" in resumed.stdout


def test_a_bad_configuration_stops_the_start_naming_key_value_and_rule(db_file):
    env = {**os.environ, "COCKPIT_RISK__DAILY_LOSS": "1.5"}
    result = cli("run", "--db", str(db_file), "--for", "1", env=env)
    assert result.returncode == 2
    assert "risk.daily_loss = '1.5'" in result.stderr and "less than or equal to 1" in result.stderr


def test_config_prints_the_effective_configuration_with_secrets_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("COCKPIT_ALERTS__SMTP_PASSWORD", "hunter2")
    monkeypatch.setenv("COCKPIT_ENGINE__SEED", "9")
    result = verb("config")
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    assert shown["engine"]["seed"] == 9
    assert "hunter2" not in result.stdout


def test_a_command_with_no_engine_running_says_so(db_file):
    result = verb("pause", "--db", str(db_file), "--timeout", "0.5")
    assert result.returncode == 3 and "no engine answered" in result.stderr


def test_the_running_engine_writes_its_log_file_beside_the_database(db_file, running_engine):
    text = (db_file.parent / "logs" / "engine.log").read_text()
    assert "engine running: cycle every 0.10 s" in text


def test_a_malformed_row_ahead_of_it_does_not_hold_up_stop(db_file, running_engine):
    conn = sqlite3.connect(db_file)
    with conn:
        conn.execute(
            "INSERT INTO commands (kind, args, requested_at, requested_by, status)"
            " VALUES ('pause', '{not json', 1, 'cli:x', 'pending')"
        )
    conn.close()
    stopped = verb("stop", "--db", str(db_file), "--timeout", "15")
    assert stopped.returncode == 0, stopped.stderr
    status = read_status(db_file, now_ms())
    assert status is not None and status.trading_state == "HALTED"
