"""The keyed audit chain, its anchor beside the database and `python -m engine audit`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from engine.__main__ import main
from engine.alerts import audit
from engine.process.runner import Engine
from store.db import open_writer
from tests.conftest import FakeClock, engine_settings


def chain(db_file: Path, n: int = 6) -> Database:
    db = open_writer(db_file)
    for i in range(n):
        audit.append_audit(db, "cli:op", "state_change", {"i": i}, ts=1_000 + i)
    db.conn.commit()
    audit.write_anchor(db.conn)
    return db


def first_bad(db: Database) -> int | None:
    db.conn.commit()
    return audit.verify(db.conn).first_bad


def test_intact_chain_verifies_with_its_head_anchored(db_file: Path) -> None:
    db = chain(db_file)
    report = audit.verify(db.conn)
    assert report.ok and report.keyed and report.rows == 6
    assert report.anchor == report.head == audit.read_anchor(db_file)


def test_swapped_rows_are_named(db_file: Path) -> None:
    db = chain(db_file)
    rows = {
        r[0]: r[1:] for r in db.conn.execute("SELECT id, ts, payload, prev_hash, hash FROM audit")
    }
    for rid, other in ((3, 4), (4, 3)):
        db.conn.execute(
            "UPDATE audit SET ts = ?, payload = ?, prev_hash = ?, hash = ? WHERE id = ?",
            (*rows[other], rid),
        )
    assert first_bad(db) == 3


def test_a_deleted_middle_row_names_the_row_after_it(db_file: Path) -> None:
    db = chain(db_file)
    db.conn.execute("DELETE FROM audit WHERE id = 3")
    assert first_bad(db) == 4


def test_deleting_the_newest_rows_is_caught_by_the_anchor(db_file: Path) -> None:
    db = chain(db_file)
    db.conn.execute("DELETE FROM audit WHERE id > 3")
    report = audit.verify(db.conn)
    assert not report.ok
    assert report.first_bad == 6 and "missing" in report.reason


def test_deleting_every_row_is_caught_by_the_anchor(db_file: Path) -> None:
    db = chain(db_file)
    db.conn.execute("DELETE FROM audit")
    assert first_bad(db) == 6


def test_a_rewrite_with_recomputed_plain_hashes_is_caught(db_file: Path) -> None:
    db = chain(db_file)
    db.conn.execute("UPDATE audit SET payload = '{\"i\": 99}' WHERE id = 2")
    prev = audit.GENESIS
    for rid, ts, actor, action, payload in db.conn.execute(
        "SELECT id, ts, actor, action, payload FROM audit ORDER BY id"
    ).fetchall():
        digest = hashlib.sha256("\x1f".join([prev, str(ts), actor, action, payload]).encode())
        db.conn.execute(
            "UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest.hexdigest(), rid)
        )
        prev = digest.hexdigest()
    assert first_bad(db) == 1


def test_plain_hashed_rows_are_re_hashed_under_the_key_when_it_is_made(db_file: Path) -> None:
    db = open_writer(db_file)
    prev = audit.GENESIS
    for i in range(3):  # rows as the unkeyed chain wrote them
        body = json.dumps({"i": i})
        digest = audit._digest(None, prev, (i, "engine", "state_change", body))
        db.conn.execute(
            "INSERT INTO audit (ts, actor, action, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            (i, "engine", "state_change", body, prev, digest),
        )
        prev = digest
    db.conn.commit()
    assert not audit.verify(db.conn).ok  # no key yet: an unkeyed chain is not trusted
    audit.ensure_key(db)
    db.conn.commit()
    assert audit.verify(db.conn).ok
    (payload,) = db.conn.execute(
        "SELECT payload FROM audit WHERE action = 'audit.keyed'"
    ).fetchone()
    assert json.loads(payload) == {"rows": 3, "legacy_chain": "intact"}


def test_verify_cli_exits_non_zero_and_names_the_first_bad_row(
    db_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = chain(db_file)
    assert main(["audit", "--db", str(db_file), "verify"]) == 0
    db.conn.execute("UPDATE audit SET actor = 'intruder' WHERE id = 5")
    db.conn.commit()
    capsys.readouterr()
    assert main(["audit", "--db", str(db_file), "verify"]) == 1
    assert "row 5" in capsys.readouterr().err


def test_export_csv_has_every_row_oldest_first(
    db_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain(db_file, n=4)
    capsys.readouterr()
    assert main(["audit", "--db", str(db_file), "export", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 4]
    assert rows[0]["actor"] == "cli:op" and rows[0]["time_utc"].startswith("1970-01-01T00:00:01")


def test_the_engine_anchors_the_head_after_a_command(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    from store.commands import CommandKind, enqueue_command

    eng = Engine(engine_settings(warmup_bars=30), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    enqueue_command(CommandKind.PAUSE, {}, requested_by="cli:op", db=db_file)
    clock.advance(1000)
    eng.step()
    anchored = audit.read_anchor(db_file)
    assert anchored is not None and eng.db is not None
    assert anchored == audit.head(eng.db.conn)
    assert audit.verify(eng.db.conn).ok


def test_a_head_from_elsewhere_catches_a_cut_when_the_anchor_file_is_gone(
    db_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = chain(db_file)
    kept = audit.head(db.conn)
    assert kept is not None
    db.conn.execute("DELETE FROM audit WHERE id > 4")
    db.conn.commit()
    audit.anchor_file(db_file).unlink()
    assert main(["audit", "--db", str(db_file), "verify"]) == 0  # nothing left to compare
    head = f"{kept.id}:{kept.hash}"
    assert main(["audit", "--db", str(db_file), "verify", "--head", head]) == 1
    assert "row 6" in capsys.readouterr().err
