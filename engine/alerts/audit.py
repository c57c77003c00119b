"""The audit trail: who did what, when and why, as a keyed hash chain with an anchor.

Each row's hash is an HMAC-SHA256, under a key kept in the secrets store
(`audit.key`), of the previous row's hash and the row's own content. So an edited,
swapped or deleted row breaks the chain at that point, and a rewrite that
recomputes the hashes is caught too: without the key the hashes cannot be forged.

Deleting the newest rows (or all of them) leaves a shorter chain that is still
intact; the anchor catches that. The head (id and hash of the newest row) is
written, after the commit that added it, to a file beside the database
(`cockpit.db` -> `cockpit.audit-head`), and is carried by the daily backup's
manifest and the daily alert, which leave the machine. A chain that no longer
holds the anchored row, or holds it with another hash, has been cut.

Rows written before the chain was keyed used a plain SHA-256. The first time a key
is made (`ensure_key`), the plain chain is verified, then every row is re-hashed
under the key in the same transaction, and an `audit.keyed` row records how many
rows were re-hashed and whether the plain chain was intact.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from store import audit as stored
from store.db import now_ms
from store.secrets import SecretStore, db_file_of

log = logging.getLogger(__name__)

GENESIS = "0" * 64
KEY_NAME = "audit.key"


def _digest(key: bytes | None, prev_hash: str, content: tuple[int, str, str, str]) -> str:
    """The hash of a row: `content` is its (ts, actor, action, payload)."""
    ts, actor, action, payload = content
    material = "\x1f".join([prev_hash, str(ts), actor, action, payload]).encode()
    if key is None:  # rows from before the chain was keyed
        return hashlib.sha256(material).hexdigest()
    return hmac.new(key, material, hashlib.sha256).hexdigest()


def anchor_file(db: Path) -> Path:
    return db.with_suffix(".audit-head")


# ----------------------------------------------------------------- the key


def read_key(conn: sqlite3.Connection, store: SecretStore | None = None) -> bytes | None:
    """The chain's key, or None when the chain has never been keyed. `store` holds the
    key material when the database is not where its key lives (a backup)."""
    value = (store or SecretStore.of(conn)).get(conn, KEY_NAME)
    return bytes.fromhex(value) if value else None


def ensure_key(db: Database) -> bytes:
    """The chain's key, made on first use; plain-hashed rows are re-hashed under it.
    Not committed: the caller's transaction owns it."""
    key = read_key(db.conn)
    if key is not None:
        return key
    key = secrets.token_bytes(32)
    SecretStore.of(db.conn).put(db, KEY_NAME, key.hex())
    rows = stored.chain(db.conn)
    if not rows:
        return key
    broken = _first_break(rows, None)
    prev = GENESIS
    for rid, ts, actor, action, payload, _, _ in rows:
        digest = _digest(key, prev, (ts, actor, action, payload))
        stored.rehash(db.conn, rid, prev, digest)
        prev = digest
    legacy = "intact" if broken is None else f"broken at row {broken[0]}: {broken[1]}"
    payload = {"rows": len(rows), "legacy_chain": legacy}
    _append(db, key, "engine", "audit.keyed", payload, ts=max(now_ms(), int(rows[-1][1])))
    if broken is not None:
        log.warning("the audit chain was broken before keying (%s); re-hashed anyway", legacy)
    return key


# -------------------------------------------------------------- appending


def _append(
    db: Database, key: bytes, actor: str, action: str, payload: dict[str, Any], *, ts: int
) -> str:
    body = json.dumps(payload, sort_keys=True, default=str)
    last = stored.newest(db.conn)
    prev = last[1] if last else GENESIS
    digest = _digest(key, prev, (ts, actor, action, body))
    stored.append(db.conn, (ts, actor, action, body, prev, digest))
    return digest


def append_audit(
    db: Database, actor: str, action: str, payload: dict[str, Any], ts: int | None = None
) -> str:
    """Append one audit row (not committed: the caller's transaction owns it)."""
    key = ensure_key(db)
    return _append(db, key, actor, action, payload, ts=now_ms() if ts is None else ts)


