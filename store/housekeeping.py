"""Pruning per-cycle facts: old rows deleted in small batches, each committed on its
own, so the writer never holds the lock for long. Which tables are pruned and from
when is `engine.process.housekeeping`'s decision; the tables allowed are named here.
"""

from __future__ import annotations

from sqlite_utils import Database

# table -> its time column: only per-cycle facts, never the trading record.
PRUNABLE = {"cycles": "started_at", "regimes": "ts", "predictions": "ts"}


def delete_before(db: Database, table: str, cutoff: int, batch: int) -> int | None:
    """Delete the rows of `table` stamped before `cutoff`, `batch` rows a commit;
    returns how many, or None when the table does not exist."""
    column = PRUNABLE[table]
    if not db.table(table).exists():
        return None
    total = 0
    while True:
        cur = db.conn.execute(
            f"DELETE FROM {table} WHERE rowid IN"
            f" (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)",
            (cutoff, batch),
        )
        db.conn.commit()
        total += cur.rowcount
        if cur.rowcount < batch:
            return total
