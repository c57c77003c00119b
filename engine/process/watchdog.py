"""The watchdog: the dead-man's switch seen from its own thread and connection.

The monitor watches the same condition from the trading thread with the same
rule (`deadman_alert`), so one stall is one alert whichever sees it first. The
alert goes through `Alerts`, the one alert path, so it reaches every channel;
when the stuck thread holds the write lock, it is sent from memory through the
store guard instead, once per stall.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.alerts.notify import Notifier
from engine.config import Settings
from engine.process.lease import file_identity
from engine.process.storeguard import StoreGuard
from engine.risk.monitor_rules import deadman_alert
from store import engine_row


class Watchdog:
    def __init__(
        self,
        settings: Settings,
        path: Path,
        clock: Callable[[], int],
        notifier: Notifier,
        guard: StoreGuard,
    ) -> None:
        self.settings = settings
        self.path = path
        self.clock = clock
        self.notifier = notifier
        self.guard = guard
        self._sent: int | None = None  # the stall already sent from memory

    def check(self) -> None:
        if file_identity(self.path) is None:
            return  # the heartbeat deals with a missing file; never create one here
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=0.5)  # never wait long on a stuck writer
        try:
            self._check(conn)
        finally:
            conn.close()

    def _check(self, conn: sqlite3.Connection) -> None:
        marks = engine_row.cycle_marks(conn)
        if marks is None:
            return
        last_cycle_at, started_at = marks
        alert = deadman_alert(
            last_cycle_at,
            started_at,
            self.clock(),
            int(max(self.settings.engine.cycle_period, 0.05) * 1000),
            self.settings.risk.deadman_intervals,
        )
        if alert is None:
            return
        alerts = Alerts(Database(conn), self.clock, deliver=self.notifier.submit)
        if alerts.is_open(alert.dedupe_key):
            return
        try:
            alerts.raise_(
                alert.severity,
                alert.source,
                alert.title,
                alert.message,
                dedupe_key=alert.dedupe_key,
            )
            conn.commit()
        except sqlite3.OperationalError as exc:
            conn.rollback()
            stall = last_cycle_at if last_cycle_at is not None else started_at
            if self._sent != stall:
                self._sent = stall
                self.guard.send(alert.severity, alert.title, f"{alert.message} ({exc})")
