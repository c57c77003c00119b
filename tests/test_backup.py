"""Backups and restores: manifest, verification, refusal while an engine runs, the
daily schedule, and model artifacts beside the database."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.__main__ import main
from engine.alerts import audit
from engine.config import load_settings
from engine.ml import registry
from engine.ml.artifact import models_dir
from engine.ml.train import TrainedModel
from engine.process.backup import BackupError, restore
from engine.process.runner import Engine, daily_trigger
from store.commands import CommandKind, enqueue_command
from store.db import open_writer
from store.schema import SCHEMA_VERSION
from store.secrets import key_file
from tests.conftest import FakeClock, engine_settings


def ran_engine(db_file: Path, clock: FakeClock, cycles: int = 5) -> None:
    """A few cycles and one operator command, so the audit chain has rows."""
    eng = Engine(engine_settings(warmup_bars=30), db_file, clock=clock)
    eng.open()
    try:
        enqueue_command(CommandKind.PAUSE, {}, requested_by="cli:op", db=db_file)
        for _ in range(cycles):
            clock.advance(1000)
            eng.step()
    finally:
        eng.close()


def backup(db_file: Path, to: Path) -> Path:
    assert main(["backup", "--db", str(db_file), "--to", str(to)]) == 0
    (folder,) = to.glob("cockpit-*")
    return folder


def with_champion(
    db_file: Path, clock: FakeClock, champion_in: Callable[[Path], TrainedModel]
) -> str:
    trained = champion_in(models_dir(db_file))
    db = open_writer(db_file)
    registry.adopt(db, trained, now=clock())
    db.conn.commit()
    db.conn.close()
    return trained.version


def test_a_backup_has_a_manifest_with_hashes_schema_and_audit_head(
    db_file: Path, clock: FakeClock, tmp_path: Path
) -> None:
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "elsewhere")
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "cockpit.db")
    assert entry["size"] == (folder / "cockpit.db").stat().st_size
    assert manifest["schema_version"] == SCHEMA_VERSION
    conn = sqlite3.connect(db_file)
    head = audit.head(conn)
    assert head is not None and manifest["audit_head"] == head.as_dict()
    conn.close()
    assert stat.S_IMODE((folder / "cockpit.db").stat().st_mode) == 0o600


def test_a_corrupted_backup_is_refused_and_the_database_left_alone(
    db_file: Path, clock: FakeClock, tmp_path: Path
) -> None:
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    with (folder / "cockpit.db").open("r+b") as f:
        f.seek(5000)
        f.write(b"\xff\xfe")
    before = db_file.read_bytes()
    assert main(["restore", "--db", str(db_file), str(folder)]) == 1
    assert db_file.read_bytes() == before


def test_a_backup_from_a_newer_schema_is_refused_and_the_database_left_alone(
    db_file: Path, clock: FakeClock, tmp_path: Path
) -> None:
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    manifest_file = folder / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    manifest_file.write_text(json.dumps(manifest))
    before = db_file.read_bytes()
    with pytest.raises(BackupError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        restore(folder, db_file, clock())
    assert db_file.read_bytes() == before


def test_an_older_manifest_is_judged_by_its_databases_own_schema_version(
    db_file: Path, clock: FakeClock, tmp_path: Path
) -> None:
    """A manifest from before the one registry lists migrations per set, not a version:
    the backup's database says which schema it is at."""
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    copy = sqlite3.connect(folder / "cockpit.db")
    copy.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    copy.close()
    manifest_file = folder / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["schema_version"]
    manifest["format"], manifest["schema"] = 1, {"cockpit": "m008_engine_heartbeat_seconds"}
    entry = next(f for f in manifest["files"] if f["path"] == "cockpit.db")
    data = (folder / "cockpit.db").read_bytes()
    entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="newer than this code's"):
        restore(folder, db_file, clock())


