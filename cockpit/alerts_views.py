"""The Alerts page's read model: alerts by filter, their counts over time, and
their deliveries outside the cockpit, dead letters included."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cockpit.reader import HOUR_MS, SEVERITIES, PathLike, distinct, frame, one, read
from engine.alerts.deliveries import recent

__all__ = [
    "ALERT_COLUMNS",
    "SEVERITIES",
    "AlertFilter",
    "alert_counts_over_time",
    "alert_sources",
    "alerts",
    "alerts_count",
    "deliveries",
]


@dataclass(frozen=True)
class AlertFilter:
    severities: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: int | None = None
    until: int | None = None
    unacked_only: bool = False

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, values in (("severity", self.severities), ("source", self.sources)):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            params.append(self.until)
        if self.unacked_only:
            clauses.append("acked_at IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


ALERT_COLUMNS = [
    "id",
    "ts",
    "last_ts",
    "severity",
    "source",
    "title",
    "message",
    "count",
    "acked_at",
    "acked_by",
]


def alert_sources(path: PathLike) -> list[str]:
    with read(path) as conn:
        return distinct(conn, "alerts", "source")


def alerts(path: PathLike, flt: AlertFilter, limit: int = 500) -> pd.DataFrame:
    where, params = flt.where()
    with read(path) as conn:
        return frame(
            conn,
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts{where} ORDER BY ts DESC, id DESC"
            " LIMIT ?",
            [*params, limit],
            ALERT_COLUMNS,
        )


def alerts_count(path: PathLike, flt: AlertFilter) -> int:
    where, params = flt.where()
    with read(path) as conn:
        row = one(conn, f"SELECT COUNT(*) FROM alerts{where}", params)
    return int(row[0]) if row else 0


def alert_counts_over_time(
    path: PathLike, flt: AlertFilter, bucket_ms: int = HOUR_MS
) -> pd.DataFrame:
    """Alerts per time bucket and severity (bucket start in epoch ms)."""
    where, params = flt.where()
    with read(path) as conn:
        return frame(
            conn,
            f"SELECT (ts / ?) * ? AS bucket, severity, COUNT(*) AS alerts FROM alerts{where}"
            " GROUP BY bucket, severity ORDER BY bucket",
            [bucket_ms, bucket_ms, *params],
            ["bucket", "severity", "alerts"],
        )


DELIVERY_COLUMNS = ["ts", "status", "channel", "target", "alerts", "title", "attempts", "error"]


def deliveries(
    path: str | os.PathLike[str] | None = None, *, dead_only: bool = False, limit: int = 200
) -> pd.DataFrame:
    """Newest first; empty before the engine has run or delivered anything."""
    with read(path) as conn:
        rows = recent(conn, dead_only=dead_only, limit=limit) if conn is not None else []
    if not rows:
        return pd.DataFrame(columns=DELIVERY_COLUMNS)
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
        columns=DELIVERY_COLUMNS,
    )
