"""The write-behind connection: deferred writes are invisible to nobody, follow
commits, rollbacks and savepoints, and reach SQLite in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from store.writebehind import DeferredResult, WriteBehind


def _conn(path: str | Path = ":memory:") -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE marks (ts INTEGER PRIMARY KEY, value REAL)")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    return conn


def _raw_count(wb: WriteBehind, table: str) -> int:
    return int(wb.raw.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_deferred_write_waits_until_its_table_is_read() -> None:
    wb = WriteBehind(_conn(), ["marks"])
    wb.execute("INSERT INTO marks (ts, value) VALUES (?, ?)", (1, 1.0))
    wb.executemany("INSERT INTO marks (ts, value) VALUES (?, ?)", [(2, 2.0), (3, 3.0)])
    wb.commit()
    assert (_raw_count(wb, "marks"), wb.pending) == (0, 3)
    assert wb.execute("SELECT sum(value) FROM marks").fetchone()[0] == 6.0
    assert (_raw_count(wb, "marks"), wb.pending) == (3, 0)


def test_other_tables_pass_straight_through_and_do_not_flush() -> None:
    wb = WriteBehind(_conn(), ["marks"])
    wb.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")
    cur = wb.execute("INSERT INTO notes (text) VALUES ('kept')")
    assert cur.lastrowid == 1
    assert wb.execute("SELECT text FROM notes").fetchall() == [("kept",)]
    assert wb.pending == 1


def test_writes_to_one_table_reach_sqlite_in_their_order() -> None:
    wb = WriteBehind(_conn(), ["marks"])
    wb.execute("INSERT OR REPLACE INTO marks (ts, value) VALUES (1, 1.0)")
    wb.execute("DELETE FROM marks WHERE ts = 1")
    wb.execute("INSERT OR REPLACE INTO marks (ts, value) VALUES (1, 5.0)")
    wb.execute("UPDATE marks SET value = value + 1 WHERE ts = 1")
    assert wb.execute("SELECT value FROM marks").fetchall() == [(6.0,)]


def test_a_rollback_drops_what_was_not_committed() -> None:
    wb = WriteBehind(_conn(), ["marks"])
    wb.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")
    wb.commit()
    wb.execute("INSERT INTO marks (ts, value) VALUES (2, 2.0)")
    wb.rollback()
    assert wb.execute("SELECT ts FROM marks").fetchall() == [(1,)]


def test_a_rollback_to_a_savepoint_drops_only_what_came_after_it() -> None:
    db = Database(WriteBehind(_conn(), ["marks"]))  # type: ignore[arg-type]
    with db.atomic():
        db.conn.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")
        with pytest.raises(RuntimeError), db.atomic():
            db.conn.execute("INSERT INTO marks (ts, value) VALUES (2, 2.0)")
            raise RuntimeError("inner block fails")
        db.conn.execute("INSERT INTO marks (ts, value) VALUES (3, 3.0)")
    assert db.conn.execute("SELECT ts FROM marks ORDER BY ts").fetchall() == [(1,), (3,)]


def test_a_flush_outside_a_transaction_commits_and_leaves_none_open() -> None:
    wb = WriteBehind(_conn(), ["marks"])
    wb.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")
    wb.commit()
    wb.flush()
    assert not wb.in_transaction
    wb.raw.rollback()  # nothing left to roll back: the flush committed
    assert _raw_count(wb, "marks") == 1


def test_the_result_of_a_deferred_write_cannot_be_read() -> None:
    wb = WriteBehind(_conn(), ["marks"])
    cur = wb.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")
    with pytest.raises(DeferredResult, match="rowid"):
        _ = cur.lastrowid
    with pytest.raises(DeferredResult, match="row count"):
        _ = cur.rowcount


def test_closing_a_file_store_writes_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    wb = WriteBehind(_conn(path), ["marks"])
    wb.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")
    wb.commit()
    wb.execute("INSERT INTO marks (ts, value) VALUES (2, 2.0)")  # never committed
    wb.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT ts FROM marks").fetchall() == [(1,)]


def test_a_transaction_in_which_nothing_ran_never_reaches_sqlite() -> None:
    sent: list[str] = []
    raw = _conn()
    db = Database(WriteBehind(raw, ["marks"]))  # type: ignore[arg-type]
    raw.set_trace_callback(sent.append)
    with db.atomic():
        assert db.conn.in_transaction
        db.conn.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")
        with db.atomic():
            db.conn.execute("INSERT INTO marks (ts, value) VALUES (2, 2.0)")
    assert sent == [] and not db.conn.in_transaction
    with db.atomic():
        db.conn.execute("INSERT INTO notes (text) VALUES ('runs now')")
    assert sent[0] == "BEGIN" and sent[-1] == "COMMIT"
    assert db.conn.execute("SELECT count(*) FROM marks").fetchone()[0] == 2


def test_a_held_savepoint_rolls_back_the_writes_made_after_it() -> None:
    db = Database(WriteBehind(_conn(), ["marks"]))  # type: ignore[arg-type]
    with db.atomic():
        db.conn.execute("INSERT INTO notes (text) VALUES ('outer')")  # the BEGIN is sent
        with pytest.raises(RuntimeError), db.atomic():
            db.conn.execute("INSERT INTO marks (ts, value) VALUES (2, 2.0)")
            db.conn.execute("INSERT INTO notes (text) VALUES ('inner')")  # savepoint sent
            raise RuntimeError("inner block fails")
    assert db.conn.execute("SELECT text FROM notes").fetchall() == [("outer",)]
    assert db.conn.execute("SELECT count(*) FROM marks").fetchone()[0] == 0


def _traced(wb: WriteBehind) -> list[str]:
    seen: list[str] = []
    wb.raw.set_trace_callback(seen.append)
    return seen


def test_a_read_of_a_quiet_table_is_answered_again_until_the_table_is_touched() -> None:
    wb = WriteBehind(_conn(), ["marks"], quiet=["notes"])
    read = "SELECT text FROM notes WHERE id >= ? ORDER BY id"
    wb.execute("INSERT INTO notes (text) VALUES ('a')")
    wb.commit()
    seen = _traced(wb)
    assert wb.execute(read, (1,)).fetchall() == [("a",)]
    assert wb.execute(read, (1,)).fetchone() == ("a",)
    assert list(wb.execute(read, (1,))) == [("a",)]
    assert len(seen) == 1  # the same read, the same parameters: SQLite asked once
    assert wb.execute(read, (2,)).fetchall() == []
    wb.execute("UPDATE notes SET text = 'b' WHERE id = 1")
    wb.executemany("INSERT INTO notes (text) VALUES (?)", [("c",)])
    assert wb.execute(read, (1,)).fetchall() == [("b",), ("c",)]
    wb.rollback()
    assert wb.execute(read, (1,)).fetchall() == [("a",)]
    with Database(wb).atomic():  # type: ignore[arg-type]
        wb.execute("SAVEPOINT inner")
        wb.execute("DELETE FROM notes")
        assert wb.execute(read, (1,)).fetchall() == []
        wb.execute("ROLLBACK TO inner")
        assert wb.execute(read, (1,)).fetchall() == [("a",)]


def test_reads_that_reach_beyond_the_quiet_tables_are_never_remembered() -> None:
    wb = WriteBehind(_conn(), ["marks"], quiet=["notes"])
    read = "SELECT count(*) FROM notes JOIN marks ON marks.ts = notes.id"
    wb.execute("INSERT INTO notes (text) VALUES ('a')")
    assert wb.execute(read).fetchone() == (0,)
    wb.execute("INSERT INTO marks (ts, value) VALUES (1, 1.0)")  # deferred, then flushed
    assert wb.execute(read).fetchone() == (1,)
    wb.raw.execute("INSERT INTO notes (text) VALUES ('b')")
    wb.cursor().execute("INSERT INTO notes (text) VALUES ('c')")
    assert wb.execute("SELECT count(*) FROM notes").fetchone() == (3,)
