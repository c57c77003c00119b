"""The orders aggregate: `orders`, `order_events`, `fills` and the order's link to its
`signals` row. Every statement the OMS runs lives here; nothing here decides.

Writes join the caller's transaction (the OMS opens one per submission and one per
batch of broker reports); `transaction()` opens one, or a savepoint inside an open
one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlite_utils import Database

from engine.domain import ExitReason, Fill, Order, OrderStatus, OrderType, Purpose, Side
from store.db import atomic
from store.schema import OPEN_STATUSES

_COLUMNS = (
    "client_order_id, symbol, side, qty, type, purpose, status, limit_price, stop_price,"
    " stop_loss, take_profit, filled_qty, avg_price, broker_order_id, created_at, expires_at,"
    " reason, ref_price, parent_id, oco_group, exit_reason"
)

INSERT_ORDER = (
    "INSERT INTO orders (client_order_id, symbol, side, qty, type, purpose, status,"
    " limit_price, stop_price, stop_loss, take_profit, filled_qty, ref_price, sizing,"
    " reason, created_at, updated_at, expires_at, parent_id, oco_group, exit_reason)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0.0, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_EVENT = "INSERT INTO order_events (client_order_id, ts, status, detail) VALUES (?, ?, ?, ?)"
UPDATE_ORDER = (
    "UPDATE orders SET status = ?, filled_qty = ?, avg_price = ?, broker_order_id = ?,"
    " updated_at = ? WHERE client_order_id = ?"
)
INSERT_FILL = (
    "INSERT INTO fills (client_order_id, exec_id, ts, symbol, side, qty, price, commission,"
    " ref_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_FILL_ONCE = INSERT_FILL.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
INSERT_SIGNAL = (
    "INSERT INTO signals (cycle_id, ts, symbol, side, qty, purpose, strength, model_version,"
    " verdict, check_name, reason, client_order_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

Event = tuple[str, int, str, str]  # client_order_id, ts, status, detail


def order_from_row(row: Sequence[Any]) -> tuple[Order, float | None]:
    """An `orders` row (in `_COLUMNS` order) as the order and its decision price."""
    r = row
    order = Order(
        client_order_id=r[0],
        symbol=r[1],
        side=Side(r[2]),
        qty=r[3],
        order_type=OrderType(r[4]),
        purpose=Purpose(r[5]),
        status=OrderStatus(r[6]),
        limit_price=r[7],
        stop_price=r[8],
        stop_loss=r[9],
        take_profit=r[10],
        filled_qty=r[11] or 0.0,
        avg_price=r[12],
        broker_order_id=r[13],
        created_at=r[14] or 0,
        expires_at=r[15],
        reason=r[16] or "",
        parent_id=r[18],
        oco_group=r[19],
        exit_reason=ExitReason(r[20]) if r[20] else None,
    )
    return order, r[17]


def fill_row(fill: Fill) -> tuple[Any, ...]:
    return (
        fill.client_order_id,
        fill.exec_id,
        fill.ts,
        fill.symbol,
        fill.side.value,
        fill.qty,
        fill.price,
        fill.commission,
        fill.ref_price,
    )


def insert_signal(conn: sqlite3.Connection, row: Sequence[Any], coid: str | None) -> int:
    """A `signals` row: (cycle_id, ts, symbol, side, qty, purpose, strength,
    model_version, verdict, check_name, reason), and the order it became, if any."""
    return int(conn.execute(INSERT_SIGNAL, (*row, coid)).lastrowid or 0)


def insert_fill(conn: sqlite3.Connection, fill: Fill) -> None:
    """A fill booked outside the OMS (adopting the broker's positions); a repeated
    exec id raises."""
    conn.execute(INSERT_FILL, fill_row(fill))


def last_execution_ts(conn: sqlite3.Connection) -> int | None:
    """When the newest broker execution booked was made (the operator's adjusting
    fills, exec ids `adopt:...`, aside)."""
    row = conn.execute("SELECT max(ts) FROM fills WHERE exec_id NOT LIKE 'adopt:%'").fetchone()
    return None if row is None or row[0] is None else int(row[0])


class OrderRepository:
    """The OMS's statements on one writer connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn = db.conn

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with atomic(self.conn, "oms"):
            yield

    # -- reading ---------------------------------------------------------------

    def load(self, coid: str) -> tuple[Order, float | None] | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE client_order_id = ?", (coid,)
        ).fetchone()
        return order_from_row(row) if row else None

    def load_open(self) -> list[tuple[Order, float | None]]:
        """Every order still open, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE status IN {OPEN_STATUSES} ORDER BY id"
        ).fetchall()
        return [order_from_row(r) for r in rows]

    # -- writing ---------------------------------------------------------------

    def insert_orders(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """`order_row`s, NEW."""
        self.conn.executemany(INSERT_ORDER, rows)

    def insert_signal(self, row: Sequence[Any], coid: str | None) -> int:
        return insert_signal(self.conn, row, coid)

    @staticmethod
    def order_row(order: Order, ref_price: float, now: int, sizing: str) -> tuple[Any, ...]:
        return (
            order.client_order_id,
            order.symbol,
            order.side.value,
            order.qty,
            order.order_type.value,
            order.purpose.value,
            OrderStatus.NEW.value,
            order.limit_price,
            order.stop_price,
            order.stop_loss,
            order.take_profit,
            ref_price,
            sizing,
            order.reason,
            now,
            now,
            order.expires_at,
            order.parent_id,
            order.oco_group,
            order.exit_reason.value if order.exit_reason else None,
        )

    def link_signal(self, signal_id: int, coid: str) -> None:
        self.conn.execute("UPDATE signals SET client_order_id = ? WHERE id = ?", (coid, signal_id))

    def insert_events(self, events: Iterable[Event]) -> None:
        self.conn.executemany(INSERT_EVENT, events)

    def update_orders(self, orders: Iterable[tuple[Order, int]]) -> None:
        """Status, fill state and broker id of each order, stamped with its time."""
        self.conn.executemany(
            UPDATE_ORDER,
            [
                (
                    o.status.value,
                    o.filled_qty,
                    o.avg_price,
                    o.broker_order_id,
                    now,
                    o.client_order_id,
                )
                for o, now in orders
            ],
        )

    def insert_fill_once(self, fill: Fill) -> bool:
        """Book the fill unless its exec id is already booked; True when it was new."""
        return self.conn.execute(INSERT_FILL_ONCE, fill_row(fill)).rowcount == 1

    def move_stop(self, coid: str, stop: float, reason: ExitReason, now: int) -> None:
        self.conn.execute(
            "UPDATE orders SET stop_price = ?, exit_reason = ?, ref_price = ?, updated_at = ?"
            " WHERE client_order_id = ?",
            (stop, reason.value, stop, now, coid),
        )
