"""One engine per database: a lease in the `engine` row.

A second engine refuses to start while the owner's heartbeat is fresh. A stale
heartbeat, or an owner process on this host that no longer exists, can be taken
over. The trading state lives in the same row and is never reset by a takeover,
so HALTED survives restarts.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from sqlite_utils import Database


class LeaseHeld(RuntimeError):
    """Another engine holds the lease on this database."""


@dataclass(frozen=True)
class Lease:
    owner: str  # host/token: the token tells two engines of one process apart
    pid: int


def new_owner() -> str:
    return f"{socket.gethostname()}/{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(db: Database, now: int, stale_ms: int, mode: str, broker: str) -> Lease:
    owner, pid = new_owner(), os.getpid()
    host = owner.split("/", 1)[0]
    conn = db.conn
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT owner, pid, heartbeat_at FROM engine WHERE id = 1 AND stopped_at IS NULL"
        ).fetchone()
        if row and row[0] and row[1]:
            held_by, held_pid, beat = row
            age = now - (beat or 0)
            gone = str(held_by).split("/", 1)[0] == host and not _alive(int(held_pid))
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
    db.conn.execute(
        "UPDATE engine SET heartbeat_at = ? WHERE id = 1 AND owner = ?", (now, lease.owner)
    )


def release(db: Database, lease: Lease, now: int) -> None:
    db.conn.execute(
        "UPDATE engine SET stopped_at = ?, heartbeat_at = ? WHERE id = 1 AND owner = ?",
        (now, now, lease.owner),
    )
    db.conn.commit()
