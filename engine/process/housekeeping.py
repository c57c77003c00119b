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
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from engine.alerts import audit
from engine.config import Settings
from engine.cycle import Trader
from engine.domain import Severity
from engine.process.backup import BackupError, take_backup
from store.housekeeping import delete_before

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
BATCH = 20_000
# table -> the clock its time column is on; only per-cycle facts, never the trading
# record. Cycles are stamped on the wall clock, regimes and model predictions on
# market time (a replay of 2006 must not lose them to a 2026 cutoff).
PRUNED = {"cycles": "wall", "regimes": "market", "predictions": "market"}


def prune(
    db: Database, now: int, keep_days: float, *, market_now: int | None = None
) -> dict[str, int]:
    """Delete per-cycle rows older than `keep_days` on their own clock (`now` is the
    wall's, `market_now` the market's, default the same); returns rows deleted per table."""
    keep = int(keep_days * DAY_MS)
    cutoffs = {"wall": now - keep, "market": (now if market_now is None else market_now) - keep}
    deleted: dict[str, int] = {}
    for table, clock in PRUNED.items():
        total = delete_before(db, table, cutoffs[clock], BATCH)
        if total is not None:
            deleted[table] = total
    return deleted


def backup_dir(settings: Settings, path: Path) -> Path:
    configured = settings.engine.backup_dir
    return Path(configured) if configured else path.parent / "backups"


def daily_housekeeping(settings: Settings, path: Path, trader: Trader, now: int) -> None:
    """Prune per-cycle facts past `engine.keep_cycles_days`, then back up; one INFO
    alert says what was done and carries the audit head off the machine."""
    cfg = settings.engine
    db = trader.db
    deleted = prune(db, now, cfg.keep_cycles_days, market_now=trader.market_now)
    folder = backup_dir(settings, path)
    try:
        target = take_backup(db.conn, path, folder, now, keep=cfg.keep_backups)
        done = f"backup {target}"
    except (BackupError, OSError, sqlite3.Error) as exc:
        log.error("daily backup into %s failed: %s", folder, exc)
        trader.alerts.raise_(Severity.HIGH, "engine", "Daily backup failed", f"{folder}: {exc}")
        done = "backup FAILED"
    # The head leaves the machine with the alert: a third anchor for the audit chain.
    top = audit.head(db.conn)
    anchor = f"audit head #{top.id} {top.hash}" if top else "audit chain empty"
    trader.alerts.raise_(
        Severity.INFO,
        "engine",
        "Daily housekeeping",
        f"pruned {sum(deleted.values())} per-cycle rows; {done}; {anchor}",
    )
    db.conn.commit()
