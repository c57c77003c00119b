"""The ML aggregate: `models` (the registry's versions), `model_events` (their
status changes), `predictions` and `drift`. Nothing here decides: promotion rules
are `engine.ml.registry`'s, scoring is `engine.ml.service`'s.

Writes are not committed: the caller's transaction owns them.
"""

from __future__ import annotations

import sqlite3


def artifact_paths(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(version, path as registered) of every model, oldest first."""
    rows = conn.execute("SELECT version, path FROM models ORDER BY id").fetchall()
    return [(str(v), str(p)) for v, p in rows]
