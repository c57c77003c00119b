"""Alerts: stored in `alerts`, deduplicated, and handed to a notifier for delivery.

A repeated alert with the same dedupe key, while the first is unacknowledged,
bumps its count (and keeps the higher severity) instead of flooding the log.
Writes go through the engine's writer and are committed by the job that raised
them, so an alert raised inside a cycle lands with that cycle's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlite_utils import Database

from engine.alerts.notify import AlertMessage
from engine.domain import Severity
from store import alerts as stored

log = logging.getLogger(__name__)


class Alerts:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], int],
        deliver: Callable[[AlertMessage], None] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._deliver = deliver

    def is_open(self, dedupe_key: str) -> bool:
        """An unacknowledged alert with this key exists (the condition is already told)."""
        return stored.has_open(self._db.conn, dedupe_key)

    def raise_(
        self,
        severity: Severity,
        source: str,
        title: str,
        message: str = "",
        dedupe_key: str | None = None,
    ) -> int:
        now = self._clock()
        conn = self._db.conn
        level = {"INFO": logging.INFO, "WARNING": logging.WARNING}.get(severity, logging.ERROR)
        log.log(level, "alert %s [%s] %s: %s", severity, source, title, message)
        if dedupe_key:
            row = stored.newest_open(conn, dedupe_key)
            if row:
                alert_id, old, count = row
                worst = max(Severity(old), severity, key=lambda s: s.rank)
                stored.repeat(conn, alert_id, now, message, worst.value)
                if worst.rank > Severity(old).rank and self._deliver:
                    self._deliver(
                        AlertMessage(alert_id, now, worst, source, title, message, count + 1)
                    )
                return alert_id
        alert_id = stored.insert(
            conn,
            now,
            severity=severity.value,
            source=source,
            title=title,
            message=message,
            dedupe_key=dedupe_key,
        )
        if self._deliver:
            self._deliver(AlertMessage(alert_id, now, severity, source, title, message, 1))
        return alert_id


def acknowledge(db: Database, alert_id: int | None, actor: str, now: int) -> int:
    """Acknowledge one alert, or every open one when alert_id is None (not committed)."""
    return stored.acknowledge(db.conn, alert_id, actor, now)
