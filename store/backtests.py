"""Backtest and sweep runs in the state store: written by `engine backtest` and
`engine sweep` (a short write when a run starts, as it progresses, and when it
ends); the Backtests page reads them through `cockpit.backtests_views`. The table
is the "backtests" migration set in `store.schema`.
"""

from __future__ import annotations

import json
import os
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
