"""Helpers for the cockpit's tests: a database filled by a real engine run, and
AppTest runs of app.py against a chosen database. Fixtures live in
tests/cockpit_fixtures.py (load them with `pytest_plugins`).

The filled database comes from the engine itself (engine.process.runner.Engine stepped with
a moved clock: one cycle per simulated minute, ending now), so the pages are tested
against what the engine really writes. It is built once per test session and copied
for each test, so a test may add rows or queue commands freely.
"""

from __future__ import annotations

import ast
import functools
import os
import sqlite3
from pathlib import Path
from typing import Any

from streamlit import config
from streamlit.components.v2 import manifest_scanner
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from store.db import now_ms

# Each new AppTest scans the metadata of every installed package for Streamlit
# components: some 0.15 s a run, a seventh of the whole fast suite. The installed
# packages do not change while the tests run, so one scan per process is the same.
manifest_scanner.scan_component_manifests = functools.cache(
    manifest_scanner.scan_component_manifests
)

# Each AppTest run makes a new script cache, so every run compiled the app and its
# page again (reading, Streamlit's magic, compile: 4% of the fast suite). Kept per
# process here, by the file's path, size and modification time.
_COMPILED: dict[tuple[str, int, int, bool], Any] = {}
_compile_script = ScriptCache.get_bytecode


def _compiled_once(self: ScriptCache, script_path: str) -> Any:
    path = os.path.abspath(script_path)
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size, bool(config.get_option("runner.magicEnabled")))
    if key not in _COMPILED:
        _COMPILED[key] = _compile_script(self, script_path)
    return _COMPILED[key]


ScriptCache.get_bytecode = _compiled_once  # type: ignore[method-assign]

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CYCLES = 40
STEP_MS = 60_000


def run_engine_into(path: Path, cycles: int = CYCLES, step_ms: int = STEP_MS) -> None:
    """Run the real engine for `cycles` cycles into `path`, leaving it looking alive.

    The lease is not released (no close), as if the engine were still running: the
    last heartbeat is now and the open positions stay open.
    """
    from engine.config import load_settings
    from engine.process.runner import Engine

    clock = [now_ms() - cycles * step_ms]
    settings = load_settings(engine={"cycle_seconds": step_ms / 1000, "seed": 7})
    engine = Engine(settings, path, clock=lambda: clock[0])
    engine.open()
    for _ in range(cycles):
        engine.step(1)
        clock[0] += step_ms
    clock[0] = now_ms()
    engine.heartbeat_job()
    assert engine.db is not None
    engine.db.conn.commit()
    engine.db.conn.close()


def app(db: Path, page: str | None = None, *, timeout: float = 20) -> AppTest:
    """app.py run once against `db`, switched to `page` (e.g. "pages/orders.py").

    Call it inside a test using `cockpit_env`, which restores COCKPIT_DB afterwards.
    """
    os.environ["COCKPIT_DB"] = str(db)
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    return at


def declared_pages() -> list[tuple[str, str, str]]:
    """app.py's PAGES (file, title, icon), read without running Streamlit."""
    tree = ast.parse(Path(APP).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "PAGES" for t in node.targets
        ):
            return [tuple(spec) for spec in ast.literal_eval(node.value)]
    raise AssertionError("app.py declares no PAGES")


def open_url(db: Path, url_path: str, *, timeout: float = 20) -> AppTest:
    """app.py run once against `db` as a browser opening `/<url_path>` first.

    AppTest.switch_page only reaches pages the current navigation lists; a browser
    can ask for any URL, and Streamlit resolves it from the hash of its path.
    """
    os.environ["COCKPIT_DB"] = str(db)
    at = AppTest.from_file(APP, default_timeout=timeout)
    at._page_hash = calc_hash(url_path)
    return at.run()


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def execute(db: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def commands(db: Path) -> list[tuple[str, str]]:
    return [(k, a) for k, a in query(db, "SELECT kind, args FROM commands ORDER BY id")]
