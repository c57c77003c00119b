"""The daily job's pruning: keep a marathon's database bounded.

Per-cycle facts (cycles, regimes, model predictions) grow by hundreds of thousands
of rows a day at the default settings; after `engine.keep_cycles_days` they are
pruned in small batches, so the writer never holds the lock for long. Orders,
fills, trades, equity, alerts, audit and bars are kept: they are the trading
record (and bars are the models' training data).

The daily job then backs up (engine/process/backup.py).
"""

from __future__ import annotations

import logging

from sqlite_utils import Database

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
BATCH = 20_000
# table -> its time column and that column's clock; only per-cycle facts, never
# the trading record. Cycles are stamped on the wall clock, regimes and model
# predictions on market time (a replay of 2006 must not lose them to a 2026 cutoff).
PRUNED = {
    "cycles": ("started_at", "wall"),
    "regimes": ("ts", "market"),
    "predictions": ("ts", "market"),
}


def prune(
    db: Database, now: int, keep_days: float, *, market_now: int | None = None
) -> dict[str, int]:
    """Delete per-cycle rows older than `keep_days` on their own clock (`now` is the
    wall's, `market_now` the market's, default the same); returns rows deleted per table."""
    keep = int(keep_days * DAY_MS)
    cutoffs = {"wall": now - keep, "market": (now if market_now is None else market_now) - keep}
    deleted: dict[str, int] = {}
    conn = db.conn
    for table, (column, clock) in PRUNED.items():
        if not db.table(table).exists():
            continue
        cutoff = cutoffs[clock]
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
