"""The engine's command job: each row checked and applied on its own, exactly once.

Rows here are written straight into the database, as anyone with the file could,
so the engine's own checks are what is tested, not enqueue_command's.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.process.runner import Engine
from store.commands import CommandStatus, enqueue_command, get_command
from tests.conftest import FakeClock, engine_settings

ROOT = Path(__file__).resolve().parent.parent


def start(db_file: Path, clock: FakeClock, opened: list[Any]) -> Engine:
    eng = Engine(engine_settings(symbols=1, warmup_bars=60), db_file, clock=clock)
    eng.open()
    opened.append(eng)
    return eng


def write_row(db_file: Path, kind: str, args: str, by: str = "cli:tester") -> int:
    conn = sqlite3.connect(db_file)
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO commands (kind, args, requested_at, requested_by, status)"
                " VALUES (?, ?, 1, ?, 'pending')",
                (kind, args, by),
            )
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


def query(db_file: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_file)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def status_of(db_file: Path, command_id: int) -> tuple[str, str]:
    cmd = get_command(command_id, db=db_file)
    assert cmd is not None
    return cmd.status.value, cmd.result or ""


def test_a_malformed_row_in_front_does_not_hold_up_the_emergency_stop(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    bad = write_row(db_file, "pause", "{not json")
    stop = enqueue_command("emergency_stop", {"reason": "drill"}, "cli:tester", db=db_file)

    eng.command_job()

    assert status_of(db_file, stop)[0] == "done"
    assert query(db_file, "SELECT trading_state FROM engine") == [("HALTED",)]
    status, result = status_of(db_file, bad)
    assert status == "failed" and "arguments are not valid JSON" in result


def test_an_emergency_stop_queued_last_is_applied_first(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    resume = enqueue_command("resume", {"confirm": True, "reason": "r"}, "cli:a", db=db_file)
    stop = enqueue_command("emergency_stop", {}, "cli:a", db=db_file)

    eng.command_job()

    applied = query(db_file, "SELECT action FROM audit WHERE action LIKE 'command:%' ORDER BY id")
    assert applied == [("command:emergency_stop",), ("command:resume",)]
    assert query(db_file, "SELECT trading_state FROM engine") == [("ACTIVE",)]
    assert (status_of(db_file, stop)[0], status_of(db_file, resume)[0]) == ("done", "done")


def test_a_bad_row_is_failed_once_with_one_warning_and_no_traceback(
    db_file, clock, open_engines, caplog: pytest.LogCaptureFixture
):
    eng = start(db_file, clock, open_engines)
    write_row(db_file, "pause", "[1, 2")
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            eng.command_job()

    assert not [r for r in caplog.records if r.exc_info]
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1
    assert query(
        db_file, "SELECT severity, count FROM alerts WHERE title = 'Command rejected'"
    ) == [("WARNING", 1)]


@pytest.mark.parametrize(
    "case",
    [
        ("pause", json.dumps({"reason": "x" * 20_000_000}), "cli:a", "at most 4000"),
        ("resume", '{"confirm": "no", "reason": "r"}', "cli:a", "confirm must be bool"),
        ("pause", "[]", "cli:a", "must be an object"),
        ("explode", "{}", "cli:a", "unknown command 'explode'"),
        ("pause", "{}", "root; rm -rf /", "is not cockpit:NAME or cli:NAME"),
        ("ack_alert", '{"id": "1 OR 1=1"}', "cli:a", "id must be int"),
    ],
)
def test_the_engine_refuses_a_row_enqueue_would_have_refused(
    db_file, clock, open_engines, case: tuple[str, str, str, str]
):
    kind, args, by, reason = case
    eng = start(db_file, clock, open_engines)
    state_before = query(db_file, "SELECT trading_state FROM engine")
    command_id = write_row(db_file, kind, args, by)

    eng.command_job()

    status, result = status_of(db_file, command_id)
    assert status == "failed" and reason in result
    assert query(db_file, "SELECT trading_state FROM engine") == state_before


def test_resume_out_of_halted_takes_only_a_json_true(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    enqueue_command("emergency_stop", {}, "cli:a", db=db_file)
    eng.command_job()
    stringly = write_row(db_file, "resume", '{"confirm": "true", "reason": "r"}')
    eng.command_job()
    assert status_of(db_file, stringly)[0] == "failed"
    assert query(db_file, "SELECT trading_state FROM engine") == [("HALTED",)]

    real = write_row(db_file, "resume", '{"confirm": true, "reason": "checked"}')
    eng.command_job()
    assert status_of(db_file, real)[0] == "done"
    assert query(db_file, "SELECT trading_state FROM engine") == [("ACTIVE",)]


def test_the_audit_names_the_requester_the_row_was_checked_for(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    enqueue_command("pause", {"reason": "lunch"}, "cockpit:operator", db=db_file)
    write_row(db_file, "pause", "{}", "admin (trust me)")

    eng.command_job()

    actors = query(db_file, "SELECT actor, action FROM audit ORDER BY id")
    assert ("cockpit:operator", "command:pause") in actors
    assert ("cockpit:operator", "state_change") in actors
    assert ("engine", "command_rejected") in actors
    assert not [a for a, _ in actors if "trust" in a]


def test_acknowledging_an_alert_is_applied_by_the_engine_and_audited(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    alert_id = eng._trader().alerts.raise_(*_high_alert())
    other = eng._trader().alerts.raise_(*_high_alert("other"))
    eng._trader().db.conn.commit()
    enqueue_command("ack_alert", {"id": alert_id}, "cockpit:operator", db=db_file)

    eng.command_job()

    acked = query(db_file, "SELECT id, acked_by FROM alerts WHERE acked_at IS NOT NULL")
    assert acked == [(alert_id, "cockpit:operator")]
    assert query(db_file, "SELECT acked_at FROM alerts WHERE id = ?", other) == [(None,)]
    assert query(db_file, "SELECT actor FROM audit WHERE action = 'command:ack_alert'") == [
        ("cockpit:operator",)
    ]


# ------------------------------------------------------------ how soon


class TickingClock(FakeClock):
    """Each reading is one millisecond after the last: readings taken in order compare in order."""

    def __call__(self) -> int:
        self.now += 1
        return self.now


def test_a_command_queued_before_a_cycle_is_applied_before_that_cycle(db_file, open_engines):
    eng = start(db_file, TickingClock(), open_engines)
    eng.command_job()  # the queue drained once, as the running engine's job does
    pause = enqueue_command("pause", {"reason": "lunch"}, "cockpit:operator", db=db_file)

    eng.cycle_job()  # the cycle alone, no command job between

    done = get_command(pause, db=db_file)
    assert done is not None and done.status is CommandStatus.DONE
    started = query(db_file, "SELECT max(started_at) FROM cycles")[0][0]
    assert done.done_at is not None and done.done_at < started
    assert query(db_file, "SELECT trading_state FROM engine") == [("PAUSED",)]


def test_polling_an_unchanged_queue_reads_no_table(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    eng.command_job()
    statements: list[str] = []
    eng._trader().db.conn.set_trace_callback(statements.append)

    for _ in range(3):
        eng.command_job()
    assert not [s for s in statements if "FROM commands" in s]

    pause = enqueue_command("pause", {"reason": "lunch"}, "cli:a", db=db_file)
    eng.command_job()
    assert status_of(db_file, pause)[0] == "done"


def test_a_row_queued_after_the_queue_was_read_is_taken_by_the_next_poll(
    db_file, clock, open_engines
):
    eng = start(db_file, clock, open_engines)
    later: list[int] = []
    read: list[str] = []

    def queue_one_more(statement: str) -> None:
        # Another process commits right after the engine has read the queue, before
        # the engine's next statement (it holds no lock between the two).
        if "FROM commands" in statement and "pending" in statement:
            read.append(statement)
        elif read and not later:
            later.append(write_row(db_file, "pause", '{"reason": "second"}'))

    first = write_row(db_file, "ack_alert", '{"all": true}')
    eng._trader().db.conn.set_trace_callback(queue_one_more)
    eng.command_job()
    eng._trader().db.conn.set_trace_callback(None)
    assert status_of(db_file, first)[0] == "done"
    assert later and status_of(db_file, later[0])[0] == "pending"

    eng.command_job()

    assert status_of(db_file, later[0])[0] == "done"


def _high_alert(title: str = "disk") -> tuple[Any, ...]:
    from engine.domain import Severity

    return (Severity.HIGH, "test", title, "message")


# ------------------------------------------------------------ exactly once

_CRASHING_ENGINE = textwrap.dedent(
    """
    import os, signal, sys
    from engine.process import handlers as commands
    from engine.process.runner import Engine
    from tests.conftest import FakeClock, engine_settings

    path, kind = sys.argv[1], sys.argv[2]
    original = commands.HANDLERS[kind]

    def apply_then_die(trader, cmd):
        original(trader, cmd)
        os.kill(os.getpid(), signal.SIGKILL)  # after the handler, before the row is done

    commands.HANDLERS[kind] = apply_then_die
    eng = Engine(engine_settings(symbols=1, warmup_bars=60), path, clock=FakeClock())
    eng.open()
    eng.command_job()
    """
)


def crash_in_handler(db_file: Path, kind: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_")}
    env.update(
        COCKPIT_CONFIG=str(db_file.parent / "none.toml"),
        COCKPIT_ML__BOOTSTRAP="false",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_ENGINE, str(db_file), kind],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_an_emergency_stop_killed_after_it_halted_is_not_applied_again(
    db_file, clock, open_engines
):
    stop = enqueue_command("emergency_stop", {"reason": "drill"}, "cli:a", db=db_file)
    crash_in_handler(db_file, "emergency_stop")
    assert status_of(db_file, stop)[0] == "running"

    eng = start(db_file, clock, open_engines)
    eng.command_job()

    status, result = status_of(db_file, stop)
    assert status == "failed" and result.startswith("interrupted")
    halts = query(db_file, "SELECT count(*) FROM audit WHERE action = 'state_change'")
    assert halts == [(1,)]
    stops = query(db_file, "SELECT count(*) FROM alerts WHERE title LIKE 'Emergency stop:%'")
    assert stops == [(1,)]
    assert query(db_file, "SELECT trading_state FROM engine") == [("HALTED",)]


def test_a_pause_killed_before_its_commit_is_applied_once_on_restart(db_file, clock, open_engines):
    pause = enqueue_command("pause", {"reason": "lunch"}, "cli:a", db=db_file)
    crash_in_handler(db_file, "pause")
    assert status_of(db_file, pause)[0] == "pending", "nothing of it was committed"

    eng = start(db_file, clock, open_engines)
    eng.command_job()

    assert get_command(pause, db=db_file).status is CommandStatus.DONE
    assert query(db_file, "SELECT count(*) FROM audit WHERE action = 'state_change'") == [(1,)]
    assert query(db_file, "SELECT trading_state FROM engine") == [("PAUSED",)]
