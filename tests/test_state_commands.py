"""The command queue: the cockpit's only write path into the engine."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from state.commands import CommandError, acknowledge_alerts, enqueue_command, get_command
from state.db import open_reader, open_writer


def test_a_double_click_sends_one_command(db_file: Path):
    first = enqueue_command("emergency_stop", {}, "operator", db=db_file)
    second = enqueue_command("emergency_stop", {}, "operator", db=db_file)
    conn = sqlite3.connect(db_file)
    assert first == second
    assert conn.execute("SELECT count(*) FROM commands").fetchone() == (1,)
    conn.close()


def test_a_command_with_other_arguments_is_a_new_command(db_file: Path):
    a = enqueue_command("flatten", {"symbol": "AAA"}, db=db_file)
    b = enqueue_command("flatten", {"symbol": "BBB"}, db=db_file)
    assert a != b


def test_an_unknown_command_is_refused_and_nothing_is_written(db_file: Path):
    with pytest.raises(CommandError, match="unknown command 'explode'; allowed: pause"):
        enqueue_command("explode", db=db_file)
    assert not db_file.exists() or sqlite3.connect(db_file).execute(
        "SELECT count(*) FROM commands"
    ).fetchone() == (0,)


def test_a_queued_command_round_trips(db_file: Path):
    cid = enqueue_command("resume", {"confirm": True, "reason": "ok"}, "cli:me", db=db_file)
    cmd = get_command(cid, db=db_file)
    assert cmd is not None
    assert (cmd.kind, cmd.args, cmd.requested_by, cmd.status.value) == (
        "resume",
        {"confirm": True, "reason": "ok"},
        "cli:me",
        "pending",
    )


def test_acknowledging_all_leaves_none_open(db_file: Path):
    db = open_writer(db_file)
    db.conn.executemany(
        "INSERT INTO alerts (ts, severity, source, title) VALUES (1, 'HIGH', 's', ?)",
        [("a",), ("b",)],
    )
    db.conn.commit()
    db.conn.close()
    assert acknowledge_alerts(None, "me", db=db_file) == 2
    with open_reader(db_file) as conn:
        assert conn.execute("SELECT count(*) FROM alerts WHERE acked_at IS NULL").fetchone()[0] == 0


def test_a_reader_cannot_write(db_file: Path):
    open_writer(db_file).conn.close()
    conn = open_reader(db_file)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO commands (kind, requested_at, status) VALUES ('pause', 1, 'x')")
    conn.close()