def test_restore_is_refused_while_an_engine_runs(
    db_file: Path, clock: FakeClock, tmp_path: Path, open_engines: list[Any]
) -> None:
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    eng = Engine(engine_settings(warmup_bars=30), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    with pytest.raises(BackupError, match="an engine runs"):
        restore(folder, db_file, clock())


def test_restore_is_refused_while_an_engine_holds_the_file_even_with_a_stale_heartbeat(
    db_file: Path, clock: FakeClock, tmp_path: Path, open_engines: list[Any]
) -> None:
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    eng = Engine(engine_settings(warmup_bars=30), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    before = db_file.read_bytes()
    an_hour_later = clock() + 3_600_000  # the heartbeat looks stale; the lock is still held
    with pytest.raises(BackupError, match="an engine runs"):
        restore(folder, db_file, an_hour_later)
    assert db_file.read_bytes() == before


def test_restore_keeps_the_replaced_database(
    db_file: Path, clock: FakeClock, tmp_path: Path
) -> None:
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    ran_engine(db_file, clock, cycles=3)
    newer = db_file.read_bytes()
    done = restore(folder, db_file, clock())
    assert done.replaced is not None and done.replaced.read_bytes() == newer
    conn = sqlite3.connect(db_file)
    assert audit.verify(conn).ok
    conn.close()


def test_a_restore_on_a_fresh_path_runs_the_engine_with_its_champion(
    db_file: Path,
    clock: FakeClock,
    tmp_path: Path,
    open_engines: list[Any],
    champion_in: Callable[[Path], TrainedModel],
) -> None:
    version = with_champion(db_file, clock, champion_in)
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    fresh = tmp_path / "machine2" / "cockpit.db"
    fresh.parent.mkdir()
    assert main(["restore", "--db", str(fresh), str(folder)]) == 1  # no key there yet
    shutil.copy(key_file(db_file), key_file(fresh))  # the operator brings the key
    assert main(["restore", "--db", str(fresh), str(folder)]) == 0
    shutil.rmtree(models_dir(db_file))  # nothing left to borrow from the first machine
    eng = Engine(engine_settings(warmup_bars=30), fresh, clock=clock)
    eng.open()
    open_engines.append(eng)
    assert eng.trader is not None and eng.trader.model is not None
    eng.trader.model.wait_loaded(timeout=60)
    assert eng.trader.model.champion_version == version
    clock.advance(1000)
    eng.step()
    assert main(["audit", "--db", str(fresh), "verify"]) == 0


def test_the_daily_backup_runs_at_the_configured_time(db_file: Path) -> None:
    settings = load_settings(engine={"backup_at": "02:30"}).engine
    after = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    fire = daily_trigger(settings).get_next_fire_time(None, after)
    assert fire == datetime(2026, 3, 2, 2, 30, tzinfo=UTC)


def test_the_daily_job_backs_up_into_the_configured_folder(
    db_file: Path, clock: FakeClock, tmp_path: Path, open_engines: list[Any]
) -> None:
    other = tmp_path / "other-disk"
    eng = Engine(engine_settings(warmup_bars=30, backup_dir=str(other)), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    eng.daily_job()
    (folder,) = other.glob("cockpit-*")
    assert (folder / "manifest.json").exists()


def test_legacy_absolute_artifact_paths_move_beside_the_database(
    db_file: Path, clock: FakeClock, tmp_path: Path, champion_in: Callable[[Path], TrainedModel]
) -> None:
    shared = tmp_path / "repo-var-models"
    with_champion(db_file, clock, champion_in)
    db = open_writer(db_file)
    (stored,) = db.conn.execute("SELECT path FROM models").fetchone()
    shutil.move(models_dir(db_file), shared)  # where artifacts used to live
    db.conn.execute("UPDATE models SET path = ?", (str(shared / stored),))
    db.conn.commit()
    assert registry.localize_artifacts(db) == 1
    (path,) = db.conn.execute("SELECT path FROM models").fetchone()
    assert path == stored and (models_dir(db_file) / path).exists()
    db.conn.close()


def test_a_backups_manifest_anchors_the_audit_chain(
    db_file: Path, clock: FakeClock, tmp_path: Path
) -> None:
    ran_engine(db_file, clock)
    folder = backup(db_file, tmp_path / "b")
    conn = sqlite3.connect(db_file)
    conn.execute("DELETE FROM audit")
    conn.commit()
    conn.close()
    audit.anchor_file(db_file).unlink()
    assert main(["audit", "--db", str(db_file), "verify", "--manifest", str(folder)]) == 1
