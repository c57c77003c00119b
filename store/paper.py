"""The paper broker's own tables (migration set "paper_broker"): its account, its
positions, the last bar per symbol, its orders and its executions. Plain rows in
and out; the simulated exchange is engine.execution.brokers.paper. A write of the
broker's collects its rows in `Writes` and writes them together at its end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from engine.domain import Fill, Side
from store.db import atomic
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


def save_bar(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(UPSERT_BAR, row)


MOVE_PRICES = (
    "UPDATE paper_orders SET stop_price = ?, limit_price = ?, updated_at = ?"
    " WHERE client_order_id = ?"
)

# Where an `INSERT_ORDER` row holds what `UPDATE_ORDER` and `MOVE_PRICES` change.
_LIMIT, _STOP, _STATUS, _TRIGGERED, _UPDATED_AT, _DETAIL = 7, 8, 9, 12, 16, 17


class Writes:
    """The rows one write of the paper broker changes, kept until the write ends and
    then written together, one `executemany` per statement: a bracket's three
    orders are one call, not three. An order inserted and then changed within the
    write is one INSERT of its final row, and a position or bar written twice is
    written once, as it ends; the rows are the ones the statements one at a time
    would have left.

    `flush` writes them atomically: a savepoint when there are several rows, none
    for a single row inside the caller's transaction (one statement is atomic by
    itself) and none at all when nothing changed. Single-threaded, like the broker."""

    __slots__ = ("account", "bars", "executions", "moves", "orders", "positions", "updates")

    def __init__(self) -> None:
        self.orders: dict[str, list[Any]] = {}  # INSERT_ORDER rows, by client order id
        self.updates: dict[str, tuple[Any, ...]] = {}  # UPDATE_ORDER rows of older orders
        self.moves: dict[str, tuple[Any, ...]] = {}  # MOVE_PRICES rows of older orders
        self.executions: list[tuple[Any, ...]] = []
        self.positions: dict[str, tuple[Any, ...]] = {}
        self.bars: dict[str, tuple[Any, ...]] = {}
        self.account: tuple[Any, ...] | None = None

    def insert_order(self, row: tuple[Any, ...]) -> None:
        if row[0] in self.orders:
            # What the second INSERT would have raised: the write fails as before.
            raise sqlite3.IntegrityError("UNIQUE constraint failed: paper_orders.client_order_id")
        self.orders[row[0]] = list(row)

    def update_order(self, row: tuple[Any, ...]) -> None:
        """(status, filled_qty, avg_price, triggered, updated_at, detail, client_order_id)"""
        new = self.orders.get(row[6])
        if new is None:
            self.updates[row[6]] = row
            return
        new[_STATUS : _TRIGGERED + 1] = row[:4]
        new[_UPDATED_AT], new[_DETAIL] = row[4], row[5]

    def move_prices(self, coid: str, stop: float | None, limit: float | None, now: int) -> None:
        new = self.orders.get(coid)
        if new is None:
            # Written after the updates: only updated_at is in both, and a write
            # stamps every row it changes with its one time.
            self.moves[coid] = (stop, limit, now, coid)
            return
        new[_STOP], new[_LIMIT], new[_UPDATED_AT] = stop, limit, now

    def clear(self) -> None:
        self.orders.clear()
        self.updates.clear()
        self.moves.clear()
        self.executions.clear()
        self.positions.clear()
        self.bars.clear()
        self.account = None

    def flush(self, conn: sqlite3.Connection, savepoint: str) -> None:
        """Write every row kept, atomically, and forget them; on failure the caller
        clears them (and reads its memory again)."""
        count = (
            len(self.orders)
            + len(self.updates)
            + len(self.moves)
            + len(self.executions)
            + len(self.positions)
            + len(self.bars)
            + (self.account is not None)
        )
        if count == 0:
            return
        if count == 1 and conn.in_transaction:
            self._write(conn)
        else:
            with atomic(conn, savepoint):
                self._write(conn)
        self.clear()

    def _write(self, conn: sqlite3.Connection) -> None:
        for sql, rows in (
            (INSERT_ORDER, self.orders.values()),
            (UPDATE_ORDER, self.updates.values()),
            (MOVE_PRICES, self.moves.values()),
            (INSERT_EXECUTION, self.executions),
            (UPSERT_POSITION, self.positions.values()),
            (UPSERT_BAR, self.bars.values()),
        ):
            if len(rows) == 1:
                conn.execute(sql, next(iter(rows)))
            elif rows:
                conn.executemany(sql, rows)
        if self.account is not None:
            conn.execute(SAVE_ACCOUNT, self.account)


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
