"""A marathon soak: the engine as users run it, with the cockpit's readers and an
operator, for N minutes. Prints figures, never pass/fail.

- the engine: `python -m engine run` at 20 symbols and 0.25 s cycles, real
  scheduler, ML bootstrap on (the champion model is used once it registers);
- three reader processes running every cockpit page through AppTest in a loop
  (each page calls its read models exactly as the browser would);
- a command (pause, then resume) every few seconds, as the cockpit writes it.

It prints RSS after warm-up and at the end, cycle p50/p99 per window, database
growth per simulated day, "database is locked" errors in the engine and the
readers, and command latency (requested_at to done_at) p50/p99.

    .venv/bin/python bench/soak.py [--minutes 60] [--window-minutes 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "pages").glob("*.py")
    if p.stem not in {"__init__", "ui"}
)
LOCKED = "database is locked"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def _query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def reader(db: Path, until: float, out: Path) -> None:
    """One reader process: every page through AppTest until `until` (epoch s)."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    # Pages run bare here, and Streamlit warns of the missing ScriptRunContext at every
    # test it builds; it sets its loggers' levels again as it loads its configuration,
    # so a filter, which stays, drops that one line.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: "missing ScriptRunContext" not in str(record.msg)
    )

    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init  # type: ignore[method-assign]
    os.environ.update(COCKPIT_DB=str(db), COCKPIT_NO_AUTOSTART="1")
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    runs = locked = errors = 0
    samples: list[float] = []
    tests = {}
    while time.time() < until:
        for page in PAGES:
            if time.time() >= until:
                break
            try:
                at = tests.get(page)
                started = time.perf_counter()
                if at is None:
                    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
                    at.run()
                    at.switch_page(page).run()
                    tests[page] = at
                else:
                    at.run()
                samples.append((time.perf_counter() - started) * 1000)
                runs += 1
                for exc in at.exception:
                    errors += 1
                    locked += LOCKED in str(exc.message)
            except Exception as exc:  # a reader must keep polling, and count what broke
                errors += 1
                locked += LOCKED in str(exc)
                tests.pop(page, None)
    out.write_text(json.dumps({"runs": runs, "locked": locked, "errors": errors, "ms": samples}))


def _commands(db: Path, kind: str) -> None:
    from store.commands import enqueue_command

    enqueue_command(kind, {}, "cli:bench", db=db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--window-minutes", type=float, default=10.0)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--cycle-seconds", type=float, default=0.25)
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--command-every", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=60.0)
    parser.add_argument("--reader", nargs=3, metavar=("DB", "UNTIL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        reader(Path(args.reader[0]), float(args.reader[1]), Path(args.reader[2]))
        return

    folder = Path(tempfile.mkdtemp(prefix="cockpit-soak-"))
    db = folder / "soak.db"
    log = folder / "engine.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_")}
    env["COCKPIT_CONFIG"] = str(folder / "none.toml")
    duration = args.minutes * 60
    print(
        f"bench/soak.py: {args.minutes:g} min, {args.symbols} symbols, {args.cycle_seconds} s"
        f" cycles, {args.readers} readers, a command every {args.command_every:g} s; {folder}"
    )
    with log.open("wb") as log_file:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--db", str(db),
             "--symbols", str(args.symbols), "--cycle-seconds", str(args.cycle_seconds)],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started = time.time()
        while not db.exists() or not _query(
            db, "SELECT name FROM sqlite_master WHERE name='cycles'"
        ):
            time.sleep(0.2)
        until = started + duration
        readers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--reader",
                    str(db),
                    str(until),
                    str(folder / f"r{i}.json"),
                ],
                cwd=ROOT,
                env=env,
            )
            for i in range(args.readers)
        ]
        rss_start: float | None = None
        size_start: tuple[float, int] | None = None
        next_command, kind = time.time() + args.command_every, "pause"
        while time.time() < until and engine.poll() is None:
            now = time.time()
            if rss_start is None and now - started >= args.warmup_seconds:
                rss_start = _rss_mb(engine.pid)
                size_start = (_db_bytes(db), _last_bar(db))
            if now >= next_command:
                _commands(db, kind)
                kind = "resume" if kind == "pause" else "pause"
                next_command = now + args.command_every
            time.sleep(0.2)
        rss_end = _rss_mb(engine.pid) if engine.poll() is None else float("nan")
        size_end = (_db_bytes(db), _last_bar(db))
        for r in readers:
            r.wait()
        engine.terminate()
        engine.wait(30)
    _report(args, db, folder, log, started, rss_start, rss_end, size_start, size_end)


def _db_bytes(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def _last_bar(db: Path) -> int:
    row = _query(db, "SELECT max(ts) FROM bars")
    return int(row[0][0] or 0)


def _report(  # noqa: PLR0917  (one call site, every figure it prints)
    args: argparse.Namespace,
    db: Path,
    folder: Path,
    log: Path,
    started: float,
    rss_start: float | None,
    rss_end: float,
    size_start: tuple[float, int] | None,
    size_end: tuple[float, int],
) -> None:
    if rss_start is not None:
        growth = (rss_end / rss_start - 1) * 100
        print(f"RSS after warm-up {rss_start:.0f} MB, at the end {rss_end:.0f} MB ({growth:+.1f}%)")
    window = args.window_minutes * 60_000
    start_ms = int(started * 1000)
    rows = _query(
        db, "SELECT started_at, duration_ms FROM cycles WHERE started_at >= ?", (start_ms,)
    )
    print(f"cycles: {len(rows)}")
    buckets: dict[int, list[float]] = {}
    for at, ms in rows:
        buckets.setdefault(int((int(at) - start_ms) // window), []).append(float(ms))
    for i in sorted(buckets):
        b = buckets[i]
        print(
            f"  window {i + 1} ({args.window_minutes:g} min): p50 {statistics.median(b):.2f} ms"
            f"  p99 {_pct(b, 0.99):.2f} ms  max {max(b):.2f} ms  n={len(b)}"
        )
    if size_start is not None and size_end[1] > size_start[1]:
        days = (size_end[1] - size_start[1]) / 86_400_000
        grew = (size_end[0] - size_start[0]) / 1e6
        print(
            f"database: {size_end[0] / 1e6:.1f} MB; grew {grew:.1f} MB over {days:.2f}"
            f" simulated days ({grew / days:.1f} MB per simulated day)"
        )
    engine_locked = log.read_text(errors="replace").count(LOCKED)
    reader_stats = [json.loads(p.read_text()) for p in sorted(folder.glob("r*.json"))]
    reader_locked = sum(s["locked"] for s in reader_stats)
    reader_errors = sum(s["errors"] for s in reader_stats)
    page_ms = [ms for s in reader_stats for ms in s["ms"]]
    print(f"'{LOCKED}': engine {engine_locked}, readers {reader_locked}")
    print(
        f"readers: {sum(s['runs'] for s in reader_stats)} page runs, {reader_errors} errors,"
        f" page p50 {_pct(page_ms, 0.5):.0f} ms p99 {_pct(page_ms, 0.99):.0f} ms"
    )
    latencies = [
        float(done - req)
        for done, req in _query(
            db,
            "SELECT done_at, requested_at FROM commands WHERE done_at IS NOT NULL"
            " AND requested_by = 'cli:bench'",
        )
    ]
    if latencies:
        print(
            f"commands: {len(latencies)} applied, latency p50 {_pct(latencies, 0.5):.0f} ms"
            f"  p99 {_pct(latencies, 0.99):.0f} ms  max {max(latencies):.0f} ms"
        )


if __name__ == "__main__":
    main()
