"""WAL checkpoints on their own thread: the log reaches the database file without
the writer's commits copying it."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from store.checkpoint import Checkpointer
from store.db import open_writer

PAGES = 300  # far below the writer's own threshold (store.db.WRITER_CHECKPOINT_PAGES)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Database]:
    db = open_writer(tmp_path / "cockpit.db")
    db.conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    db.conn.commit()
    yield db
    db.conn.close()


def _write_pages(db: Database) -> None:
    for _ in range(PAGES):
        db.conn.execute("INSERT INTO blobs (body) VALUES (zeroblob(4000))")
        db.conn.commit()


def test_the_thread_moves_the_log_into_the_database_file(writer, tmp_path) -> None:
    file = tmp_path / "cockpit.db"
    checkpointer = Checkpointer(file, every_seconds=0.01)
    checkpointer.start()
    try:
        before = file.stat().st_size
        _write_pages(writer)
        deadline = time.monotonic() + 30
        while file.stat().st_size < before + PAGES * 4000 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        checkpointer.stop()
    assert file.stat().st_size >= before + PAGES * 4000


def test_a_database_locked_when_the_thread_starts_is_checkpointed_once_free(
    tmp_path, caplog
) -> None:
    # Another connection's exclusive lock fails even the thread's first statement; the
    # thread must outlive it (an exception there ended it, and failed the engine's test).
    file = tmp_path / "cockpit.db"
    blocker = sqlite3.connect(file, isolation_level=None)
    blocker.execute("PRAGMA journal_mode = WAL")
    blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")
    blocker.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    checkpointer = Checkpointer(file, every_seconds=0.01)
    caplog.set_level(logging.WARNING, logger="store.checkpoint")
    checkpointer.start()
    try:
        deadline = time.monotonic() + 30
        while "checkpoint failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "checkpoint failed" in caplog.text
        blocker.execute("COMMIT")
        blocker.close()  # an exclusive WAL lock is dropped only with its connection
        writer = open_writer(file)
        before = file.stat().st_size
        _write_pages(writer)
        deadline = time.monotonic() + 30
        while file.stat().st_size < before + PAGES * 4000 and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.conn.close()
    finally:
        checkpointer.stop()
    assert file.stat().st_size >= before + PAGES * 4000


def test_without_the_thread_the_log_stays_in_the_wal(writer, tmp_path) -> None:
    file = tmp_path / "cockpit.db"
    before = file.stat().st_size
    _write_pages(writer)
    assert file.stat().st_size < before + PAGES * 4000  # what the test above waits for


def test_the_thread_never_creates_a_missing_database(tmp_path) -> None:
    checkpointer = Checkpointer(tmp_path / "gone.db", every_seconds=0.01)
    checkpointer.start()
    checkpointer.stop()
    assert not (tmp_path / "gone.db").exists()


def test_an_in_memory_database_gets_no_thread() -> None:
    checkpointer = Checkpointer(Path(":memory:"), every_seconds=0.01)
    checkpointer.start()
    assert not any(t.name == "checkpoint" for t in threading.enumerate())
    checkpointer.stop()
