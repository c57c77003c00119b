"""The Audit page's read model: the chain verified, its heads, and the newest rows."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from engine.alerts import audit
from store.db import maybe_reader
from store.secrets import SecretsError


@dataclass(frozen=True)
class AuditState:
    """`report` is None when there is no database yet or the chain could not be read
    (then `error` says why); `recent` holds the newest rows, newest first."""

    report: audit.ChainReport | None
    error: str
    recent: pd.DataFrame


_COLUMNS = ["id", "ts", "actor", "action", "payload", "hash"]


def audit_state(path: str | os.PathLike[str] | None = None, limit: int = 200) -> AuditState:
    empty = pd.DataFrame(columns=_COLUMNS)
    with maybe_reader(path) as conn:
        if conn is None:
            return AuditState(None, "", empty)
        try:
            report = audit.verify(conn)
        except SecretsError as exc:
            return AuditState(None, str(exc), empty)
        rows = conn.execute(
            "SELECT id, ts, actor, action, payload, hash FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
    recent = pd.DataFrame([tuple(r) for r in rows], columns=_COLUMNS) if rows else empty
    return AuditState(report, "", recent)
