"""One engine per database: a lease in the `engine` row.

A second engine refuses to start while the owner's heartbeat is fresh. A stale
heartbeat, or an owner process on this host that no longer exists, can be taken
over. The trading state lives in the same row and is never reset by a takeover,
so HALTED survives restarts.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sqlite_utils import Database


class LeaseHeld(RuntimeError):
    """Another engine holds the lease on this database."""


@dataclass(frozen=True)
class Lease:
    owner: str
    pid: int


def this_owner() -> str:
    return socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(db: Database, now: int, stale_ms: int, mode: str, broker: str) -> Lease:
    owner, pid = this_owner(), os.getpid()
    conn = db.conn
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT owner, pid, heartbeat_at FROM engine WHERE id = 1 AND stopped_at IS NULL"
        ).fetchone()
        if row and row[1] and row[1] != pid:
            held_by, held_pid, beat = row
            age = now - (beat or 0)
            gone = held_by == owner and not _alive(int(held_pid))
            if age < stale_ms and not gone:
                raise LeaseHeld(
                    f"another engine (pid {held_pid} on {held_by}) holds this database;"
                    f" its heartbeat is {age / 1000:.1f} s old"
                )
        conn.execute(
            "INSERT INTO engine (id, owner, pid, started_at, heartbeat_at, mode, broker,"
            " trading_state, state_reason, state_changed_at)"
            " VALUES (1, ?, ?, ?, ?, ?, ?, 'ACTIVE', 'started', ?)"
            " ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid,"
            " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,"
            " mode = excluded.mode, broker = excluded.broker, stopped_at = NULL",
            (owner, pid, now, now, mode, broker, now),
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return Lease(owner, pid)


def heartbeat(db: Database, lease: Lease, now: int) -> None:
    db.conn.execute("UPDATE engine SET heartbeat_at = ? WHERE id = 1 AND pid = ?", (now, lease.pid))


def release(db: Database, lease: Lease, now: int) -> None:
    db.conn.execute(
        "UPDATE engine SET stopped_at = ?, heartbeat_at = ? WHERE id = 1 AND pid = ?",
        (now, now, lease.pid),
    )
    db.conn.commit()
