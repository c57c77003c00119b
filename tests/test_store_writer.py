"""The engine's writer connection: how it commits and when it folds its WAL back."""

from __future__ import annotations

from pathlib import Path

from store.db import WRITER_CHECKPOINT_PAGES, open_writer


def test_the_writer_leaves_checkpoints_to_larger_batches(tmp_path: Path) -> None:
    # SQLite's default would fold the WAL back (and sync the disk twice) every
    # 1,000 pages; the order path writes about 40 an order.
    db = open_writer(tmp_path / "w.db")
    conn = db.conn
    try:
        for i in range(700):
            with conn:
                conn.execute(
                    "INSERT INTO alerts (ts, severity, source, title, message)"
                    " VALUES (?, 'info', 'test', 't', ?)",
                    (i, "x" * 3000),
                )
        busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0
        assert 1_000 < frames < WRITER_CHECKPOINT_PAGES
    finally:
        conn.close()
