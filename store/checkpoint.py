"""WAL checkpoints on a thread of their own, off the trading thread.

In WAL mode SQLite copies the log back into the database file (a checkpoint)
inside whichever commit pushes the log past the writer's `wal_autocheckpoint`
(store.db.WRITER_CHECKPOINT_PAGES). The engine's cycle writes a few hundred pages
a cycle (the newest leaf of every symbol in the bars, regimes and predictions
indexes), so every second or so one of its commits would copy tens of megabytes
and wait for two disk syncs: the cycle's worst times. While the engine runs in
real time, `Checkpointer` checkpoints from its own connection every
`every_seconds`, PASSIVE (it never waits for the writer or a reader), so the log
stays far below the writer's threshold, which remains as the backstop for a
stalled checkpointer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from store.db import in_memory

log = logging.getLogger(__name__)


class Checkpointer:
    """`start()` when the engine starts running, `stop()` before it closes its writer;
    an in-memory database has no log, and `start` does nothing."""

    def __init__(self, path: Path, every_seconds: float = 0.25) -> None:
        self.path = path
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if in_memory(self.path):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:  # never create the file: that is the engine's to do
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True, timeout=0)
        except sqlite3.Error as exc:
            log.warning("no checkpoint thread (the writer's backstop remains): %s", exc)
            return
        try:
            configured = failing = False
            while not self._stop.wait(self.every_seconds):
                try:  # a busy database (another connection's exclusive lock) fails either
                    if not configured:
                        conn.execute("PRAGMA synchronous = NORMAL")
                        configured = True
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    failing = False
                except sqlite3.Error as exc:  # the writer's backstop still bounds the log
                    if not failing:
                        log.warning("checkpoint failed (the writer's backstop remains): %s", exc)
                    failing = True
        finally:
            conn.close()
