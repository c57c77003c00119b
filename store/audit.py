"""The audit trail's rows (`audit`): appended, re-hashed once when the chain is keyed,
and read back in order. The hashing and the verdicts are `engine.alerts.audit`'s.

Writes are not committed: the caller's transaction owns them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

ROW_COLUMNS = ("id", "ts", "actor", "action", "payload", "prev_hash", "hash")


def chain(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """Every row oldest first, as tuples in ROW_COLUMNS order."""
    rows = conn.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM audit ORDER BY id")
    return [tuple(r) for r in rows]


def newest(conn: sqlite3.Connection) -> tuple[int, str, int] | None:
    """(id, hash, ts) of the newest row; raises sqlite3.OperationalError without the table."""
    row = conn.execute("SELECT id, hash, ts FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]), int(row[2]))


def append(conn: sqlite3.Connection, row: tuple[int, str, str, str, str, str]) -> None:
    """One row: (ts, actor, action, payload, prev_hash, hash)."""
    conn.execute(
        "INSERT INTO audit (ts, actor, action, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
        row,
    )


def rehash(conn: sqlite3.Connection, row_id: int, prev_hash: str, digest: str) -> None:
    conn.execute(
        "UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev_hash, digest, row_id)
    )
