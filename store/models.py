"""The ML aggregate: `models` (the registry's versions), `model_events` (their
status changes), `predictions` and `drift`. Nothing here decides: promotion rules
are `engine.ml.registry`'s, scoring is `engine.ml.service`'s.

Writes are not committed: the caller's transaction owns them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from store.cycles import BAR_COLUMNS


def artifact_paths(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(version, path as registered) of every model, oldest first."""
    rows = conn.execute("SELECT version, path FROM models ORDER BY id").fetchall()
    return [(str(v), str(p)) for v, p in rows]


# ---------------------------------------------------------------- registry

# A registry record's columns, in the order `engine.ml.registry` reads them.
RECORD_COLUMNS = (
    "version, name, path, sha256, status, trained_at, status_changed_at,"
    " params, features, data_range, metrics, lib_versions"
)
MODEL_COLUMNS = (
    "name",
    "version",
    "path",
    "sha256",
    "params",
    "features",
    "data_range",
    "metrics",
    "lib_versions",
    "status",
    "trained_at",
    "status_changed_at",
)
EVENT_COLUMNS = (
    "ts",
    "version",
    "action",
    "from_status",
    "to_status",
    "replaced",
    "actor",
    "reason",
)


def record(conn: sqlite3.Connection, version: str) -> tuple[Any, ...] | None:
    """A version's record (RECORD_COLUMNS), or None when it is not registered."""
    row = conn.execute(
        f"SELECT {RECORD_COLUMNS} FROM models WHERE version = ? ORDER BY id DESC LIMIT 1",
        (version,),
    ).fetchone()
    return None if row is None else tuple(row)


def records(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """Every record (RECORD_COLUMNS), newest first."""
    return [tuple(r) for r in conn.execute(f"SELECT {RECORD_COLUMNS} FROM models ORDER BY id DESC")]


def newest_with_status(conn: sqlite3.Connection, status: str) -> tuple[Any, ...] | None:
    row = conn.execute(
        f"SELECT {RECORD_COLUMNS} FROM models WHERE status = ? ORDER BY id DESC LIMIT 1",
        (status,),
    ).fetchone()
    return None if row is None else tuple(row)


def is_empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM models LIMIT 1").fetchone() is None


def replaced_when_made(conn: sqlite3.Connection, version: str, status: str) -> str | None:
    """The version `version` replaced when it last took `status`; None when it replaced
    none (or in a database from before status events were kept)."""
    has_events = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'model_events'"
    ).fetchone()
    if has_events is None:
        return None
    row = conn.execute(
        "SELECT replaced FROM model_events WHERE version = ? AND to_status = ?"
        " ORDER BY id DESC LIMIT 1",
        (version, status),
    ).fetchone()
    return row[0] if row and row[0] else None


def insert_model(conn: sqlite3.Connection, row: Sequence[Any]) -> None:
    """A new version, as a tuple in MODEL_COLUMNS order."""
    marks = ", ".join("?" for _ in MODEL_COLUMNS)
    conn.execute(f"INSERT INTO models ({', '.join(MODEL_COLUMNS)}) VALUES ({marks})", row)


def set_path(conn: sqlite3.Connection, version: str, path: str) -> None:
    conn.execute("UPDATE models SET path = ? WHERE version = ?", (path, version))


def change_status(conn: sqlite3.Connection, event: Sequence[Any]) -> None:
    """A version's status change and its `model_events` row (EVENT_COLUMNS order)."""
    ts, version, _, _, to_status, *_ = event
    conn.execute(
        "UPDATE models SET status = ?, status_changed_at = ? WHERE version = ?",
        (to_status, ts, version),
    )
    conn.execute(
        f"INSERT INTO model_events ({', '.join(EVENT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        event,
    )


# ------------------------------------------------------- predictions, drift

PREDICTION_COLUMNS = (
    "ts",
    "symbol",
    "model_version",
    "role",
    "proba",
    "regime",
    "regime_confidence",
    "true_regime",
    "ref_price",
    "horizon_ts",
)
DRIFT_COLUMNS = (
    "ts",
    "model_version",
    "kind",
    "name",
    "value",
    "threshold",
    "severity",
    "n",
    "detail",
)


def insert_predictions(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    marks = ", ".join("?" for _ in PREDICTION_COLUMNS)
    conn.executemany(
        f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES ({marks})", rows
    )


# A symbol's due predictions, read off the `predictions_due` index by symbol.
SCORE = (
    "UPDATE predictions SET outcome = (? > ref_price), exit_price = ?,"
    " scored_at = ? WHERE scored_at IS NULL AND symbol = ? AND horizon_ts <= ?"
)


def score(conn: sqlite3.Connection, symbol: str, price: float, now: int) -> int:
    """Score the symbol's predictions whose horizon has passed against `price`; how many."""
    return int(conn.execute(SCORE, (price, price, now, symbol, now)).rowcount)


def insert_drift(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    marks = ", ".join("?" for _ in DRIFT_COLUMNS)
    conn.executemany(f"INSERT INTO drift ({', '.join(DRIFT_COLUMNS)}) VALUES ({marks})", rows)


# The latest scored predictions, read off the `predictions_scored` index in id order.
RECENT = (
    "SELECT AVG((proba >= 0.5) = outcome), COUNT(*) FROM (SELECT proba, outcome"
    " FROM predictions WHERE model_version = ? AND role = ? AND scored_at IS NOT NULL"
    " ORDER BY id DESC LIMIT ?)"
)


def recent_accuracy(
    conn: sqlite3.Connection, version: str, role: str, window: int
) -> tuple[float | None, int]:
    """(accuracy, n) over the version's latest `window` scored predictions in `role`."""
    row = conn.execute(RECENT, (version, role, window)).fetchone()
    return row[0], int(row[1] or 0)


def shadow_sums(
    conn: sqlite3.Connection, champion: str, challenger: str
) -> tuple[int, float, float, int, int]:
    """Over every scored bar both predicted: (pairs, sum of the challenger's Brier
    gain, sum of its square, bars the champion called, bars the challenger called),
    kept by a trigger as the pairs are scored (`shadow_scores`)."""
    row = conn.execute(
        "SELECT pairs, gain_sum, gain_sq_sum, champion_correct, challenger_correct"
        " FROM shadow_scores WHERE champion = ? AND challenger = ?",
        (champion, challenger),
    ).fetchone()
    if row is None:
        return 0, 0.0, 0.0, 0, 0
    return int(row[0]), float(row[1]), float(row[2]), int(row[3]), int(row[4])


# ------------------------------------------------------------------- bars


def training_bars(
    conn: sqlite3.Connection,
    symbols: Sequence[str] | None,
    since: int | None,
    until: int | None,
) -> list[tuple[Any, ...]]:
    """Stored bars (BAR_COLUMNS) of `symbols` (all when None) in [since, until], by
    symbol then time: what a model trains on."""
    where: list[str] = ["1 = 1"]
    args: list[object] = []
    if symbols:
        where.append(f"symbol IN ({','.join('?' * len(symbols))})")
        args.extend(symbols)
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
    if until is not None:
        where.append("ts <= ?")
        args.append(until)
    sql = (
        f"SELECT {', '.join(BAR_COLUMNS)} FROM bars WHERE {' AND '.join(where)} ORDER BY symbol, ts"
    )
    return [tuple(r) for r in conn.execute(sql, args)]
