"""The model registry: the `models` table, its status history and the audit trail.

Statuses: candidate (registered, not used) -> challenger (shadowed live, never
traded) -> champion (trades) -> retired. At most one champion and one challenger.
Promoting a version retires the champion it replaces; rollback restores the
champion that came before the current one and retires the current one. Every
change is one transaction with a `model_events` row and an audit record.

Writes run on the engine's writer (the trading thread, through the command job);
reads take any connection. Promote and rollback check the artifact's hashes first,
so the registry never names as champion a file that would be refused at load.

Exceptions:

    Exception
     └── RegistryError   the change is not allowed (unknown version, wrong status,
                         nothing to roll back to, artifact refused); nothing written
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from engine.alerts.audit import append_audit
from engine.ml.artifact import ArtifactError, models_dir, verify_artifact
from store import models as stored
from store.commands import CommandKind
from store.db import now_ms
from store.secrets import db_file_of

if TYPE_CHECKING:
    from engine.ml.train import TrainedModel

log = logging.getLogger(__name__)


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    CHALLENGER = "challenger"
    CHAMPION = "champion"
    RETIRED = "retired"


class RegistryError(ValueError):
    """The registry change is not allowed; nothing was written."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    version: str
    name: str
    path: str
    sha256: str
    status: ModelStatus
    trained_at: int
    status_changed_at: int | None
    params: dict[str, Any]
    features: list[str]
    data_range: dict[str, Any]
    metrics: dict[str, Any]
    lib_versions: dict[str, str]


def _record(r: tuple[Any, ...]) -> ModelRecord:
    """A row of store.models.RECORD_COLUMNS as the record."""
    return ModelRecord(
        version=r[0],
        name=r[1],
        path=r[2],
        sha256=r[3],
        status=ModelStatus(r[4]),
        trained_at=r[5],
        status_changed_at=r[6],
        params=json.loads(r[7] or "{}"),
        features=json.loads(r[8] or "[]"),
        data_range=json.loads(r[9] or "{}"),
        metrics=json.loads(r[10] or "{}"),
        lib_versions=json.loads(r[11] or "{}"),
    )


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Join the caller's open transaction, or run (and commit) one of our own."""
    if conn.in_transaction:
        yield
        return
    with conn:
        yield


# ------------------------------------------------------------------------ reads


def get(conn: sqlite3.Connection, version: str) -> ModelRecord | None:
    row = stored.record(conn, version)
    return _record(row) if row else None


def list_models(conn: sqlite3.Connection) -> list[ModelRecord]:
    """Every version, newest first."""
    return [_record(r) for r in stored.records(conn)]


def with_status(conn: sqlite3.Connection, status: ModelStatus) -> ModelRecord | None:
    row = stored.newest_with_status(conn, status.value)
    return _record(row) if row else None


def champion(conn: sqlite3.Connection) -> ModelRecord | None:
    return with_status(conn, ModelStatus.CHAMPION)


def challenger(conn: sqlite3.Connection) -> ModelRecord | None:
    return with_status(conn, ModelStatus.CHALLENGER)


def needs_bootstrap(conn: sqlite3.Connection) -> bool:
    """True when the registry is empty: the engine should train a first model."""
    return stored.is_empty(conn)


def replaced_by(conn: sqlite3.Connection, version: str) -> str | None:
    """The champion `version` replaced when it last became champion."""
    return stored.replaced_when_made(conn, version, ModelStatus.CHAMPION.value)


def champion_lineage(conn: sqlite3.Connection, version: str) -> list[str]:
    """The champions before `version`, most recent first (the load fallback chain)."""
    chain: list[str] = []
    current: str | None = replaced_by(conn, version)
    while current is not None and current not in chain and current != version:
        chain.append(current)
        current = replaced_by(conn, current)
    return chain


# ------------------------------------------------------------------------ writes


def _event(
    db: Database,
    now: int,
    version: str,
    action: str,
    *,
    before: ModelStatus | None,
    after: ModelStatus,
    actor: str,
    replaced: str | None = None,
    reason: str = "",
) -> None:
    stored.change_status(
        db.conn,
        (
            now,
            version,
            action,
            before.value if before else None,
            after.value,
            replaced,
            actor,
            reason,
        ),
    )
    payload = {"version": version, "from": before.value if before else None, "to": after.value}
    if replaced:
        payload["replaced"] = replaced
    if reason:
        payload["reason"] = reason
    append_audit(db, actor, f"model.{action}", payload, ts=now)
    log.info("model %s: %s -> %s (%s by %s)", version, before, after.value, action, actor)


