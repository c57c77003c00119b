"""The account aggregate: the starting cash (`account`, one row for the account's
life) and the deposits and withdrawals made since (`cash_movements`)."""

from __future__ import annotations

import sqlite3


def recorded_starting_cash(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT starting_cash FROM account WHERE id = 1").fetchone()
    return None if row is None else float(row[0])


def record_starting_cash(conn: sqlite3.Connection, starting_cash: float, now: int) -> None:
    """In the caller's transaction."""
    conn.execute(
        "INSERT INTO account (id, starting_cash, created_at) VALUES (1, ?, ?)",
        (starting_cash, now),
    )


def insert_movement(
    conn: sqlite3.Connection, amount: float, reason: str, actor: str, now: int
) -> int:
    cursor = conn.execute(
        "INSERT INTO cash_movements (ts, amount, reason, actor) VALUES (?, ?, ?, ?)",
        (now, amount, reason, actor),
    )
    return int(cursor.lastrowid or 0)


def net_movements(
    conn: sqlite3.Connection, since: int | None = None, until: int | None = None
) -> float:
    """Deposits less withdrawals with since <= ts <= until (either end open)."""
    row = conn.execute(
        "SELECT TOTAL(amount) FROM cash_movements WHERE ts >= ? AND ts <= ?",
        (since if since is not None else -(2**62), until if until is not None else 2**62),
    ).fetchone()
    return float(row[0] or 0.0)


def movements(conn: sqlite3.Connection) -> list[tuple[int, float]]:
    """Every movement (ts, amount), oldest first."""
    rows = conn.execute("SELECT ts, amount FROM cash_movements ORDER BY ts")
    return [(int(ts), float(amount)) for ts, amount in rows]
