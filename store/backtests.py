"""Backtest and sweep runs in the state store: written by `engine backtest` and
`engine sweep` (a short write when a run starts, as it progresses, and when it
ends); the Backtests page reads them through `cockpit.backtests_views`. The table
is the "backtests" migration set in `store.schema`.

A run's outcome is read back from its own in-memory store when the run ends
(`equity_curve`, `round_trips`, `orders`, `regime_calls`, `denials`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from store.db import now_ms, open_writer

PathLike = str | os.PathLike[str] | None


def _write(path: PathLike, sql: str, args: tuple[Any, ...]) -> None:
    db = open_writer(path)
    try:
        with db.conn:
            db.conn.execute(sql, args)
    finally:
        db.conn.close()


def start_run(
    path: PathLike,
    run_id: str,
    *,
    kind: str,
    strategy: str,
    symbols: str,
    out_dir: str,
    config: dict[str, Any],
    command_id: int | None = None,
) -> None:
    _write(
        path,
        "INSERT OR REPLACE INTO backtest_runs (run_id, kind, status, progress, created_at,"
        " strategy, symbols, out_dir, config, metrics, message, command_id)"
        " VALUES (?, ?, 'running', 0, ?, ?, ?, ?, ?, '{}', '', ?)",
        (
            run_id,
            kind,
            now_ms(),
            strategy,
            symbols,
            out_dir,
            json.dumps(config, default=str),
            command_id,
        ),
    )


def set_progress(path: PathLike, run_id: str, progress: float) -> None:
    _write(path, "UPDATE backtest_runs SET progress = ? WHERE run_id = ?", (progress, run_id))


def finish_run(
    path: PathLike, run_id: str, metrics: dict[str, Any] | None, message: str = ""
) -> None:
    """Done with its metrics, or failed (metrics None) with the message."""
    _write(
        path,
        "UPDATE backtest_runs SET status = ?, progress = ?, finished_at = ?, metrics = ?,"
        " message = ? WHERE run_id = ?",
        (
            "done" if metrics is not None else "failed",
            1.0 if metrics is not None else None,
            now_ms(),
            json.dumps(metrics or {}, default=str),
            message,
            run_id,
        ),
    )


def set_out_dir(path: PathLike, run_id: str, out_dir: str) -> None:
    _write(path, "UPDATE backtest_runs SET out_dir = ? WHERE run_id = ?", (out_dir, run_id))


# ------------------------------------------------------------- a run's outcome

EQUITY_COLUMNS = ("ts", "equity", "cash", "drawdown", "gross_exposure")
# The trade's own exit reason and levels: the stop a trailing stop had moved to when
# it filled, not the entry's first stop.
TRADE_COLUMNS = (
    "symbol",
    "side",
    "qty",
    "entry_ts",
    "entry_price",
    "exit_ts",
    "exit_price",
    "pnl",
    "commission",
    "exit_reason",
    "stop",
    "target",
)
ORDER_COLUMNS = (
    "client_order_id",
    "symbol",
    "side",
    "qty",
    "type",
    "purpose",
    "status",
    "filled_qty",
    "avg_price",
    "stop_loss",
    "take_profit",
    "created_at",
    "reason",
)


def _dicts(conn: sqlite3.Connection, columns: tuple[str, ...], rest: str) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {', '.join(columns)} {rest}").fetchall()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def equity_curve(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every equity mark (EQUITY_COLUMNS), in time order."""
    return _dicts(conn, EQUITY_COLUMNS, "FROM equity ORDER BY ts")


def round_trips(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every closed round trip (TRADE_COLUMNS), in the order they closed."""
    return _dicts(conn, TRADE_COLUMNS, "FROM trades ORDER BY exit_ts, id")


def orders(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every order (ORDER_COLUMNS), in the order they were made."""
    return _dicts(conn, ORDER_COLUMNS, "FROM orders ORDER BY id")


def regime_calls(conn: sqlite3.Connection) -> list[tuple[str, int, str]]:
    """(symbol, ts, regime) of every regime call, in the order they were made."""
    rows = conn.execute("SELECT symbol, ts, regime FROM regimes ORDER BY id")
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def denials(conn: sqlite3.Connection) -> dict[str, int]:
    """Denied intents per risk check, the most frequent first."""
    rows = conn.execute(
        "SELECT check_name, count(*) FROM signals WHERE verdict = 'denied'"
        " GROUP BY check_name ORDER BY 2 DESC"
    ).fetchall()
    return dict(rows)