def _require(db: Database, version: str) -> ModelRecord:
    record = get(db.conn, version)
    if record is None:
        raise RegistryError(f"no model version {version!r} in the registry")
    return record


def artifact_path(conn: sqlite3.Connection, stored: str) -> Path:
    """A registry path on disk: relative paths are inside the models folder beside
    the database, absolute ones (a configured `ml.artifacts_dir`) stand as they are."""
    path = Path(stored)
    db = db_file_of(conn)
    if path.is_absolute() or db is None:
        return path
    return models_dir(db) / path


def _stored_path(conn: sqlite3.Connection, path: Path) -> str:
    db = db_file_of(conn)
    if db is not None:
        try:
            return str(Path(path).resolve().relative_to(models_dir(db).resolve()))
        except ValueError:
            pass
    return str(path)


def localize_artifacts(db: Database) -> int:
    """Bring every registered artifact into the models folder beside the database and
    record its path relative to it; returns the rows rewritten.

    Registries from before artifacts lived beside the database hold absolute paths
    into a shared folder: each version folder is copied (not moved: another database
    may point at it too). A missing artifact is left as it is; loading it alerts.
    """
    file = db_file_of(db.conn)
    if file is None:
        return 0
    folder = models_dir(file)
    moved = 0
    for version, registered in stored.artifact_paths(db.conn):
        path = Path(registered)
        if not path.is_absolute():
            continue
        inside = _stored_path(db.conn, path)
        if Path(inside).is_absolute():
            if not path.exists():
                continue
            target = folder / path.parent.name
            if not target.exists():
                shutil.copytree(path.parent, target)
            inside = str(target.relative_to(folder) / path.name)
        stored.set_path(db.conn, version, inside)
        log.info("model %s: artifact now at %s in %s", version, inside, folder)
        moved += 1
    db.conn.commit()
    return moved


def _verified(conn: sqlite3.Connection, record: ModelRecord) -> None:
    try:
        verify_artifact(artifact_path(conn, record.path), record.sha256)
    except ArtifactError as exc:
        raise RegistryError(f"model {record.version} refused: {exc}") from None


def register(
    db: Database, trained: TrainedModel, *, now: int | None = None, actor: str = "engine"
) -> str:
    """Record a trained version as a candidate; returns its version."""
    now = now_ms() if now is None else now
    if get(db.conn, trained.version) is not None:
        raise RegistryError(f"model version {trained.version} is already registered")
    with transaction(db.conn):
        stored.insert_model(
            db.conn,
            (
                trained.name,
                trained.version,
                _stored_path(db.conn, Path(trained.path)),
                trained.sha256,
                json.dumps(trained.params, sort_keys=True),
                json.dumps(list(trained.features)),
                json.dumps(trained.data_range, sort_keys=True),
                json.dumps(trained.metrics, sort_keys=True),
                json.dumps(trained.lib_versions, sort_keys=True),
                ModelStatus.CANDIDATE.value,
                trained.trained_at,
                now,
            ),
        )
        _event(
            db,
            now,
            trained.version,
            "register",
            before=None,
            after=ModelStatus.CANDIDATE,
            actor=actor,
        )
    return trained.version


def promote(
    db: Database,
    version: str,
    *,
    now: int | None = None,
    actor: str = "operator",
    reason: str = "",
) -> str:
    """Make `version` the champion; the champion it replaces is retired."""
    now = now_ms() if now is None else now
    record = _require(db, version)
    if record.status is ModelStatus.CHAMPION:
        raise RegistryError(f"model {version} is already the champion")
    _verified(db.conn, record)
    current = champion(db.conn)
    _take_over(
        db,
        now,
        record,
        current=current,
        move=("promote", ModelStatus.CHAMPION),
        displaced=("demote", ModelStatus.RETIRED),
        actor=actor,
        reason=reason,
    )
    return f"promoted {version}" + (f", retired {current.version}" if current else "")


def _take_over(
    db: Database,
    now: int,
    record: ModelRecord,
    *,
    current: ModelRecord | None,
    move: tuple[str, ModelStatus],
    displaced: tuple[str, ModelStatus],
    actor: str,
    reason: str = "",
) -> None:
    """`record` takes the status `move` gives it; whoever held that status before
    moves to the status `displaced` gives, in one transaction."""
    with transaction(db.conn):
        if current is not None:
            _event(
                db,
                now,
                current.version,
                displaced[0],
                before=current.status,
                after=displaced[1],
                actor=actor,
                reason=f"replaced by {record.version}",
            )
        _event(
            db,
            now,
            record.version,
            move[0],
            before=record.status,
            after=move[1],
            actor=actor,
            replaced=current.version if current else None,
            reason=reason,
        )


