"""Connections to the state store.

One writer (the engine, one connection, one thread) and any number of short-lived
read-only readers (pages, CLI, tests). WAL lets readers run while the engine
writes; `synchronous=NORMAL` is durable across process crashes, which is what a
trading engine on one machine needs, at a fraction of FULL's fsync cost.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from sqlite_utils import Database

from store.schema import migrate, require_current, schema_version

BUSY_TIMEOUT_MS = 5_000
# The writer folds its WAL back into the database every this many pages (4 KiB each),
# not SQLite's default 1,000: a checkpoint syncs the disk twice, and the order path
# (about 40 pages an order) would otherwise pay for one every twenty-odd orders.
# Commits stay exactly as durable; only the copy into the main file is batched.
WRITER_CHECKPOINT_PAGES = 10_000
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = PROJECT_ROOT / "var" / "cockpit.db"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def in_memory(path: str | os.PathLike[str]) -> bool:
    """SQLite's private in-memory database: no file, so no lock and no inode."""
    return str(path) == ":memory:"


def is_store_full(exc: BaseException) -> bool:
    """No room to write: SQLITE_FULL (the disk, or the database's page limit), or
    ENOSPC from a file written beside the database."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The database file: an explicit path, else $COCKPIT_DB, else var/cockpit.db."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("COCKPIT_DB")
    return Path(env) if env else DEFAULT_DB


def private_file(path: Path) -> Path:
    """Create `path` readable and writable by its owner only, or tighten an existing one.

    SQLite gives a database's WAL and shared-memory files the database's own mode,
    so a private database file keeps its WAL private too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path


def _tune(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")


def open_writer(path: str | os.PathLike[str] | None = None) -> Database:
    """The engine's single writer connection, with the schema migrated: every pending
    migration of the registry (store.schema) applies here, once, in one transaction.

    check_same_thread is off because the connection is made on the main thread
    and used on the trading executor's one thread; nothing else touches it.
    """
    file = db_path(path)
    if str(file) != ":memory:":
        private_file(file)
    for companion in (Path(f"{file}-wal"), Path(f"{file}-shm")):
        if companion.exists() and companion.stat().st_mode & 0o077:
            os.chmod(companion, 0o600)
    conn = sqlite3.connect(file, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    _tune(conn)
    db = Database(conn)
    migrate(db)
    return db


def ensure_schema(path: str | os.PathLike[str] | None = None) -> Path:
    """Create the file and schema if needed (used by the CLI and the cockpit's first start)."""
    db = open_writer(path)
    db.conn.close()
    return db_path(path)


def open_reader(path: str | os.PathLike[str] | None = None) -> sqlite3.Connection:
    """A read-only connection; raises FileNotFoundError when there is no database yet
    and store.schema.SchemaError when its schema is older than this code (readers
    never migrate: the engine upgrades the database when it opens it)."""
    file = db_path(path)
    if not file.exists():
        raise FileNotFoundError(f"no state database at {file}; start the engine first")
    conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if schema_version(conn) == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
            # made a moment ago by a writer that has not committed its schema yet
            raise FileNotFoundError(f"no state database at {file} yet; start the engine first")
        require_current(conn, file)
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def reader(path: str | os.PathLike[str] | None = None) -> Iterator[sqlite3.Connection]:
    conn = open_reader(path)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def maybe_reader(
    path: str | os.PathLike[str] | None = None,
) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection, or None when no engine has created the database yet
    (the cockpit's empty state)."""
    try:
        conn = open_reader(path)
    except FileNotFoundError:
        yield None
        return
    try:
        yield conn
    finally:
        conn.close()


def atomic(conn: sqlite3.Connection, name: str) -> _Atomic:
    """One transaction, or the savepoint `name` inside the caller's; rolled back when
    the block raises. Like sqlite_utils' `atomic`, but its statements are the same
    every time, so SQLite compiles them once (the order path runs it per order).

    The transaction takes the write lock when it begins (BEGIN IMMEDIATE). A deferred
    one that reads first (the OMS asks whether a stop is queued before it writes the
    order) holds a snapshot, and if the cockpit commits a command before the block's
    first write, SQLite refuses that write at once with "database is locked": no busy
    timeout applies to a stale snapshot. Taking the lock first makes the cockpit's
    write wait for the block instead, within its busy timeout."""
    return _Atomic(conn, name)


class _Atomic:
    """`atomic` as a plain context manager: the order path and every backtest bar
    enter several, and a generator-based one costs three times as much."""

    __slots__ = ("_conn", "_name", "_nested")

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self._conn = conn
        self._name = name
        self._nested = False

    def __enter__(self) -> None:
        conn = self._conn
        self._nested = conn.in_transaction
        conn.execute(f"SAVEPOINT {self._name}" if self._nested else "BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, name = self._conn, self._name
        if self._nested:
            # A failed statement may have ended the whole transaction already.
            if exc_type is not None and conn.in_transaction:
                conn.execute(f"ROLLBACK TO {name}")
            if exc_type is None or conn.in_transaction:
                conn.execute(f"RELEASE {name}")
            return
        if exc_type is not None:
            conn.rollback()
            return
        try:
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction that takes the write lock before it reads anything (so two
    writers cannot both read and then act), committed at the end of the block and
    rolled back when it raises. An open transaction of the caller's is committed first."""
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
