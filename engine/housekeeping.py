"""The daily job: keep a marathon's database bounded, and back it up.

Per-cycle facts (cycles, regimes, model predictions) grow by hundreds of thousands
of rows a day at the default settings; after `engine.keep_cycles_days` they are
pruned in small batches, so the writer never holds the lock for long. Orders,
fills, trades, equity, alerts, audit and bars are kept: they are the trading
record (and bars are the models' training data).

The backup is SQLite's online backup of the whole database into `var/backups/`,
consistent while the engine keeps writing; the newest `KEEP_BACKUPS` are kept.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from state.db import private_file

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
BATCH = 20_000
KEEP_BACKUPS = 7
# table -> its time column; only per-cycle facts, never the trading record
PRUNED = {"cycles": "started_at", "regimes": "ts", "predictions": "ts"}


def prune(db: Database, now: int, keep_days: float) -> dict[str, int]:
    """Delete per-cycle rows older than `keep_days`; returns rows deleted per table."""
    cutoff = now - int(keep_days * DAY_MS)
    deleted: dict[str, int] = {}
    conn = db.conn
    for table, column in PRUNED.items():
        if not db.table(table).exists():
            continue
        total = 0
        while True:
            cur = conn.execute(
                f"DELETE FROM {table} WHERE rowid IN"
                f" (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)",
                (cutoff, BATCH),
            )
            conn.commit()
            total += cur.rowcount
            if cur.rowcount < BATCH:
                break
        deleted[table] = total
    return deleted


def backup(db: Database, folder: Path, now: int) -> Path:
    """An online copy of the database; older copies beyond KEEP_BACKUPS are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y%m%d-%H%M%S")
    target = folder / f"cockpit-{stamp}.db"
    started = time.perf_counter()
    copy = sqlite3.connect(private_file(target))
    try:
        db.conn.backup(copy, pages=4096, sleep=0.001)
    finally:
        copy.close()
    for old in sorted(folder.glob("cockpit-*.db"))[:-KEEP_BACKUPS]:
        old.unlink()
    log.info("backup %s in %.1f s", target.name, time.perf_counter() - started)
    return target