def rollback(
    db: Database, *, now: int | None = None, actor: str = "operator", reason: str = ""
) -> str:
    """Restore the champion before the current one and retire the current one."""
    now = now_ms() if now is None else now
    current = champion(db.conn)
    if current is None:
        raise RegistryError("there is no champion to roll back")
    previous = replaced_by(db.conn, current.version)
    if previous is None:
        raise RegistryError(f"champion {current.version} replaced no earlier champion")
    target = _require(db, previous)
    _verified(db.conn, target)
    with transaction(db.conn):
        _event(
            db,
            now,
            current.version,
            "retire",
            before=ModelStatus.CHAMPION,
            after=ModelStatus.RETIRED,
            actor=actor,
            reason=f"rolled back to {previous}",
        )
        # The restored champion keeps its own predecessor, so a second rollback goes further.
        _event(
            db,
            now,
            previous,
            "rollback",
            before=target.status,
            after=ModelStatus.CHAMPION,
            actor=actor,
            replaced=replaced_by(db.conn, previous),
            reason=reason,
        )
    return f"rolled back to {previous}, retired {current.version}"


def retire(
    db: Database,
    version: str,
    *,
    now: int | None = None,
    actor: str = "operator",
    reason: str = "",
) -> str:
    """Retire a version. Retiring the champion leaves the engine on rules only."""
    now = now_ms() if now is None else now
    record = _require(db, version)
    if record.status is ModelStatus.RETIRED:
        raise RegistryError(f"model {version} is already retired")
    with transaction(db.conn):
        _event(
            db,
            now,
            version,
            "retire",
            before=record.status,
            after=ModelStatus.RETIRED,
            actor=actor,
            reason=reason,
        )
    if record.status is ModelStatus.CHAMPION:
        return f"retired champion {version}; the engine trades on rules only"
    return f"retired {version}"


def set_challenger(
    db: Database, version: str, *, now: int | None = None, actor: str = "operator"
) -> str:
    """Shadow `version` live beside the champion; a previous challenger returns to candidate."""
    now = now_ms() if now is None else now
    record = _require(db, version)
    if record.status is ModelStatus.CHAMPION:
        raise RegistryError(f"model {version} is the champion; it cannot be its own challenger")
    if record.status is ModelStatus.CHALLENGER:
        return f"{version} is already the challenger"
    current = challenger(db.conn)
    _take_over(
        db,
        now,
        record,
        current=current,
        move=("challenger", ModelStatus.CHALLENGER),
        displaced=("candidate", ModelStatus.CANDIDATE),
        actor=actor,
    )
    return f"{version} is the challenger"


def adopt(
    db: Database, trained: TrainedModel, *, now: int | None = None, actor: str = "engine"
) -> str:
    """Register a freshly trained version: champion if there is none (bootstrap), else
    challenger, so it is shadowed live before anyone promotes it."""
    version = register(db, trained, now=now, actor=actor)
    if champion(db.conn) is None:
        promote(db, version, now=now, actor=actor, reason="first model")
    else:
        set_challenger(db, version, now=now, actor=actor)
    return version


def handle_command(
    db: Database,
    kind: CommandKind | str,
    args: Mapping[str, Any],
    *,
    now: int | None = None,
    actor: str = "operator",
) -> str:
    """Apply a cockpit command (promote, rollback, retire, challenger); returns the result.

    Raises RegistryError with the reason when the command cannot be applied. TRAIN is
    not handled here: it runs on the ML executor (train.train_model), then `adopt`.
    """
    kind = CommandKind(kind)
    reason = str(args.get("reason", ""))
    if kind is CommandKind.ROLLBACK:
        return rollback(db, now=now, actor=actor, reason=reason)
    version = args.get("version")
    if not isinstance(version, str) or not version:
        raise RegistryError(f"{kind.value} needs a model version")
    if kind is CommandKind.PROMOTE:
        return promote(db, version, now=now, actor=actor, reason=reason)
    if kind is CommandKind.RETIRE:
        return retire(db, version, now=now, actor=actor, reason=reason)
    raise RegistryError(f"{kind.value} is not a registry command")
