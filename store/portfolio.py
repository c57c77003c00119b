"""The portfolio aggregate: `positions`, `trades` and `equity`, and the rows a
restarted portfolio is replayed from (`fills`, `cash_movements`). Writes join
the caller's transaction; nothing here computes P&L.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from engine.domain import EquitySnapshot, ExitReason, Fill, Position, Side, TradeRecord

UPSERT_POSITION = (
    "INSERT INTO positions (symbol, qty, avg_price, realized_pnl, stop, target, opened_at,"
    " updated_at, last_price, unrealized_pnl) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(symbol) DO UPDATE SET qty = excluded.qty, avg_price = excluded.avg_price,"
    " realized_pnl = excluded.realized_pnl, stop = excluded.stop, target = excluded.target,"
    " opened_at = excluded.opened_at, updated_at = excluded.updated_at,"
    " last_price = excluded.last_price, unrealized_pnl = excluded.unrealized_pnl"
)
DELETE_POSITION = "DELETE FROM positions WHERE symbol = ?"
INSERT_TRADE = (
    "INSERT INTO trades (symbol, side, qty, entry_ts, exit_ts, entry_price, exit_price,"
    " pnl, commission, slippage, exit_reason, stop, target)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Protection:
    symbol: str
    stop: float | None
    target: float | None
    last_price: float | None


def position_row(
    position: Position, now: int, last_price: float | None, unrealized: float
) -> tuple[object, ...]:
    return (
        position.symbol,
        position.qty,
        position.avg_price,
        position.realized_pnl,
        position.stop,
        position.target,
        position.opened_at,
        now,
        last_price,
        unrealized,
    )


def upsert_positions(conn: sqlite3.Connection, rows: Iterable[tuple[object, ...]]) -> None:
    """`position_row`s, each replacing the symbol's row."""
    conn.executemany(UPSERT_POSITION, rows)


def delete_position(conn: sqlite3.Connection, symbol: str) -> None:
    conn.execute(DELETE_POSITION, (symbol,))


def keep_positions(conn: sqlite3.Connection, held: list[str]) -> None:
    """Delete the rows of every symbol not in `held`."""
    marks = ",".join("?" * len(held))
    conn.execute(f"DELETE FROM positions WHERE symbol NOT IN ({marks})", held)


def trade_row(trade: TradeRecord, exit_reason: ExitReason | None) -> tuple[object, ...]:
    return (
        trade.symbol,
        trade.side.value,
        trade.qty,
        trade.entry_ts,
        trade.exit_ts,
        trade.entry_price,
        trade.exit_price,
        trade.pnl,
        trade.commission,
        trade.slippage,
        exit_reason.value if exit_reason else None,
        trade.stop,
        trade.target,
    )


def insert_trade(
    conn: sqlite3.Connection, trade: TradeRecord, exit_reason: ExitReason | None
) -> int:
    cursor = conn.execute(INSERT_TRADE, trade_row(trade, exit_reason))
    return int(cursor.lastrowid or 0)


def insert_equity(conn: sqlite3.Connection, snapshot: EquitySnapshot) -> None:
    """The `equity` row, replacing one at the same ts."""
    conn.execute(
        "INSERT OR REPLACE INTO equity (ts, cash, equity, realized, unrealized, peak,"
        " drawdown, gross_exposure, net_exposure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            snapshot.ts,
            snapshot.cash,
            snapshot.equity,
            snapshot.realized,
            snapshot.unrealized,
            snapshot.peak,
            snapshot.drawdown,
            snapshot.gross_exposure,
            snapshot.net_exposure,
        ),
    )


def fills_after(conn: sqlite3.Connection, fill_id: int) -> Iterator[Fill]:
    """The fills booked after `fill_id`, in booking order."""
    rows = conn.execute(
        "SELECT client_order_id, exec_id, symbol, side, ts, qty, price, commission,"
        " ref_price FROM fills WHERE id > ? ORDER BY id",
        (fill_id,),
    )
    for row in rows:
        yield Fill(row[0], row[1], row[2], Side(row[3]), *row[4:])


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The portfolio after the fills up to `fill_id`, as its JSON `state`; how many
    fills those were and the cash they moved are also columns, for a reader who does
    not parse the state (a load checks the state's own figures against the fills)."""

    fill_id: int
    fills: int
    fill_cash: float
    state: str


def last_fill_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM fills").fetchone()[0])


def save_checkpoint(conn: sqlite3.Connection, checkpoint: Checkpoint, now: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO portfolio_checkpoint"
        " (id, fill_id, fills, fill_cash, state, written_at) VALUES (1, ?, ?, ?, ?, ?)",
        (checkpoint.fill_id, checkpoint.fills, checkpoint.fill_cash, checkpoint.state, now),
    )


def load_checkpoint(conn: sqlite3.Connection) -> Checkpoint | None:
    row = conn.execute(
        "SELECT fill_id, fills, fill_cash, state FROM portfolio_checkpoint WHERE id = 1"
    ).fetchone()
    return None if row is None else Checkpoint(int(row[0]), int(row[1]), float(row[2]), row[3])


def fill_totals(conn: sqlite3.Connection, fill_id: int) -> tuple[int, float, float]:
    """Over the fills up to `fill_id`: how many, the cash they moved, and the sum of
    their absolute cash flows (the scale a rounding difference is measured on)."""
    row = conn.execute(
        "SELECT COUNT(*), TOTAL(CASE side WHEN 'BUY' THEN -qty * price ELSE qty * price END)"
        " - TOTAL(commission), TOTAL(qty * price) + TOTAL(commission) FROM fills WHERE id <= ?",
        (fill_id,),
    ).fetchone()
    return int(row[0]), float(row[1]), float(row[2])


def protections(conn: sqlite3.Connection) -> list[Protection]:
    rows = conn.execute("SELECT symbol, stop, target, last_price FROM positions").fetchall()
    return [Protection(*row) for row in rows]


def total_movements(conn: sqlite3.Connection) -> float:
    """Net deposits less withdrawals since the account began."""
    return float(conn.execute("SELECT TOTAL(amount) FROM cash_movements").fetchone()[0] or 0.0)


def last_peak(conn: sqlite3.Connection) -> float | None:
    """The latest equity snapshot's running peak."""
    row = conn.execute("SELECT peak FROM equity ORDER BY ts DESC LIMIT 1").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def last_mark(conn: sqlite3.Connection) -> tuple[float, float] | None:
    """The latest equity snapshot's (equity, drawdown)."""
    row = conn.execute("SELECT equity, drawdown FROM equity ORDER BY ts DESC LIMIT 1").fetchone()
    return None if row is None else (row[0], row[1])
