"""The engine's writer connection: how it commits and when it folds its WAL back."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from store.commands import CommandKind, enqueue_command, pending_stop
from store.db import WRITER_CHECKPOINT_PAGES, atomic, open_writer


def test_the_writer_leaves_checkpoints_to_larger_batches(tmp_path: Path) -> None:
    # SQLite's default would fold the WAL back (and sync the disk twice) every
    # 1,000 pages; the order path writes about 40 an order.
    db = open_writer(tmp_path / "w.db")
    conn = db.conn
    try:
        for i in range(700):
            with conn:
                conn.execute(
                    "INSERT INTO alerts (ts, severity, source, title, message)"
                    " VALUES (?, 'info', 'test', 't', ?)",
                    (i, "x" * 3000),
                )
        busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0
        assert 1_000 < frames < WRITER_CHECKPOINT_PAGES
    finally:
        conn.close()


def _alert(conn: sqlite3.Connection, ts: int) -> None:
    conn.execute(
        "INSERT INTO alerts (ts, severity, source, title, message)"
        " VALUES (?, 'info', 't', 't', '')",
        (ts,),
    )


def _alert_times(conn: sqlite3.Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute("SELECT ts FROM alerts ORDER BY ts")]


def test_an_atomic_block_commits_or_leaves_nothing(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "a.db").conn
    try:
        with atomic(conn, "outer"):
            _alert(conn, 1)
        assert not conn.in_transaction
        with pytest.raises(RuntimeError), atomic(conn, "outer"):
            _alert(conn, 2)
            raise RuntimeError("boom")
        assert not conn.in_transaction
        assert _alert_times(conn) == [1]
    finally:
        conn.close()


def test_a_failed_inner_block_undoes_only_its_own_writes(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "a.db").conn
    try:
        with atomic(conn, "outer"):
            _alert(conn, 1)
            with pytest.raises(RuntimeError), atomic(conn, "inner"):
                _alert(conn, 2)
                raise RuntimeError("boom")
            with atomic(conn, "inner"):
                _alert(conn, 3)
            assert conn.in_transaction
        assert _alert_times(conn) == [1, 3]
    finally:
        conn.close()


def test_a_block_that_reads_first_still_writes_when_the_cockpit_commits_meanwhile(
    tmp_path: Path,
) -> None:
    # The OMS's transaction reads (is a stop queued?) before it writes the order. The
    # cockpit's write must wait for the block: had it committed in between, SQLite
    # would refuse the block's write with "database is locked" at once (a stale
    # snapshot; no busy timeout applies), and the cycle would fail.
    path = tmp_path / "race.db"
    conn = open_writer(path).conn
    cockpit = sqlite3.connect(path, timeout=0)
    try:
        with atomic(conn, "oms"):
            assert pending_stop(conn) is None
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                cockpit.execute(
                    "INSERT INTO commands (kind, args, requested_at, requested_by, status)"
                    " VALUES ('pause', '{}', 1, 'cockpit:operator', 'pending')"
                )
            _alert(conn, 1)
        assert _alert_times(conn) == [1]
    finally:
        cockpit.close()
        conn.close()


def test_a_command_queued_during_a_block_lands_once_the_block_commits(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    conn = open_writer(path).conn
    queued: list[int] = []
    try:
        with atomic(conn, "oms"):
            assert pending_stop(conn) is None
            thread = threading.Thread(
                target=lambda: queued.append(enqueue_command("pause", {"reason": "x"}, db=path))
            )
            thread.start()
            _alert(conn, 1)  # the cockpit's insert is waiting; this write is not refused
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert queued and pending_stop(conn) is CommandKind.PAUSE
        assert _alert_times(conn) == [1]
    finally:
        conn.close()
