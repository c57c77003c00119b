"""A write-behind connection for a run whose whole state lives in memory (a backtest).

A backtest steps the live `Trader` on an in-memory store, and the Trader writes
several rows every bar (the bar, its regime, the equity mark, the position's
mark, the cycle, the paper broker's last bar). One `execute` each costs more
than the rule that produced it. `WriteBehind` wraps the sqlite3 connection and
keeps writes to the tables it is given in a list instead; they reach SQLite in
one `executemany` per run of equal statements when anything else reads or
writes that table, or on `flush()`. A reader therefore always sees
every write made before its query, in order: only the moment they reach SQLite
changes, never what any query returns.

Transactions are followed while writes wait: one made after the last commit is
dropped by a rollback (or by a rollback to a savepoint taken before it), as
SQLite would drop it. A flush outside a transaction commits what it writes (a
write through sqlite-utils' `Database.execute` would have been committed at
once, and a flush must not leave a transaction open that the code before it
did not open). The differences that remain are confined to a run that fails:
- a rollback after a flush cannot take back rows the flush committed;
- a deferred write reports no rowid or row count (its statement has not run;
  asking raises `DeferredResult`), so only tables whose writers ignore them may
  be deferred;
- a constraint a deferred row breaks is reported by the flush, not by its write.
A backtest stops at its first failed cycle, so none of them reaches its results.

Tables named `quiet` are ones no one else writes while the run lasts (the
operator's command queue in a backtest). A read that touches only quiet tables
hands back the rows the same read (same text, same parameters) got before, as
long as no statement has touched those tables since: it would read the same rows.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

_TABLE_WORDS = re.compile(r"\b(?:into|from|update|join|table)\s+[\"'`\[]?(\w+)", re.IGNORECASE)
_WRITE = re.compile(r"\s*(?:insert|replace|update|delete)\b", re.IGNORECASE)
_TXN_WORDS = ("begin", "commit", "end", "rollback", "savepoint", "release")

_PASS = 0  # run now; touches no deferred table
_FLUSH = 1  # run now, after the deferred writes reach SQLite
_DEFER = 2  # keep for later


class DeferredResult(RuntimeError):
    """A deferred write's rowid or row count was asked for before it ran."""


def _in_memory(conn: sqlite3.Connection) -> bool:
    return all(not row[2] for row in conn.execute("PRAGMA database_list"))


class _Deferred:
    """What `execute` returns for a deferred write: no rows, no description."""

    description = None

    def __init__(self, sql: str) -> None:
        self._sql = sql

    def _unknown(self, what: str) -> DeferredResult:
        return DeferredResult(
            f"{what} of a deferred write is not known before it runs: {self._sql}"
        )

    @property
    def lastrowid(self) -> int:
        raise self._unknown("the rowid")

    @property
    def rowcount(self) -> int:
        raise self._unknown("the row count")

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


_WORDS_KEPT = 256  # transaction statements whose words are remembered


@functools.lru_cache(maxsize=_WORDS_KEPT)
def _txn_words(sql: str) -> tuple[str, ...] | None:
    """The lowercase words of a transaction statement (BEGIN, COMMIT, END, ROLLBACK
    [TO [SAVEPOINT] x], SAVEPOINT x, RELEASE [SAVEPOINT] x), or None for any other.
    Remembered per text: the store's savepoints have fixed names, and a backtest
    opens several a bar."""
    words = sql.replace(";", " ").lower().split()
    if not words or words[0] not in _TXN_WORDS:
        return None
    return tuple(w.strip("\"'`[]") for w in words if w not in ("transaction",))


class _Rows:
    """A remembered read's answer: its rows again, as a cursor hands them out."""

    __slots__ = ("_at", "_rows", "description")

    def __init__(self, rows: list[Any], description: Any) -> None:
        self._rows, self._at, self.description = rows, 0, description

    def fetchone(self) -> Any:
        at = self._at
        if at >= len(self._rows):
            return None
        self._at = at + 1
        return self._rows[at]

    def fetchall(self) -> list[Any]:
        rest, self._at = self._rows[self._at :], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


_READ = re.compile(r"\s*select\b", re.IGNORECASE)


