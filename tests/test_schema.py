"""The migration registry: one place for every table, applied once by the writer.

A fresh database gets everything; a database from any earlier version upgrades,
its rows kept; applying twice changes nothing; everything pending applies in one
transaction; readers never migrate and refuse an older database with a clear error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cockpit import risk_views
from engine.domain import OrderStatus
from store import paper as paper_rows
from store import schema
from store.db import maybe_reader, open_reader, open_writer
from store.orders import OrderRepository
from store.schema import REGISTRY, SCHEMA_VERSION, SchemaError, migrate, registered


def _tables(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def _schema_of(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return _tables(conn)
    finally:
        conn.close()


def _execute(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql)
    finally:
        conn.close()


def _applied(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id")
    return [(str(s), str(n)) for s, n in rows]


def _old_database(path: Path, upto: int) -> None:
    """A database as an earlier version left it: the first `upto` migrations of the
    registry applied set by set, the way each set used to be applied on its own,
    and no schema version recorded (user_version 0)."""
    wanted = registered()[:upto]
    db = Database(sqlite3.connect(path))
    for migration_set in REGISTRY:
        names = [n for s, n in wanted if s == migration_set.name]
        if not names:
            continue
        later = [m.name for m in migration_set._migrations if m.name not in names]
        migration_set.apply(db, stop_before=later[0] if later else None)
    assert _applied(db.conn) == wanted
    assert schema.schema_version(db.conn) == 0
    db.conn.close()


def test_a_fresh_database_gets_every_table_at_the_current_version(tmp_path: Path) -> None:
    db = open_writer(tmp_path / "fresh.db")
    try:
        assert schema.schema_version(db.conn) == SCHEMA_VERSION == len(registered())
        assert _applied(db.conn) == registered()
        tables = set(db.table_names())
        assert {"engine", "orders", "paper_orders", "risk_usage", "predictions",
                "alert_deliveries", "secrets", "backtest_runs"} <= tables  # fmt: skip
    finally:
        db.conn.close()


def _master(conn: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    objects = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"
    return conn.execute(objects).fetchall()


def test_a_fresh_database_is_what_the_migrations_make_of_an_empty_one(tmp_path: Path) -> None:
    """A fresh database is written from an image of the migrations' result (fewer
    statements); it must be the database running them one by one makes."""
    stepwise = Database(sqlite3.connect(tmp_path / "stepwise.db"))
    stepwise.conn.execute("BEGIN IMMEDIATE")
    schema._apply_pending(stepwise, REGISTRY)
    stepwise.conn.execute("COMMIT")
    schema._FRESH.write(sqlite3.connect(":memory:"))  # the image is taken before `before`
    before = str(datetime.now(UTC))
    fresh = open_writer(tmp_path / "fresh.db")
    try:
        assert _master(fresh.conn) == _master(stepwise.conn)
        assert _applied(fresh.conn) == _applied(stepwise.conn) == registered()
        stamps = [r[0] for r in fresh.conn.execute("SELECT applied_at FROM _sqlite_migrations")]
        assert all(s >= before for s in stamps), "recorded as applied now, not when imaged"
        tables = fresh.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        for (table,) in tables.fetchall():
            if table != "_sqlite_migrations":
                rows = f'SELECT * FROM "{table}"'
                assert fresh.conn.execute(rows).fetchall() == stepwise.conn.execute(rows).fetchall()
    finally:
        fresh.conn.close()
        stepwise.conn.close()


def test_a_database_with_tables_of_its_own_is_migrated_step_by_step(bare: Database) -> None:
    """Only an empty database takes the image: anything in it is kept and built on."""
    bare.conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    bare.conn.execute("INSERT INTO notes (text) VALUES ('mine')")
    bare.conn.commit()
    assert migrate(bare) == [f"{s}/{n}" for s, n in registered()]
    assert bare.conn.execute("SELECT text FROM notes").fetchall() == [("mine",)]
    assert schema.schema_version(bare.conn) == SCHEMA_VERSION


@pytest.mark.parametrize(
    "upto", range(1, SCHEMA_VERSION), ids=[f"{s}/{n}" for s, n in registered()[1:]]
)
def test_a_database_from_an_earlier_version_upgrades_and_keeps_its_rows(
    tmp_path: Path, upto: int
) -> None:
    """The id names the first migration the old database lacks."""
    path = tmp_path / "old.db"
    _old_database(path, upto)
    _execute(path, "INSERT INTO commands (kind, requested_at) VALUES ('pause', 1)")

    db = open_writer(path)
    try:
        assert _applied(db.conn) == registered()
        assert schema.schema_version(db.conn) == SCHEMA_VERSION
        assert db.conn.execute("SELECT kind FROM commands").fetchall() == [("pause",)]
    finally:
        db.conn.close()
    open_writer(tmp_path / "fresh.db").conn.close()
    assert _schema_of(path) == _schema_of(tmp_path / "fresh.db")


def test_applying_twice_changes_nothing(tmp_path: Path) -> None:
    db = open_writer(tmp_path / "c.db")
    observer = sqlite3.connect(tmp_path / "c.db")  # data_version moves on others' commits
    try:
        before = (_tables(db.conn), _applied(db.conn))
        seen = observer.execute("PRAGMA data_version").fetchone()
        assert migrate(db) == []
        assert (_tables(db.conn), _applied(db.conn)) == before
        assert observer.execute("PRAGMA data_version").fetchone() == seen, "nothing written"
    finally:
        observer.close()
        db.conn.close()
    again = open_writer(tmp_path / "c.db")
    try:
        assert (_tables(again.conn), _applied(again.conn)) == before
    finally:
        again.conn.close()


def _set(name: str, *steps: str, fail: str | None = None) -> Migrations:
    migrations = Migrations(name)
    for step in steps:

        def run(db: Database, step: str = step) -> None:
            if step == fail:
                raise RuntimeError(f"{step} failed")
            db.execute(f"CREATE TABLE {step} (id INTEGER PRIMARY KEY)")

        run.__name__ = step
        migrations()(run)
    return migrations


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Database]:
    """A database file no writer has opened: nothing applied yet."""
    db = Database(sqlite3.connect(tmp_path / "bare.db"))
    yield db
    db.conn.close()


def test_a_later_version_applies_only_what_it_added(bare: Database) -> None:
    db = bare
    assert migrate(db, [_set("a", "a1"), _set("b", "b1")]) == ["a/a1", "b/b1"]
    assert schema.schema_version(db.conn) == 2
    assert migrate(db, [_set("a", "a1", "a2"), _set("b", "b1")]) == ["a/a2"]
    assert schema.schema_version(db.conn) == 3
    assert migrate(db, [_set("a", "a1", "a2"), _set("b", "b1")]) == []


def test_a_failing_migration_leaves_the_database_as_it_was(bare: Database) -> None:
    db = bare
    with pytest.raises(RuntimeError, match="b1 failed"):
        migrate(db, [_set("a", "a1", "a2"), _set("b", "b1", fail="b1")])
    assert set(db.table_names()) <= {"_sqlite_migrations"}
    assert db.conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'a1'").fetchone() == (
        0,
    )
    assert schema.schema_version(db.conn) == 0
    assert not db.conn.in_transaction


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    open_writer(path).conn.close()
    _execute(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError, match="newer version of the cockpit"):
        open_writer(path)


def test_a_reader_on_an_unmigrated_database_is_told_to_start_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path, 3)
    before = _schema_of(path)
    with pytest.raises(SchemaError, match=r"schema version 0.*start the engine"):
        open_reader(path)
    assert _schema_of(path) == before  # a reader never migrates


def test_a_file_no_writer_has_filled_yet_is_no_database_to_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    path.touch()  # the writer creates the file before it commits the schema
    with pytest.raises(FileNotFoundError, match="start the engine first"):
        open_reader(path)
    with maybe_reader(path) as conn:
        assert conn is None


def test_open_statuses_are_the_working_order_statuses() -> None:
    working = tuple(s.value for s in OrderStatus if s.is_open)
    assert "(" + ", ".join(f"'{s}'" for s in working) + ")" == schema.OPEN_STATUSES


def test_every_read_of_working_orders_uses_the_open_orders_index(tmp_path: Path) -> None:
    # A partial index serves only a query that names the same literal statuses; one
    # that binds them as parameters would scan the whole orders table instead.
    path = tmp_path / "open.db"
    db = open_writer(path)
    executed: list[str] = []
    db.conn.set_trace_callback(executed.append)
    OrderRepository(db).load_open()
    list(paper_rows.working_orders(db.conn))
    risk_views._open_orders(db.conn)
    db.conn.set_trace_callback(None)
    db.conn.close()
    with open_reader(path) as conn:
        plans = {
            sql: " ".join(str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in executed
            if "status IN" in sql
        }
    assert len(plans) == 3
    for sql, plan in plans.items():
        assert "idx_orders_open" in plan or "idx_paper_orders_open" in plan, (sql, plan)


def test_positions_keyed_by_symbol_keep_their_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path, registered().index(("cockpit", "m010_fewer_pages_per_fill")))
    _execute(path, "INSERT INTO positions (symbol, qty, avg_price) VALUES ('A', 5, 10.5)")
    db = open_writer(path)
    try:
        assert db.conn.execute("SELECT symbol, qty, avg_price FROM positions").fetchall() == [
            ("A", 5.0, 10.5)
        ]
        for table in ("positions", "paper_positions", "paper_bars"):
            sql = db.conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()[0]
            assert sql.endswith("WITHOUT ROWID"), table
        db.conn.execute("INSERT OR REPLACE INTO positions (symbol, qty) VALUES ('A', 7)")
        assert db.conn.execute("SELECT count(*), max(qty) FROM positions").fetchone() == (1, 7.0)
    finally:
        db.conn.close()
