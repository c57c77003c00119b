"""The command queue: the cockpit's only write path into the engine."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from store.commands import CommandError, enqueue_command, get_command
from store.db import open_reader, open_writer


def test_a_double_click_sends_one_command(db_file: Path):
    first = enqueue_command("emergency_stop", {}, "cockpit:operator", db=db_file)
    second = enqueue_command("emergency_stop", {}, "cockpit:operator", db=db_file)
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


def _rows(db_file: Path) -> int:
    if not db_file.exists():
        return 0
    conn = sqlite3.connect(db_file)
    try:
        return int(conn.execute("SELECT count(*) FROM commands").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("pause", {"reason": "x" * 1001}, "reason is 1001 characters; at most 1000"),
        ("resume", {"confirm": "no", "reason": "r"}, "confirm must be bool, not str"),
        ("resume", {"confirm": 1, "reason": "r"}, "confirm must be bool, not int"),
        ("flatten", {"symbol": "AAA; DROP"}, "is not a valid symbol"),
        ("promote", {}, "promote needs version"),
        ("pause", {"sneaky": 1}, "unknown argument 'sneaky'; allowed: reason"),
        ("ack_alert", {"id": True}, "id must be int, not bool"),
        ("ack_alert", {}, "needs either an alert id or all: true"),
        ("ack_alert", {"id": 3, "all": True}, "needs either an alert id or all: true"),
    ],
)
def test_bad_arguments_are_refused_at_enqueue_and_nothing_is_written(
    db_file: Path, kind: str, args: dict[str, object], message: str
):
    with pytest.raises(CommandError, match=re.escape(message)):
        enqueue_command(kind, args, "cli:me", db=db_file)
    assert _rows(db_file) == 0


@pytest.mark.parametrize("actor", ["operator", "engine", "cockpit:", "cli:a b", "cli:" + "x" * 65])
def test_a_requester_outside_the_fixed_shapes_is_refused(db_file: Path, actor: str):
    with pytest.raises(CommandError, match="is not cockpit:NAME or cli:NAME"):
        enqueue_command("pause", {}, actor, db=db_file)
    assert _rows(db_file) == 0


def test_a_reader_cannot_write(db_file: Path):
    open_writer(db_file).conn.close()
    conn = open_reader(db_file)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO commands (kind, requested_at, status) VALUES ('pause', 1, 'x')")
    conn.close()


def test_every_command_kind_has_argument_rules():
    from store.commands import ARGUMENTS, CommandKind

    assert set(ARGUMENTS) == set(CommandKind)


def test_a_whole_number_is_a_valid_amount_and_a_boolean_is_not(db_file: Path):
    enqueue_command("cash_movement", {"amount": 5000, "reason": "deposit"}, "cli:me", db=db_file)
    with pytest.raises(CommandError, match="amount must be float, not bool"):
        enqueue_command("cash_movement", {"amount": True, "reason": "x"}, "cli:me", db=db_file)
