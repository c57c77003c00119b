"""Backups you can restore: the database, the model artifacts it points to, a manifest.

A backup is one folder, written under a temporary name and renamed when complete,
so a half-written backup never looks like one:

    <backups>/cockpit-20260101-023000/
        cockpit.db      SQLite's online backup: consistent while the engine writes
        models/...      every artifact the registry points to (paths as registered)
        manifest.json   SHA-256 and size of every file, the schema version
                        (store.schema's, PRAGMA user_version), the audit chain's head

Restoring checks every file against the manifest, SQLite's integrity check, that
the secrets key opens the backup's secrets and that the audit chain verifies up to
the head in the manifest; it refuses a backup whose schema is newer than this
code's, and refuses while an engine holds the target database,
keeps the replaced database beside it (`<db>.replaced-<time>`), and anchors the
restored chain's head. The secrets key is never in a backup: keep it apart.

    Exception
     └── BackupError   a backup cannot be taken, trusted or restored; the message says why
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.alerts import audit
from engine.ml.artifact import models_dir
from engine.process.lease import DatabaseLock, LeaseHeld
from store import engine_row
from store.backup import integrity, online_copy
from store.db import private_file
from store.models import artifact_paths
from store.schema import SCHEMA_VERSION, schema_version
from store.secrets import SecretsError, SecretStore, key_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DB_NAME = "cockpit.db"
PREFIX = "cockpit-"
FORMAT = 2  # 1 recorded the newest migration per set; 2 the one schema version


class BackupError(Exception):
    """A backup cannot be taken, trusted or restored."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _registered(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    try:
        return artifact_paths(conn)
    except sqlite3.OperationalError:  # no ML tables: an engine that never ran ML
        return []


# ------------------------------------------------------------------- taking


def take_backup(
    conn: sqlite3.Connection, source: Path, folder: Path, now: int, *, keep: int = 7
) -> Path:
    """Back up the database `conn` has open (its file is `source`) into `folder`;
    returns the backup's folder. Backups beyond the newest `keep` are removed."""
    stamp = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y%m%d-%H%M%S")
    final = folder / f"{PREFIX}{stamp}"
    if final.exists():
        raise BackupError(f"{final} already exists")
    work = _private_dir(folder / f".{PREFIX}{stamp}.partial")
    started = time.perf_counter()
    try:
        with online_copy(conn, private_file(work / DB_NAME)) as copy:
            schema_at = schema_version(copy)
            top = audit.head(copy)
            registered = _registered(copy)
        models = []
        for version, stored in registered:
            if Path(stored).is_absolute():
                log.warning("model %s lives outside the models folder; not in the backup", version)
                continue
            src = models_dir(source) / stored
            if src.parent.is_dir():
                shutil.copytree(src.parent, work / "models" / Path(stored).parent)
                models.append(version)
            else:
                log.warning("model %s: artifact %s is missing; not in the backup", version, src)
        files = sorted(p for p in work.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "created_at": now,
            "created_utc": datetime.fromtimestamp(now / 1000, UTC).isoformat(),
            "source": str(source),
            "database": DB_NAME,
            "schema_version": schema_at,
            "audit_head": top.as_dict() if top else None,
            "models": models,
            "files": [
                {"path": str(p.relative_to(work)), "sha256": _sha256(p), "size": p.stat().st_size}
                for p in files
            ],
        }
        manifest_file = private_file(work / MANIFEST)
        manifest_file.write_text(json.dumps(manifest, indent=2))
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _prune(folder, keep)
    log.info("backup %s in %.1f s", final.name, time.perf_counter() - started)
    return final


def _prune(folder: Path, keep: int) -> None:
    backups = sorted(p for p in folder.glob(f"{PREFIX}*") if p.is_dir())
    for old in backups[:-keep]:
        shutil.rmtree(old)


def backup_file(source: Path, folder: Path, now: int, *, keep: int = 7) -> Path:
    """Back up the database at `source` from a read-only connection of its own (safe
    beside a running engine)."""
    if not source.exists():
        raise BackupError(f"no database at {source}")
    conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return take_backup(conn, source, folder, now, keep=keep)
    finally:
        conn.close()


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class Manifest:
    folder: Path
    created_at: int
    schema_version: int | None  # None in a manifest from before the one registry
    audit_head: audit.Head | None
    models: tuple[str, ...]

    @property
    def database(self) -> Path:
        return self.folder / DB_NAME


def _folder_of(path: Path) -> Path:
    """A backup named by its folder, its manifest or its database file."""
    return path if path.is_dir() else path.parent


def read_manifest(path: Path) -> tuple[Manifest, list[dict[str, Any]]]:
    folder = _folder_of(path)
    try:
        data = json.loads((folder / MANIFEST).read_text())
        head = data["audit_head"]
        manifest = Manifest(
            folder=folder,
            created_at=int(data["created_at"]),
            schema_version=_version_of(data),
            audit_head=audit.Head(int(head["id"]), str(head["hash"]), int(head["ts"]))
            if head
            else None,
            models=tuple(data["models"]),
        )
        return manifest, list(data["files"])
    except FileNotFoundError:
        raise BackupError(f"{folder} has no {MANIFEST}: not a backup") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{folder / MANIFEST} is unreadable: {exc}") from None


