"""WAL checkpoints on their own thread: the log reaches the database file without
the writer's commits copying it."""

from __future__ import annotations

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
