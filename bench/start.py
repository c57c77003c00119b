"""Engine start time: from `python -m engine run` spawned to its first `cycles` row,
on a fresh database and on one whose registry holds a champion model (what a
restart of a marathon sees). Prints median and max over --runs; no pass/fail.

With --history DB (a database with a long history, such as the year of a million
fills bench/ui.py builds in var/bench/ui-v5.db), it also starts twice on a copy of
it: the first start replays every fill (an older database has no portfolio
checkpoint yet) and keeps one; the second, a restart, replays only what came after.

    .venv/bin/python bench/start.py [--runs 5] [--history var/bench/ui-v5.db]
"""

from __future__ import annotations

import argparse
import compileall
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


def _first_cycle(db: Path, after: int) -> bool:
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            found = conn.execute("SELECT 1 FROM cycles WHERE id > ? LIMIT 1", (after,))
            return found.fetchone() is not None
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the schema is not there yet
        return False


def _last_cycle(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM cycles").fetchone()[0])
    finally:
        conn.close()


def one_start(db: Path, env: dict[str, str], after: int = 0) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "--db", str(db), "--for", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = started + 60
        while not _first_cycle(db, after):
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the engine exited or stalled (code {process.poll()})")
            time.sleep(0.005)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)


def _with_champion(db: Path, artifacts: Path) -> None:
    from engine.config import load_settings
    from engine.market.feeds import generate_history
    from engine.ml import registry
    from engine.ml.train import TrainParams, train_on_history
    from store.db import open_writer

    trained = train_on_history(
        generate_history(["A", "B"], 1_500, seed=2),
        load_settings(ml={"artifacts_dir": str(artifacts)}).ml,
        artifacts_dir=artifacts,
        now=1,
        params=TrainParams(n_folds=2),
    )
    writer = open_writer(db)
    registry.adopt(writer, trained, now=1)
    writer.conn.commit()
    writer.conn.close()


def _copy_database(source: Path, target: Path) -> None:
    """The database and its secrets key, which travels with it (the audit chain's key
    is in it)."""
    target.write_bytes(source.read_bytes())
    key = source.with_suffix(".key")
    if key.exists():
        target.with_suffix(".key").write_bytes(key.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--history", type=Path, help="a database with a long history")
    args = parser.parse_args()
    if args.history is not None and not args.history.exists():
        sys.exit(f"{args.history}: no such database (bench/ui.py builds var/bench/ui-v5.db)")
    folder = Path(tempfile.mkdtemp(prefix="cockpit-start-"))
    # A user's second start reads the bytecode the first one wrote. Where
    # PYTHONDONTWRITEBYTECODE is set nothing is written and every start would
    # compile the whole project again (about 0.6 s here), so compile it once first.
    for package in ("engine", "store"):
        compileall.compile_dir(ROOT / package, quiet=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_")}
    env.update(COCKPIT_CONFIG=str(folder / "none.toml"), COCKPIT_ML__BOOTSTRAP="false")
    print(
        f"bench/start.py: process spawn to first cycles row, {args.runs} runs each,"
        f" bytecode compiled; load average {os.getloadavg()[0]:.1f}"
    )
    fresh = [one_start(folder / f"fresh-{i}.db", env) for i in range(args.runs)]
    print(
        f"  fresh database:       median {statistics.median(fresh):.2f} s  max {max(fresh):.2f} s"
    )
    artifacts = folder / "models"
    env["COCKPIT_ML__ARTIFACTS_DIR"] = str(artifacts)
    template = folder / "template.db"
    _with_champion(template, artifacts)
    warm = []
    for i in range(args.runs):
        db = folder / f"champion-{i}.db"
        _copy_database(template, db)
        warm.append(one_start(db, env))
    print(f"  with a champion:      median {statistics.median(warm):.2f} s  max {max(warm):.2f} s")
    if args.history is not None:
        _on_history(args.history, folder, env)


def _on_history(source: Path, folder: Path, env: dict[str, str]) -> None:
    """A first start and a restart on a copy of a database with a long history."""
    db = folder / "history.db"
    _copy_database(source, db)
    env = {**env, "COCKPIT_ENGINE__SYMBOLS": "20"}
    conn = sqlite3.connect(db)
    fills = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    conn.close()
    first = one_start(db, env, _last_cycle(db))
    again = one_start(db, env, _last_cycle(db))
    print(f"  {source.name} ({fills:,} fills): first start {first:.2f} s, restart {again:.2f} s")


if __name__ == "__main__":
    main()
