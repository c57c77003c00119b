"""What a backup and the doctor ask of SQLite itself: an online copy of a database
that is being written, made self-contained, and the checks of a file (integrity,
how many tables). The folder, the manifest and the restore are
`engine.process.backup`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def online_copy(conn: sqlite3.Connection, target: Path) -> Iterator[sqlite3.Connection]:
    """Copy the database `conn` has open into `target` (consistent while the engine
    writes) and yield a connection to the copy, closed after the block."""
    copy = sqlite3.connect(target)
    try:
        conn.backup(copy, pages=4096, sleep=0.001)
        # A self-contained file: no WAL beside it to lose in a copy.
        copy.execute("PRAGMA journal_mode = DELETE")
        yield copy
    finally:
        copy.close()


def integrity(conn: sqlite3.Connection, *, quick: bool = False) -> str:
    """SQLite's integrity check (`quick`: without matching indexes to their tables):
    "ok", or the first problem it found."""
    pragma = "quick_check" if quick else "integrity_check"
    return str(conn.execute(f"PRAGMA {pragma}").fetchone()[0])


def table_count(conn: sqlite3.Connection) -> int:
    return int(
        conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    )
