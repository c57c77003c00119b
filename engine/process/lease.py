"""One engine per database: a file-system lock beside it, and a lease in the `engine` row.

The lock (`DatabaseLock`, an fcntl lock on `<db>.lock`) is held for the engine's
life and released by the kernel when the process dies, so it needs no staleness
rule and survives the database file being deleted: a lease inside a deleted file
would let a second engine start on the same path. The lease row tells readers who
runs the database and how fresh its heartbeat is. A second engine refuses to
start while either is held. A stale heartbeat, or an owner process on this host
that no longer exists, can be taken over. The trading state lives in the same row
and is never reset by a takeover, so HALTED survives restarts.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from store import engine_row
from store.db import immediate


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
    with immediate(db.conn):
        held_by, held_pid, beat = engine_row.lease_holder(db.conn) or (None, None, None)
        if held_by and held_pid:
            age = now - (beat or 0)
            gone = str(held_by).split("/", 1)[0] == host and not _alive(int(held_pid))
            if age < stale_ms and not gone:
                raise LeaseHeld(
                    f"another engine (pid {held_pid} on {held_by}) holds this database;"
                    f" its heartbeat is {age / 1000:.1f} s old"
                )
        engine_row.claim_lease(db.conn, owner=owner, pid=pid, now=now, mode=mode, broker=broker)
    return Lease(owner, pid)


def heartbeat(db: Database, lease: Lease, now: int) -> None:
    engine_row.beat(db.conn, lease.owner, now)


def release(db: Database, lease: Lease, now: int) -> None:
    engine_row.release_lease(db.conn, lease.owner, now)
    db.conn.commit()


class DatabaseLock:
    """An exclusive lock on `<db>.lock`, held from `acquire` to `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, db_file: Path) -> DatabaseLock:
        """Take the lock or raise LeaseHeld naming the process that holds it."""
        path = db_file.with_name(db_file.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # flock, not lockf: a flock belongs to this open file, so a second
            # engine in the same process is refused too.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LeaseHeld(f"another engine (pid {holder}) holds the lock {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        # The file stays: deleting it would let a newcomer lock a fresh inode while
        # a waiting process still holds the old one.
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, or None when it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
