"""The Alerts page's read model of deliveries outside the cockpit, dead letters included."""

from __future__ import annotations

import os

import pandas as pd

from engine.alerts.deliveries import recent
from store.db import maybe_reader

COLUMNS = ["ts", "status", "channel", "target", "alerts", "title", "attempts", "error"]


def deliveries(
    path: str | os.PathLike[str] | None = None, *, dead_only: bool = False, limit: int = 200
) -> pd.DataFrame:
    """Newest first; empty before the engine has run or delivered anything."""
    with maybe_reader(path) as conn:
        rows = recent(conn, dead_only=dead_only, limit=limit) if conn is not None else []
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame(
        [
            (
                r.ts,
                r.status.value,
                r.channel,
                r.target,
                ", ".join(f"#{i}" for i in r.alert_ids),
                r.title,
                r.attempts,
                r.error,
            )
            for r in rows
        ],
        columns=COLUMNS,
    )
