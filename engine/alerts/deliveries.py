"""The record of alert deliveries outside the cockpit, dead letters included.

The notifier keeps outcomes in memory (it never touches the database, so it still
works when nothing can be written); the engine's heartbeat moves them into
`alert_deliveries` (the "notify" migration set in `store.schema`). A row
with status `dead` is a dead letter: every attempt on that channel failed. Texts in
a row come from the notifier, which builds them without any secret.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlite_utils import Database

from engine.alerts.notify import Delivery, DeliveryStatus, Notifier
from engine.domain import Severity
from store import alerts as stored


def record(db: Database, deliveries: Iterable[Delivery]) -> int:
    """Insert the outcomes; the caller commits with its own transaction."""
    rows = [
        (
            d.ts,
            d.channel,
            d.target,
            json.dumps(list(d.alert_ids)),
            d.title,
            d.status.value,
            d.attempts,
            d.error,
        )
        for d in deliveries
    ]
    stored.insert_deliveries(db.conn, rows)
    return len(rows)


RaiseAlert = Callable[..., int]  # Alerts.raise_


def take_and_record(notifier: Notifier, db: Database, raise_alert: RaiseAlert) -> int:
    """Record the notifier's outcomes since the last call. A dead letter also raises
    one HIGH alert per failing channel (deduplicated until acknowledged), so the
    cockpit and the channels that still work say that this one does not."""
    deliveries = notifier.take_deliveries()
    record(db, deliveries)
    for d in deliveries:
        if d.status is DeliveryStatus.DEAD:
            raise_alert(
                Severity.HIGH,
                "notify",
                f"Alert channel {d.channel} failing",
                f"{d.target}: {d.error or 'failed'} after {d.attempts} attempt(s);"
                f" alerts {', '.join(map(str, d.alert_ids))} not delivered there",
                dedupe_key=f"delivery-dead:{d.channel}",
            )
    return len(deliveries)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    ts: int
    channel: str
    target: str
    alert_ids: tuple[int, ...]
    title: str
    status: DeliveryStatus
    attempts: int
    error: str


def recent(
    conn: sqlite3.Connection, *, dead_only: bool = False, limit: int = 50
) -> list[DeliveryRow]:
    """Newest first. An older database without the table has no deliveries."""
    rows = stored.recent_deliveries(conn, dead_only=dead_only, limit=limit)
    return [
        DeliveryRow(
            int(r[0]),
            int(r[1]),
            str(r[2]),
            str(r[3] or ""),
            tuple(int(i) for i in json.loads(r[4] or "[]")),
            str(r[5] or ""),
            DeliveryStatus(r[6]),
            int(r[7] or 0),
            str(r[8] or ""),
        )
        for r in rows
    ]