class _Txn:
    """The plan of a transaction statement (BEGIN, COMMIT, SAVEPOINT, ...): its words."""

    __slots__ = ("words",)

    def __init__(self, words: tuple[str, ...]) -> None:
        self.words = words


class WriteBehind:
    """A sqlite3 connection whose writes to `tables` are deferred (module docstring)."""

    def __init__(
        self, conn: sqlite3.Connection, tables: Iterable[str], quiet: Iterable[str] = ()
    ) -> None:
        self.raw = conn
        self.tables = frozenset(t.lower() for t in tables)
        self.quiet = frozenset(t.lower() for t in quiet) - self.tables
        # Statement texts on quiet tables: True for a read that may be remembered,
        # False for any other (it forgets what was remembered).
        self._quiet_plans: dict[str, bool] = {}
        self._remembered: dict[tuple[str, Any], tuple[list[Any], Any]] = {}
        self.flushes = 0
        # Per statement text: the table a deferred write goes to (str), or the
        # deferred tables a statement run now reads or writes (frozenset, maybe empty).
        self._plans: dict[str, str | frozenset[str] | _Txn] = {}
        self._results: dict[str, _Deferred] = {}
        # Per table, its waiting writes in order: (sequence number, sql, parameters).
        self._queues: dict[str, list[tuple[int, str, Any]]] = {t: [] for t in self.tables}
        self._seq = 0
        self._committed = 0  # writes numbered up to this one were committed
        self._savepoints: dict[str, int] = {}
        # BEGIN and SAVEPOINT statements not sent yet, in order: (savepoint name or
        # "", sql). They reach SQLite before the first statement that runs inside
        # them; a transaction in which nothing ran is never sent at all.
        self._opened: list[tuple[str, str]] = []
        self._no_rows = _Deferred("BEGIN")

    # -- the sqlite3.Connection surface the store uses ------------------------------------

    @property
    def in_transaction(self) -> bool:
        return bool(self._opened) or self.raw.in_transaction

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Any:
        plan = self._plans.get(sql)
        if plan is None:
            plan = self._plan(sql)
        if isinstance(plan, str):
            self._seq += 1
            self._queues[plan].append((self._seq, sql, parameters))
            return self._results[sql]
        if isinstance(plan, _Txn):
            return self._control(sql, plan.words)
        quiet = self._quiet_plans.get(sql)
        if quiet:
            return self._quiet_read(sql, parameters)
        if quiet is not None:  # anything else on a quiet table may change what it holds
            self._remembered.clear()
        if self._opened:
            self._open()
        if plan:
            self._flush_tables(plan)
        return self.raw.execute(sql, parameters)

    def executemany(self, sql: str, seq: Iterable[Any]) -> Any:
        plan = self._plans.get(sql)
        if plan is None:
            plan = self._plan(sql)
        if isinstance(plan, str):
            queue = self._queues[plan]
            for parameters in seq:
                self._seq += 1
                queue.append((self._seq, sql, parameters))
            return self._results[sql]
        if self._opened:
            self._open()
        if sql in self._quiet_plans:
            self._remembered.clear()
        if isinstance(plan, frozenset) and plan:
            self._flush_tables(plan)
        return self.raw.executemany(sql, seq)

    def executescript(self, script: str) -> Any:
        self.flush()
        self._remembered.clear()
        return self.raw.executescript(script)

    def cursor(self) -> sqlite3.Cursor:
        self.flush()  # a cursor's statements do not pass through here
        self._remembered.clear()
        return self.raw.cursor()

    def commit(self) -> None:
        self._committed = self._seq
        self._savepoints.clear()
        self._opened.clear()
        self.raw.commit()

    def rollback(self) -> None:
        self._remembered.clear()  # what a read saw may be taken back
        self._drop_after(self._committed)
        self._savepoints.clear()
        self._opened.clear()
        self.raw.rollback()

    def close(self) -> None:
        """Close; committed writes reach a file first (an in-memory store keeps nothing)."""
        self._drop_after(self._committed)
        self._opened.clear()
        if self.pending and not _in_memory(self.raw):
            self.flush()
        self.raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    # -- write-behind ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def flush(self) -> None:
        """Run every deferred write now (see `_flush_tables`)."""
        self._flush_tables(self.tables)

    def _flush_tables(self, tables: Iterable[str]) -> None:
        """Run the tables' deferred writes, in order, one executemany per run of equal
        statements: inside the open transaction if there is one, else committed."""
        queues = [(t, q) for t in tables if (q := self._queues[t])]
        if not queues:
            return
        if self._opened:
            self._open()
        self.flushes += 1
        outside = not self.raw.in_transaction
        for table, rows in queues:
            # From here SQLite holds the rows: its own savepoints and rollback apply.
            self._queues[table] = []
            i, n = 0, len(rows)
            while i < n:
                sql = rows[i][1]
                j = i + 1
                while j < n and rows[j][1] == sql:
                    j += 1
                self.raw.executemany(sql, [r[2] for r in rows[i:j]])
                i = j
        if outside:
            self.raw.commit()

    def _drop_after(self, mark: int) -> None:
        for queue in self._queues.values():
            while queue and queue[-1][0] > mark:
                queue.pop()

    def _plan(self, sql: str) -> str | frozenset[str] | _Txn:
        words = _txn_words(sql)
        if words is not None:
            txn = _Txn(words)
            if len(words) == 1 or words[0] == "begin":  # BEGIN [IMMEDIATE], COMMIT, ROLLBACK
                self._plans[sql] = txn
            return txn  # a savepoint's is not kept: its names differ every time
        named = frozenset(t.lower() for t in _TABLE_WORDS.findall(sql))
        if named & self.quiet:
            self._quiet_plans[sql] = named <= self.quiet and bool(_READ.match(sql))
        touched = named & self.tables
        plan: str | frozenset[str] | _Txn = touched
        if len(touched) == 1 and _WRITE.match(sql):
            plan = next(iter(touched))
            self._results[sql] = _Deferred(sql)
        self._plans[sql] = plan
        return plan

    def _quiet_read(self, sql: str, parameters: Any) -> Any:
        try:
            key = (sql, parameters if isinstance(parameters, tuple) else None)
            known = self._remembered.get(key) if key[1] is not None else None
        except TypeError:  # a parameter that cannot be a key: read it every time
            key, known = (sql, None), None
        if known is None:
            if self._opened:
                self._open()
            cursor = self.raw.execute(sql, parameters)
            known = (cursor.fetchall(), cursor.description)
            if key[1] is not None:
                self._remembered[key] = known
        return _Rows(known[0], known[1])

    # -- transactions ---------------------------------------------------------------------

    def _open(self) -> None:
        """Send the BEGIN and SAVEPOINT statements held back, in order."""
        opened, self._opened = self._opened, []
        for _, sql in opened:
            self.raw.execute(sql)

    def _held(self, name: str) -> int | None:
        for i, (held, _) in enumerate(self._opened):
            if held == name:
                return i
        return None

    def _control(self, sql: str, words: tuple[str, ...]) -> Any:
        word, name = words[0], words[-1]
        if word == "begin":
            if self._opened or self.raw.in_transaction:
                self._open()
                return self.raw.execute(sql)  # SQLite's own error: already in one
            self._opened.append(("", sql))
            return self._no_rows
        if word == "savepoint":
            self._savepoints[name] = self._seq
            self._opened.append((name, sql))
            return self._no_rows
        if word in ("commit", "end"):
            self._committed = self._seq
            self._savepoints.clear()
            held_begin = bool(self._opened) and not self.raw.in_transaction
            self._opened.clear()
            return self._no_rows if held_begin else self.raw.execute(sql)
        if word == "release":
            self._savepoints.pop(name, None)
            at = self._held(name)
            if at is not None:
                del self._opened[at:]
                return self._no_rows
            self._opened.clear()  # savepoints inside it go with it
            return self.raw.execute(sql)
        # rollback, or rollback to a savepoint: what a read saw may be taken back
        self._remembered.clear()
        if len(words) > 1 and words[1] == "to":
            mark = self._savepoints.get(name)
            if mark is not None:
                self._drop_after(max(mark, self._committed))
            at = self._held(name)
            if at is not None:
                del self._opened[at + 1 :]  # the savepoint itself stays, as in SQLite
                return self._no_rows
            self._opened.clear()
            return self.raw.execute(sql)
        self._drop_after(self._committed)
        self._savepoints.clear()
        self._opened.clear()
        return self.raw.execute(sql) if self.raw.in_transaction else self._no_rows