# ------------------------------------------------------------------ anchor


@dataclass(frozen=True)
class Head:
    """The newest row of the chain: what an anchor records."""

    id: int
    hash: str
    ts: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hash": self.hash, "ts": self.ts}


def head(conn: sqlite3.Connection) -> Head | None:
    try:
        row = stored.newest(conn)
    except sqlite3.OperationalError:
        return None
    return Head(*row) if row else None


def read_anchor(db: Path) -> Head | None:
    """The anchored head beside the database, or None when nothing was anchored yet."""
    try:
        data = json.loads(anchor_file(db).read_text())
        return Head(int(data["id"]), str(data["hash"]), int(data["ts"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # An unreadable anchor must not pass for "never anchored".
        return Head(-1, "unreadable anchor file", 0)


def write_anchor(conn: sqlite3.Connection, last: Head | None = None) -> Head | None:
    """Record the committed head beside the database (call after a commit that appended);
    `last` is the head this caller anchored before, so an unchanged head costs one query.
    """
    current = head(conn)
    if current is None or current == last:
        return current
    db = db_file_of(conn)
    if db is None or read_anchor(db) == current:
        return current
    path = anchor_file(db)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(current.as_dict(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return current


# ------------------------------------------------------------------ verify


@dataclass(frozen=True)
class ChainReport:
    """The chain's state: intact or the first bad row and why, and the heads compared."""

    rows: int
    keyed: bool
    first_bad: int | None
    reason: str
    head: Head | None
    anchor: Head | None

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.reason

    def describe(self) -> str:
        if self.ok:
            at = f"head #{self.head.id} {self.head.hash[:16]}" if self.head else "empty"
            anchored = "anchored" if self.anchor else "no anchor yet"
            return f"audit chain verified: {self.rows} rows, {at}, {anchored}"
        where = f"row {self.first_bad}: " if self.first_bad is not None else ""
        return f"audit chain BROKEN at {where}{self.reason}"


def _first_break(rows: list[tuple[Any, ...]], key: bytes | None) -> tuple[int, str] | None:
    prev = GENESIS
    for rid, ts, actor, action, payload, prev_hash, digest in rows:
        if prev_hash != prev:
            return int(rid), "does not follow the row before it (a row deleted, moved or edited)"
        if _digest(key, prev, (ts, actor, action, payload)) != digest:
            return int(rid), "its content does not match its hash (edited or re-hashed)"
        prev = digest
    return None


def verify(
    conn: sqlite3.Connection, anchor: Head | None = None, store: SecretStore | None = None
) -> ChainReport:
    """Check every row against the key and the chain's head against the anchor
    (by default the file beside the database)."""
    file = db_file_of(conn)
    if anchor is None and file is not None:
        anchor = read_anchor(file)
    rows = stored.chain(conn)
    last = Head(int(rows[-1][0]), str(rows[-1][6]), int(rows[-1][1])) if rows else None
    key = read_key(conn, store)

    def report(first_bad: int | None, reason: str) -> ChainReport:
        return ChainReport(len(rows), key is not None, first_bad, reason, last, anchor)

    if key is None and rows:
        return report(None, "the chain is not keyed: start the engine once to key it")
    broken = _first_break(rows, key)
    if broken is not None:
        return report(*broken)
    if anchor is not None:
        held = {int(r[0]): str(r[6]) for r in rows}
        if anchor.id < 0:
            return report(None, "the anchor file is unreadable")
        if anchor.id not in held:
            after = f"after row {last.id}" if last else "(no rows left)"
            return report(anchor.id, f"the anchored row #{anchor.id} is missing: rows cut {after}")
        if held[anchor.id] != anchor.hash:
            return report(anchor.id, "its hash differs from the anchored head (chain rewritten)")
    return report(None, "")


def verify_chain(conn: sqlite3.Connection) -> int | None:
    """The id of the first row that breaks the keyed chain, or None if it is intact."""
    return verify(conn).first_bad
