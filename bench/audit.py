"""The keyed audit chain and the backups: what they cost.

Appends audit rows one transaction each (the key comes from the encrypted store
on every append), verifies the whole chain, then backs up a database of that
size with the engine's bars in it, verifies the backup and restores it.

    .venv/bin/python bench/audit.py [ROWS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import SimClock, describe, open_engine, settings

from engine.alerts import audit
from engine.process.backup import backup_file, restore, verify_backup
from store.db import open_writer
from store.secrets import SecretStore


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clock = SimClock()
        engine = open_engine(folder, settings(20), clock)
        for _ in range(500):
            clock.tick()
            engine.step()
        engine.close()
        db_file = folder / "bench.db"
        db = open_writer(db_file)
        appends = []
        for i in range(rows):
            started = time.perf_counter()
            audit.append_audit(db, "cli:bench", "state_change", {"i": i, "reason": "bench"})
            db.conn.commit()
            appends.append((time.perf_counter() - started) * 1000)
        audit.write_anchor(db.conn)
        started = time.perf_counter()
        report = audit.verify(db.conn)
        verify_s = time.perf_counter() - started
        db.conn.close()
        assert report.ok, report.describe()
        size_mb = db_file.stat().st_size / 1e6
        print(f"audit append + commit        {describe(appends)}")
        print(f"audit verify, {report.rows:,} rows     {verify_s * 1000:8.1f} ms")

        started = time.perf_counter()
        backup = backup_file(db_file, folder / "backups", clock())
        backup_s = time.perf_counter() - started
        started = time.perf_counter()
        verify_backup(backup, SecretStore(db_file))
        check_s = time.perf_counter() - started
        started = time.perf_counter()
        restore(backup, db_file, clock() + 60_000)
        restore_s = time.perf_counter() - started
        print(f"backup of a {size_mb:.1f} MB database   {backup_s * 1000:8.1f} ms")
        print(f"verify the backup            {check_s * 1000:8.1f} ms")
        print(f"restore (verify + swap)      {restore_s * 1000:8.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
