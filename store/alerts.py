"""The alerts aggregate: `alerts` (raised, deduplicated, acknowledged), the record of
their deliveries (`alert_deliveries`) and the daily digest's window counts.

`engine.alerts` decides what to raise and how to deliver it; this module only reads
and writes rows. Writes are not committed: the caller's transaction owns them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from store.portfolio import last_mark

DELIVERY_COLUMNS = ("ts", "channel", "target", "alert_ids", "title", "status", "attempts", "error")


# ------------------------------------------------------------------ alerts


def has_open(conn: sqlite3.Connection, dedupe_key: str) -> bool:
    """An unacknowledged alert with this key exists."""
    row = conn.execute(
        "SELECT 1 FROM alerts WHERE dedupe_key = ? AND acked_at IS NULL LIMIT 1", (dedupe_key,)
    ).fetchone()
    return row is not None


def newest_open(conn: sqlite3.Connection, dedupe_key: str) -> tuple[int, str, int] | None:
    """(id, severity, count) of the newest unacknowledged alert with this key."""
    row = conn.execute(
        "SELECT id, severity, count FROM alerts"
        " WHERE dedupe_key = ? AND acked_at IS NULL ORDER BY id DESC LIMIT 1",
        (dedupe_key,),
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]), int(row[2]))


def repeat(conn: sqlite3.Connection, alert_id: int, now: int, message: str, severity: str) -> None:
    """One more occurrence of an open alert: its count, time, message and severity."""
    conn.execute(
        "UPDATE alerts SET count = count + 1, last_ts = ?, message = ?, severity = ? WHERE id = ?",
        (now, message, severity, alert_id),
    )


def insert(
    conn: sqlite3.Connection,
    now: int,
    *,
    severity: str,
    source: str,
    title: str,
    message: str,
    dedupe_key: str | None,
) -> int:
    """A new alert raised once; returns its id."""
    cur = conn.execute(
        "INSERT INTO alerts (ts, last_ts, severity, source, title, message, dedupe_key, count)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
        (now, now, severity, source, title, message, dedupe_key),
    )
    return int(cur.lastrowid or 0)


def acknowledge(conn: sqlite3.Connection, alert_id: int | None, actor: str, now: int) -> int:
    """Acknowledge one open alert, or every open one when alert_id is None; how many."""
    if alert_id is None:
        cur = conn.execute(
            "UPDATE alerts SET acked_at = ?, acked_by = ? WHERE acked_at IS NULL", (now, actor)
        )
    else:
        cur = conn.execute(
            "UPDATE alerts SET acked_at = ?, acked_by = ? WHERE id = ? AND acked_at IS NULL",
            (now, actor, alert_id),
        )
    return int(cur.rowcount)


def unacknowledged_by_severity(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT severity, count(*) FROM alerts WHERE acked_at IS NULL GROUP BY severity"
    ).fetchall()
    return {str(severity): int(n) for severity, n in rows}


def first_emergency_stop(conn: sqlite3.Connection) -> int | None:
    """When the first emergency stop's alert was raised, if ever."""
    row = conn.execute(
        "SELECT min(ts) FROM alerts WHERE source = 'control' AND title LIKE 'Emergency stop%'"
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# -------------------------------------------------------------- deliveries


def insert_deliveries(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Delivery outcomes as tuples in DELIVERY_COLUMNS order."""
    conn.executemany(
        f"INSERT INTO alert_deliveries ({', '.join(DELIVERY_COLUMNS)})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def recent_deliveries(
    conn: sqlite3.Connection, *, dead_only: bool, limit: int
) -> list[tuple[Any, ...]]:
    """Newest first, as (id, *DELIVERY_COLUMNS); none in an older database without
    the table."""
    where = "WHERE status = 'dead'" if dead_only else ""
    try:
        rows = conn.execute(
            f"SELECT id, {', '.join(DELIVERY_COLUMNS)}"
            f" FROM alert_deliveries {where} ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    return [tuple(r) for r in rows]


def dead_since(conn: sqlite3.Connection, since: int) -> int:
    try:
        row = conn.execute(
            "SELECT count(*) FROM alert_deliveries WHERE status = 'dead' AND ts >= ?", (since,)
        ).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0])


# ------------------------------------------------------------------ digest


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the daily digest counts in its window [since, until]."""

    equity: float | None  # the newest mark
    drawdown: float | None
    first_equity: float | None  # the window's first mark
    trades: int
    trade_pnl: float
    wins: int
    cycles: int
    failed_cycles: int
    alerts: dict[str, int]  # raised in the window, repeats included, by severity
    unacknowledged: int


def window_counts(conn: sqlite3.Connection, since: int, until: int) -> WindowCounts:
    last = last_mark(conn)
    first = conn.execute(
        "SELECT equity FROM equity WHERE ts >= ? ORDER BY ts LIMIT 1", (since,)
    ).fetchone()
    trades = conn.execute(
        "SELECT count(*), coalesce(sum(pnl), 0), coalesce(sum(pnl > 0), 0) FROM trades"
        " WHERE exit_ts >= ? AND exit_ts <= ?",
        (since, until),
    ).fetchone()
    cycles = conn.execute(
        "SELECT count(*), coalesce(sum(error IS NOT NULL), 0) FROM cycles"
        " WHERE started_at >= ? AND started_at <= ?",
        (since, until),
    ).fetchone()
    alerts = conn.execute(
        "SELECT severity, sum(count) FROM alerts WHERE ts >= ? AND ts <= ? GROUP BY severity",
        (since, until),
    ).fetchall()
    unacked = conn.execute("SELECT count(*) FROM alerts WHERE acked_at IS NULL").fetchone()[0]
    return WindowCounts(
        equity=last[0] if last else None,
        drawdown=last[1] if last else None,
        first_equity=first[0] if first else None,
        trades=int(trades[0]),
        trade_pnl=float(trades[1]),
        wins=int(trades[2]),
        cycles=int(cycles[0]),
        failed_cycles=int(cycles[1]),
        alerts={str(k): int(v) for k, v in alerts},
        unacknowledged=int(unacked),
    )
