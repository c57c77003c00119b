"""The engine and its database file: one engine per path, a deleted or replaced file,
a full disk, and the dead-man's switch when the trading thread is stuck.

Alerts the database cannot hold are checked where the operator would see them: a
webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.process.lease import LeaseHeld
from engine.process.runner import Engine
from store.db import PROJECT_ROOT
from tests.conftest import FakeClock, engine_settings
from tests.http_support import Receiver, receiving


@pytest.fixture
def hook() -> Iterator[Receiver]:
    """The operator's webhook, on 127.0.0.1."""
    with receiving("/hook") as receiver:
        yield receiver


def engine_with_hook(db_file: Path, clock: FakeClock, url: str, opened: list[Any]) -> Engine:
    base = engine_settings(symbols=1, warmup_bars=60)
    settings = base.model_copy(
        update={"alerts": base.alerts.model_copy(update={"webhook_url": url})}
    )
    eng = Engine(settings, db_file, clock=clock)
    eng.open()
    opened.append(eng)
    return eng


def told(hook: Receiver, title: str) -> int:
    """How many messages carried this alert: alone, or grouped with others in a burst."""
    return sum(title in m["title"] or title in m["message"] for m in hook.bodies)


def delete_database(db_file: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)


def query(db_file: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# ------------------------------------------------------------ one engine per path


def test_a_second_engine_is_refused_even_after_the_database_was_deleted(
    db_file, clock, open_engines
):
    first = Engine(engine_settings(symbols=1, warmup_bars=60), db_file, clock=clock)
    first.open()
    open_engines.append(first)
    delete_database(db_file)

    with pytest.raises(LeaseHeld, match=r"another engine \(pid \d+\) holds the lock"):
        Engine(engine_settings(symbols=1, warmup_bars=60), db_file, clock=clock).open()


def test_the_lock_is_free_again_once_the_engine_closes(db_file, clock, open_engines):
    first = Engine(engine_settings(symbols=1, warmup_bars=60), db_file, clock=clock)
    first.open()
    first.close()

    second = Engine(engine_settings(symbols=1, warmup_bars=60), db_file, clock=clock)
    second.open()
    open_engines.append(second)
    assert second.trader is not None


def test_a_deleted_database_file_halts_the_engine_tells_the_operator_and_stops_it(
    db_file, clock, open_engines, hook
):
    eng = engine_with_hook(db_file, clock, hook.url, open_engines)
    delete_database(db_file)

    eng.heartbeat_job()
    eng.heartbeat_job()
    eng.close()  # drains the notifier

    assert eng.trader is not None and eng.trader.state.value == "HALTED"
    assert eng._stop.is_set(), "the run loop ends and the lock is released"
    assert told(hook, "Database file gone: trading halted, engine stopped") == 1
    assert not db_file.exists(), "nothing recreated the file"


def test_a_replaced_database_file_is_noticed(db_file, clock, open_engines, hook, tmp_path):
    eng = engine_with_hook(db_file, clock, hook.url, open_engines)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    os.replace(other, db_file)

    eng.heartbeat_job()
    eng.close()

    assert eng.guard is not None and "was replaced" in (eng.guard.lost or "")
    assert told(hook, "Database file gone: trading halted, engine stopped") == 1


# ------------------------------------------------------------------ disk full


def fill_until_full(eng: Engine, clock: FakeClock, limit: int = 50) -> None:
    for _ in range(limit):
        clock.advance(1000)
        eng.step()
        if eng.guard is not None and eng.guard.full_since is not None:
            return
    pytest.fail(f"the store did not fill in {limit} cycles")


def test_a_full_store_blocks_entries_tells_the_operator_once_and_recovers(
    db_file, clock, open_engines, hook, caplog: pytest.LogCaptureFixture
):
    eng = engine_with_hook(db_file, clock, hook.url, open_engines)
    assert eng.db is not None and eng.trader is not None
    pages = eng.db.conn.execute("PRAGMA page_count").fetchone()[0]
    # SQLite's page limit fails a write with SQLITE_FULL, exactly as a full disk does.
    eng.db.conn.execute(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.DEBUG, logger="engine"):
        fill_until_full(eng, clock)
        for _ in range(5):  # fewer than the dead-man's 10 intervals: one condition only
            clock.advance(1000)
            eng.step()
    assert "disk full" in eng.trader.risk_context(clock()).entries_blocked
    assert not [r for r in caplog.records if r.exc_info], "no traceback per cycle"
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    eng.db.conn.execute("PRAGMA max_page_count = 1073741823")
    clock.advance(1000)
    eng.step()
    assert eng.trader.risk_context(clock()).entries_blocked == ""
    eng.close()

    assert told(hook, "Disk full: new entries blocked") == 1
    returned = "Disk space returned: entries allowed again"
    assert query(db_file, "SELECT count(*) FROM alerts WHERE title = ?", returned) == [(1,)]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs: a real file system that fills up (needs root, as CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        check=False,
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_survived_and_left_by_itself(tmpfs, clock, open_engines, hook):
    db_file = tmpfs / "cockpit.db"
    eng = engine_with_hook(db_file, clock, hook.url, open_engines)
    assert eng.db is not None
    # An empty WAL before the disk fills: the next write must grow it, so it fails.
    eng.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = tmpfs / "filler"
    # Unbuffered: a buffered file would keep the bytes that did not fit and fail
    # again when closed, depending on how the free space happened to align.
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass

    fill_until_full(eng, clock)
    filler.unlink()
    clock.advance(1000)
    eng.step()
    eng.close()

    assert eng.guard is not None and eng.guard.full_since is None
    assert told(hook, "Disk full: new entries blocked") == 1


def test_a_start_on_a_read_only_file_system_says_so_in_one_line(tmpfs, tmp_path, clock):
    db_file = tmpfs / "cockpit.db"
    first = Engine(engine_settings(symbols=1, warmup_bars=10), db_file, clock=clock)
    first.open()
    first.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    result = run_cli(tmp_path, "run", "--db", str(db_file), "--for", "1")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"engine not started: {db_file}: ")
    assert "Read-only file system" in result.stderr or "readonly" in result.stderr


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_")}
    env["COCKPIT_CONFIG"] = str(tmp_path / "none.toml")
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=PROJECT_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_start_that_cannot_open_the_database_says_so_in_one_line(tmp_path):
    folder = tmp_path / "not-a-file.db"
    folder.mkdir()
    result = run_cli(tmp_path, "run", "--db", str(folder), "--for", "1")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"engine not started: {folder}: ")


