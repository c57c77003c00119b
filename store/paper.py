"""The paper broker's own tables (migration set "paper_broker"): its account, its
positions, the last bar per symbol, its orders and its executions. Plain rows in
and out; the simulated exchange is engine.execution.brokers.paper.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from engine.domain import Fill, Side
from store.schema import OPEN_STATUSES

INSERT_ORDER = (
    "INSERT INTO paper_orders (client_order_id, broker_order_id, symbol, side, qty,"
    " type, purpose, limit_price, stop_price, status, filled_qty, avg_price, triggered,"
    " after_ts, expires_at, created_at, updated_at, detail, parent_id, oco_group)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_ORDER = (
    "UPDATE paper_orders SET status = ?, filled_qty = ?, avg_price = ?, triggered = ?,"
    " updated_at = ?, detail = ? WHERE client_order_id = ?"
)
INSERT_EXECUTION = (
    "INSERT INTO paper_executions (exec_id, client_order_id, broker_order_id, symbol,"
    " side, ts, qty, price, commission, ref_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_POSITION = (
    "INSERT OR REPLACE INTO paper_positions (symbol, qty, updated_at) VALUES (?, ?, ?)"
)
UPSERT_BAR = (
    "INSERT OR REPLACE INTO paper_bars (symbol, ts, open, high, low, close, volume)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SAVE_ACCOUNT = (
    "UPDATE paper_account SET cash = ?, order_seq = ?, exec_seq = ?, updated_at = ? WHERE id = 1"
)


def insert_order(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(INSERT_ORDER, row)


def update_order(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(UPDATE_ORDER, row)


def move_prices(
    conn: sqlite3.Connection, coid: str, stop: float | None, limit: float | None, now: int
) -> None:
    conn.execute(
        "UPDATE paper_orders SET stop_price = ?, limit_price = ?, updated_at = ?"
        " WHERE client_order_id = ?",
        (stop, limit, now, coid),
    )


def insert_execution(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(INSERT_EXECUTION, row)


def save_position(conn: sqlite3.Connection, symbol: str, qty: float, now: int) -> None:
    conn.execute(UPSERT_POSITION, (symbol, qty, now))


def save_bar(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(UPSERT_BAR, row)


def save_account(
    conn: sqlite3.Connection, cash: float, order_seq: int, exec_seq: int, now: int
) -> None:
    conn.execute(SAVE_ACCOUNT, (cash, order_seq, exec_seq, now))


def order_state(conn: sqlite3.Connection, coid: str) -> tuple[Any, ...] | None:
    """(broker_order_id, status, filled_qty, avg_price) of an order, working or not."""
    row = conn.execute(
        "SELECT broker_order_id, status, filled_qty, avg_price FROM paper_orders"
        " WHERE client_order_id = ?",
        (coid,),
    ).fetchone()
    return None if row is None else tuple(row)


def order_states(conn: sqlite3.Connection, coids: list[str]) -> dict[str, tuple[Any, ...]]:
    """`order_state` of each order the broker has, by client order id."""
    if not coids:
        return {}
    marks = ",".join("?" * len(coids))
    found = conn.execute(
        "SELECT client_order_id, broker_order_id, status, filled_qty, avg_price"
        f" FROM paper_orders WHERE client_order_id IN ({marks})",
        coids,
    )
    return {str(r[0]): tuple(r[1:]) for r in found}


def executions(conn: sqlite3.Connection, coid: str) -> list[Fill]:
    rows = conn.execute(
        "SELECT exec_id, symbol, side, ts, qty, price, commission, ref_price"
        " FROM paper_executions WHERE client_order_id = ? ORDER BY ts, exec_id",
        (coid,),
    ).fetchall()
    return [Fill(coid, r[0], r[1], Side(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]


def executions_since(conn: sqlite3.Connection, since: int | None) -> list[Fill]:
    """Every execution at or after `since` (None: all), oldest first."""
    rows = conn.execute(
        "SELECT client_order_id, exec_id, symbol, side, ts, qty, price, commission, ref_price"
        " FROM paper_executions WHERE ts >= ? ORDER BY ts, exec_id",
        (since if since is not None else -(2**62),),
    ).fetchall()
    return [Fill(r[0], r[1], r[2], Side(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows]


def account(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
    """(cash, order_seq, exec_seq, starting_cash), or None before the first start."""
    row = conn.execute(
        "SELECT cash, order_seq, exec_seq, starting_cash FROM paper_account WHERE id = 1"
    ).fetchone()
    return None if row is None else tuple(row)


def open_account(conn: sqlite3.Connection, starting_cash: float) -> None:
    conn.execute(
        "INSERT INTO paper_account (id, cash, starting_cash, order_seq, exec_seq,"
        " updated_at) VALUES (1, ?, ?, 0, 0, NULL)",
        (starting_cash, starting_cash),
    )


def positions(conn: sqlite3.Connection) -> dict[str, float]:
    return {s: float(q) for s, q in conn.execute("SELECT symbol, qty FROM paper_positions")}


def bars(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT symbol, ts, open, high, low, close, volume FROM paper_bars"
    ).fetchall()


def working_orders(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    """Every open order's row, oldest first."""
    yield from conn.execute(
        "SELECT client_order_id, broker_order_id, symbol, side, qty, type, purpose,"
        " limit_price, stop_price, status, filled_qty, avg_price, triggered, after_ts,"
        f" expires_at, created_at, parent_id, oco_group FROM paper_orders"
        f" WHERE status IN {OPEN_STATUSES} ORDER BY rowid"
    )