def _version_of(data: dict[str, Any]) -> int | None:
    version = data.get("schema_version")
    return None if version is None else int(version)


def verify_backup(path: Path, store: SecretStore) -> Manifest:
    """Check every file against the manifest, SQLite's integrity, the secrets key and
    the audit chain up to the manifest's head. Raises BackupError naming the problem.
    A manifest from before the one registry gets the database's own schema version."""
    manifest, files = read_manifest(path)
    listed = {entry["path"] for entry in files}
    for entry in files:
        file = manifest.folder / entry["path"]
        if not file.is_file():
            raise BackupError(f"{entry['path']} is missing from the backup")
        if file.stat().st_size != entry["size"] or _sha256(file) != entry["sha256"]:
            raise BackupError(f"{entry['path']} differs from the manifest (SHA-256 or size)")
    if DB_NAME not in listed:
        raise BackupError(f"the manifest lists no {DB_NAME}")
    conn = sqlite3.connect(f"{manifest.database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        result = integrity(conn)
        if result != "ok":
            raise BackupError(f"SQLite integrity check failed: {result}")
        if manifest.schema_version is None:
            manifest = replace(manifest, schema_version=schema_version(conn))
        try:
            store.values(conn)
            report = audit.verify(conn, anchor=manifest.audit_head, store=store)
        except SecretsError as exc:
            raise BackupError(
                f"{exc}; the backup's secrets need the key they were stored under"
            ) from None
        if not report.ok:
            raise BackupError(f"the backup's {report.describe()}")
    finally:
        conn.close()
    return manifest


# ---------------------------------------------------------------- restoring


def engine_holding(target: Path, now: int, stale_ms: int) -> str | None:
    """Who holds `target`, or None when no engine runs on it (its lease is released
    or its heartbeat stale)."""
    if not target.exists():
        return None
    conn = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = engine_row.lease_holder(conn)
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    if not row or not row[0]:
        return None
    owner, pid, beat = row
    if now - (beat or 0) >= stale_ms:
        return None
    return f"pid {pid} on {owner}, heartbeat {(now - (beat or 0)) / 1000:.1f} s ago"


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    target: Path
    replaced: Path | None


def restore(path: Path, target: Path, now: int, *, stale_ms: int = 10_000) -> Restored:
    """Put a verified backup in place of `target` (refused while an engine holds it).

    The engine's file lock is held for the whole restore, so an engine that is alive
    but slow to beat is refused too, and none can start on a half-restored file.
    """
    holder = engine_holding(target, now, stale_ms)
    if holder is not None:
        raise BackupError(f"an engine runs on {target} ({holder}); stop it first")
    try:
        lock = DatabaseLock.acquire(target)
    except LeaseHeld as exc:
        raise BackupError(f"an engine runs on {target} ({exc}); stop it first") from None
    try:
        return _restore_locked(path, target, now)
    finally:
        lock.release()


def _refuse_newer(manifest: Manifest) -> None:
    """This code cannot run on a database from a newer schema: refuse before anything
    is replaced, rather than leave an engine that will not start."""
    version = manifest.schema_version
    if version is not None and version > SCHEMA_VERSION:
        raise BackupError(
            f"{manifest.folder.name} is at schema version {version}, newer than this"
            f" code's {SCHEMA_VERSION}: it was made by a newer version of the cockpit;"
            " restore it with that version"
        )


def _restore_locked(path: Path, target: Path, now: int) -> Restored:
    _refuse_newer(read_manifest(path)[0])
    manifest = verify_backup(path, SecretStore(target))
    _refuse_newer(manifest)
    stamp = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y%m%d-%H%M%S")
    replaced = None
    if target.exists():
        replaced = target.with_name(f"{target.name}.replaced-{stamp}")
        os.replace(target, replaced)
    for suffix in ("-wal", "-shm"):
        companion = Path(f"{target}{suffix}")
        if companion.exists():
            if replaced is not None:
                os.replace(companion, Path(f"{replaced}{suffix}"))
            else:
                companion.unlink()
    anchor = audit.anchor_file(target)
    if anchor.exists():
        os.replace(anchor, anchor.with_name(f"{anchor.name}.replaced-{stamp}"))
    tmp = private_file(target.with_name(f".{target.name}.restoring"))
    shutil.copyfile(manifest.database, tmp)
    os.replace(tmp, target)
    backup_models = manifest.folder / "models"
    if backup_models.is_dir():
        shutil.copytree(backup_models, models_dir(target), dirs_exist_ok=True)
    conn = sqlite3.connect(target)
    try:
        audit.write_anchor(conn)
    finally:
        conn.close()
    log.info("restored %s onto %s (replaced file kept as %s)", manifest.folder, target, replaced)
    return Restored(manifest, target, replaced)


def key_hint(target: Path) -> str:
    return f"set COCKPIT_SECRET_KEY or copy the key file to {key_file(target)}"