# ------------------------------------------------------------------- dead man


def test_the_watchdog_alert_reaches_the_webhook_and_is_the_monitors_alert(
    db_file, clock, open_engines, hook
):
    eng = engine_with_hook(db_file, clock, hook.url, open_engines)
    clock.advance(60_000)  # no cycle for 60 intervals of 1 s

    eng.watchdog_job()
    eng.watchdog_job()
    eng.monitor_job()
    eng.close()

    rows = query(db_file, "SELECT source, title FROM alerts WHERE dedupe_key = 'deadman'")
    assert rows == [("monitor", "Dead-man's switch: no completed cycle")]
    assert told(hook, "Dead-man's switch: no completed cycle") == 1


def test_the_watchdog_reaches_the_operator_while_the_writer_is_held(
    db_file, clock, open_engines, hook
):
    eng = engine_with_hook(db_file, clock, hook.url, open_engines)
    clock.advance(60_000)
    stuck = sqlite3.connect(db_file)
    stuck.execute("BEGIN IMMEDIATE")  # as a trading thread stuck inside a transaction
    try:
        eng.watchdog_job()
        eng.watchdog_job()
    finally:
        stuck.rollback()
        stuck.close()
    eng.close()

    assert told(hook, "Dead-man's switch: no completed cycle") == 1
    assert query(db_file, "SELECT count(*) FROM alerts WHERE dedupe_key = 'deadman'") == [(0,)]


def test_copying_a_database_beside_does_not_count_as_replacing_it(db_file, clock, open_engines):
    eng = Engine(engine_settings(symbols=1, warmup_bars=60), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    shutil.copy(db_file, db_file.with_name("copy.db"))
    eng.heartbeat_job()
    assert eng.guard is not None and eng.guard.lost is None


def test_an_in_memory_engine_takes_no_lock_file_and_is_never_lost(tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    eng = Engine(engine_settings(symbols=1, warmup_bars=60), ":memory:", clock=clock)
    eng.open()
    try:
        clock.advance(1000)
        eng.step()
        assert eng.guard is not None and eng.guard.lost is None
        assert not eng._stop.is_set()
    finally:
        eng.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_in_memory_store_writes_nothing_beside_it(tmp_path, monkeypatch):
    """Every file the store keeps beside a database (lock, key, audit head, the file
    itself) is derived from its path: for ':memory:' there must be none, not one
    named ':memory:' in the working folder."""
    from engine.alerts import audit
    from store.db import ensure_schema, open_writer
    from store.secrets import SecretStore

    monkeypatch.chdir(tmp_path)
    ensure_schema(":memory:")
    db = open_writer(":memory:")
    try:
        SecretStore.of(db.conn).put(db, "alerts.smtp_password", "hunter2")
        audit.ensure_key(db)
        db.conn.commit()
        audit.write_anchor(db.conn)
        assert SecretStore.of(db.conn).get(db.conn, "alerts.smtp_password") == "hunter2"
    finally:
        db.conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_checkout_holds_no_file_named_after_an_in_memory_database():
    tracked = subprocess.run(
        ["git", "ls-files", "--", ":(literal):memory:"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tracked.stdout == ""
    assert not (PROJECT_ROOT / ":memory:").exists()
