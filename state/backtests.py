"""Backtest and sweep runs in the state store: written by `engine backtest` and
`engine sweep` (a short write when a run starts, as it progresses, and when it
ends), read by the Backtests page. The table belongs to its own migration set, so
a database the backtester never touched simply has no runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from state.db import maybe_reader, now_ms, open_writer
from state.schema import apply_pending

migrations = Migrations("backtests")
PathLike = str | os.PathLike[str] | None


@migrations()
def m001_backtest_runs(db: Database) -> None:
    db.table("backtest_runs").create(
        {
            "run_id": str,
            "kind": str,  # backtest or sweep
            "status": str,  # running, done, failed
            "progress": float,  # 0..1
            "created_at": int,
            "finished_at": int,
            "strategy": str,
            "symbols": str,
            "out_dir": str,
            "config": str,  # JSON
            "metrics": str,  # JSON
            "message": str,
            "command_id": int,
        },
        pk="run_id",
        if_not_exists=True,
    )
    db.table("backtest_runs").create_index(["created_at"], if_not_exists=True)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    kind: str
    status: str
    progress: float
    created_at: int
    finished_at: int | None
    strategy: str
    symbols: str
    out_dir: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    message: str
    command_id: int | None


def _write(path: PathLike, sql: str, args: tuple[Any, ...]) -> None:
    db = open_writer(path)
    try:
        apply_pending(migrations, db)
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


def _row(r: sqlite3.Row) -> RunRow:
    return RunRow(
        run_id=r["run_id"],
        kind=r["kind"],
        status=r["status"],
        progress=float(r["progress"] or 0.0),
        created_at=int(r["created_at"]),
        finished_at=r["finished_at"],
        strategy=r["strategy"] or "",
        symbols=r["symbols"] or "",
        out_dir=r["out_dir"] or "",
        config=json.loads(r["config"] or "{}"),
        metrics=json.loads(r["metrics"] or "{}"),
        message=r["message"] or "",
        command_id=r["command_id"],
    )


def list_runs(path: PathLike, limit: int = 200) -> list[RunRow]:
    """Newest first; empty when there is no database or no run yet."""
    with maybe_reader(path) as conn:
        if conn is None:
            return []
        try:
            rows = conn.execute(
                "SELECT * FROM backtest_runs ORDER BY created_at DESC, run_id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.OperationalError:  # no backtest has created the table yet
            return []
    return [_row(r) for r in rows]


def get_run(path: PathLike, run_id: str) -> RunRow | None:
    return next((r for r in list_runs(path, 10_000) if r.run_id == run_id), None)


def set_out_dir(path: PathLike, run_id: str, out_dir: str) -> None:
    _write(path, "UPDATE backtest_runs SET out_dir = ? WHERE run_id = ?", (out_dir, run_id))
