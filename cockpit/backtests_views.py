"""Read models of backtest and sweep runs for the Backtests page: the runs table
(`backtest_runs`, empty when no backtest has created it) and each run's files."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from store.db import maybe_reader

PathLike = str | os.PathLike[str] | None


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


def _file(run: RunRow, name: str) -> Path | None:
    if not run.out_dir:
        return None
    path = Path(run.out_dir) / name
    return path if path.is_file() else None


def equity_of(run: RunRow) -> pd.DataFrame:
    """The run's equity curve (ts as UTC datetimes, equity), empty when missing."""
    path = _file(run, "equity.csv")
    if path is None:
        return pd.DataFrame(columns=["ts", "equity"])
    df = pd.read_csv(path, usecols=["ts", "equity"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def html_of(run: RunRow, name: str) -> str | None:
    """report.html of a backtest, heatmap.html of a sweep; None when missing."""
    path = _file(run, name)
    return path.read_text(encoding="utf-8") if path is not None else None
