"""The scrape-time reads of `engine.process.metrics`: rows added to the append-only
tables since the last scrape (by id range), the command queue and the engine row's
gauges. Every read here is cheap on a large database: an id range, an index or one row.
"""

from __future__ import annotations

import sqlite3

# The append-only tables counted by id: what was added since the last scrape.
TAILED = ("order_events", "fills", "signals", "alerts", "commands")

Span = tuple[int, int]  # (after, upto]: the ids added since the last scrape


def last_id(conn: sqlite3.Connection, table: str) -> int:
    if table not in TAILED:
        raise ValueError(f"{table} is not a tailed table")
    return int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])


def order_statuses(conn: sqlite3.Connection, span: Span) -> list[tuple[str, int]]:
    """Order status changes in the span, counted per status."""
    rows = conn.execute(
        "SELECT status, count(*) FROM order_events WHERE id > ? AND id <= ? GROUP BY status",
        span,
    )
    return [(str(status), int(n)) for status, n in rows]


def fills(conn: sqlite3.Connection, span: Span) -> int:
    row = conn.execute("SELECT count(*) FROM fills WHERE id > ? AND id <= ?", span).fetchone()
    return int(row[0])


def denials(conn: sqlite3.Connection, span: Span) -> list[tuple[str | None, int]]:
    """Denied intents in the span, counted per risk check."""
    rows = conn.execute(
        # `+verdict`: the id range must drive the search, not the verdict
        # index, which would visit every denial ever stored.
        "SELECT check_name, count(*) FROM signals WHERE id > ? AND id <= ?"
        " AND +verdict = 'denied' GROUP BY check_name",
        span,
    )
    return [(check, int(n)) for check, n in rows]


def alerts_raised(conn: sqlite3.Connection, span: Span) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT severity, count(*) FROM alerts WHERE id > ? AND id <= ? GROUP BY severity", span
    )
    return [(str(severity), int(n)) for severity, n in rows]


def pending_commands(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM commands WHERE status = 'pending'").fetchone()[0])


def commands_after(conn: sqlite3.Connection, after: int) -> list[tuple[int, str, int, int | None]]:
    """(id, status, requested_at, done_at) of every command after id `after`, in order."""
    rows = conn.execute(
        "SELECT id, status, requested_at, done_at FROM commands WHERE id > ? ORDER BY id",
        (after,),
    )
    return [(int(i), str(status), int(asked), done) for i, status, asked, done in rows]


def engine_gauges(
    conn: sqlite3.Connection,
) -> tuple[int | None, str, int | None, int | None] | None:
    """(heartbeat_at, trading_state, broker_connected, last_cycle_at), None without a row."""
    row = conn.execute(
        "SELECT heartbeat_at, trading_state, broker_connected, last_cycle_at"
        " FROM engine WHERE id = 1"
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])
