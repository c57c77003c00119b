"""The daily job's pruning: keep a marathon's database bounded.

Per-cycle facts (cycles, regimes, model predictions) grow by hundreds of thousands
of rows a day at the default settings; after `engine.keep_cycles_days` they are
pruned in small batches, so the writer never holds the lock for long. Orders,
fills, trades, equity, alerts, audit and bars are kept: they are the trading
record (and bars are the models' training data).

The daily job then backs up (engine/backup.py).
"""

from __future__ import annotations

import logging

from sqlite_utils import Database

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
BATCH = 20_000
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
