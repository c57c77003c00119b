"""The audit trail: who did what, when and why, as a hash chain.

Each row's hash covers the previous row's hash and its own content, so an edited
or deleted row breaks the chain at that point and `verify_chain` names it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from sqlite_utils import Database

from state.db import now_ms

GENESIS = "0" * 64


def _digest(prev_hash: str, ts: int, actor: str, action: str, payload: str) -> str:
    material = "\x1f".join([prev_hash, str(ts), actor, action, payload])
    return hashlib.sha256(material.encode()).hexdigest()


def append_audit(
    db: Database, actor: str, action: str, payload: dict[str, Any], ts: int | None = None
) -> str:
    """Append one audit row (not committed: the caller's transaction owns it)."""
    ts = now_ms() if ts is None else ts
    body = json.dumps(payload, sort_keys=True, default=str)
    row = db.conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev = row[0] if row else GENESIS
    digest = _digest(prev, ts, actor, action, body)
    db.conn.execute(
        "INSERT INTO audit (ts, actor, action, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
        (ts, actor, action, body, prev, digest),
    )
    return digest


def verify_chain(conn: sqlite3.Connection) -> int | None:
    """The id of the first row that breaks the chain, or None if it is intact."""
    prev = GENESIS
    for row in conn.execute("SELECT id, ts, actor, action, payload, prev_hash, hash FROM audit"):
        rid, ts, actor, action, payload, prev_hash, digest = tuple(row)
        if prev_hash != prev or _digest(prev, ts, actor, action, payload) != digest:
            return int(rid)
        prev = digest
    return None
