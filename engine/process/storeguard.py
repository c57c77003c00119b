"""The store as the engine depends on it: room to write, and the file it opened.

A full disk and a database file deleted or replaced under a running engine both
mean the engine can no longer record what it does, so neither can be reported
through the database. The operator hears through the notifier, which sends from
memory (webhook, email). Each condition is logged and sent once when it starts
and once when it ends, never once per cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from engine.alerts.notify import AlertMessage
from engine.domain import Severity
from engine.process.lease import file_identity
from store.db import in_memory

log = logging.getLogger(__name__)

SOURCE = "store"
FULL_BLOCK = "the database has no room to write (disk full): new entries blocked"


class StoreGuard:
    def __init__(
        self,
        path: Path,
        clock: Callable[[], int],
        send: Callable[[AlertMessage], None] | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        self._send = send
        self._identity = file_identity(path)
        self.full_since: int | None = None
        self.lost: str | None = None

    def file_problem(self) -> str | None:
        """Why the database file is no longer the one the engine opened, or None."""
        if in_memory(self.path):
            return None
        now = file_identity(self.path)
        if now is None:
            return f"the database file {self.path} is gone"
        if now != self._identity:
            return f"the database file {self.path} was replaced by another file"
        return None

    def on_lost(self, reason: str) -> bool:
        """The file is gone or replaced; True the first time (log and send once)."""
        if self.lost is not None:
            return False
        self.lost = reason
        log.critical("%s: trading halted; the engine stops", reason)
        self.send(
            Severity.CRITICAL,
            "Database file gone: trading halted, engine stopped",
            f"{reason}. The engine halted trading and stopped, releasing its lock; start"
            " it again on the right file (restore a backup if the file was lost).",
        )
        return True

    def on_full(self, error: BaseException) -> bool:
        """A write was refused for lack of room; True when this starts the condition."""
        if self.full_since is not None:
            log.debug("store still full: %s", error)
            return False
        self.full_since = self._clock()
        log.error(
            "store full at %s (%s): new entries blocked until writes succeed", self.path, error
        )
        self.send(
            Severity.CRITICAL,
            "Disk full: new entries blocked",
            f"{self.path}: {error}. Nothing new can be recorded, so no new entries are"
            " opened; the engine retries every cycle and resumes by itself when there is"
            " room again.",
        )
        return True

    def on_write_ok(self) -> int | None:
        """A cycle was recorded: when that ends a full condition, how long it lasted (ms)."""
        if self.full_since is None:
            return None
        lasted = self._clock() - self.full_since
        self.full_since = None
        log.warning("store writable again after %.0f s: entries allowed", lasted / 1000)
        return lasted

    def send(self, severity: Severity, title: str, message: str) -> None:
        if self._send is not None:
            self._send(AlertMessage(0, self._clock(), severity, SOURCE, title, message))
