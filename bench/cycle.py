"""Cycle time as `python -m engine run` runs it: the real runner and scheduler, the
simulated market, the paper broker, SQLite WAL, and the champion model in use (with
a shadow challenger unless --no-challenger).

For each size it trains a small champion and challenger once (cached under
var/bench/models), registers them on a fresh database, runs the engine on its real
scheduler for --seconds, and prints p50/p99 of the whole cycle and of each stage,
read back from the `cycles` rows the engine wrote. No pass/fail.

    .venv/bin/python bench/cycle.py [--seconds 60] [--sizes 20,100] [--cycle-seconds 0.05]
                                    [--profile]

--profile wraps each cycle on the trading thread in cProfile and prints where the
time goes (the profiler slows the cycle: read its shares, not its figures).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import load_settings  # noqa: E402
from engine.cycle import STAGES  # noqa: E402
from engine.market.feeds import generate_history  # noqa: E402
from engine.ml import registry  # noqa: E402
from engine.ml.train import TrainedModel, TrainParams, train_on_history  # noqa: E402
from engine.process.runner import Engine  # noqa: E402
from store.db import open_writer  # noqa: E402

SKIP_SECONDS = 5.0  # the first cycles warm caches and the scheduler; not a marathon's cycle


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _models(artifacts: Path) -> list[TrainedModel]:
    settings = load_settings(ml={"artifacts_dir": str(artifacts)}).ml
    history = generate_history(["M1", "M2", "M3"], 3_000, seed=3)
    return [
        train_on_history(
            history,
            settings,
            artifacts_dir=artifacts,
            now=1_767_225_600_000 + i,
            params=TrainParams(n_folds=2, seed=seed),  # default rounds: what a bootstrap trains
        )
        for i, seed in enumerate((1, 2))
    ]


def _profiled(engine: Engine, profile: cProfile.Profile) -> None:
    """Each cycle job, on the trading thread, runs under the profiler."""
    job = engine.cycle_job

    def cycle_job() -> object:
        profile.enable()
        try:
            return job()
        finally:
            profile.disable()

    engine.cycle_job = cycle_job  # type: ignore[method-assign]


def _timed(engine: Engine, cpu: list[tuple[int, float, float]]) -> None:
    """Each cycle job records (cycle id, wall ms, trading-thread CPU ms): where wall time
    runs far past CPU time the thread was waiting (the GIL, the disk, a busy core)."""
    job = engine.cycle_job

    def cycle_job() -> object:
        wall, started = time.perf_counter(), time.thread_time()
        result = job()
        cycle_id = getattr(result, "cycle_id", 0)
        done = time.perf_counter()
        cpu.append((cycle_id, (done - wall) * 1000, (time.thread_time() - started) * 1000))
        return result

    engine.cycle_job = cycle_job  # type: ignore[method-assign]


def _print_profile(profile: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)
    print(out.getvalue())


def run(
    symbols: int, seconds: float, cycle_seconds: float, challenger: bool, profile: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        artifacts = Path(folder) / "models"
        db_file = Path(folder) / "bench.db"
        models = _models(artifacts)
        db = open_writer(db_file)
        registry.adopt(db, models[0], now=1)
        if challenger:
            registry.adopt(db, models[1], now=2)  # a second version shadows the champion
        db.conn.commit()
        db.conn.close()
        cfg = load_settings(
            engine={"symbols": symbols, "cycle_seconds": cycle_seconds, "seed": 5},
            ml={"artifacts_dir": str(artifacts), "bootstrap": False},
            metrics={"port": 0},
        )
        engine = Engine(cfg, db_file)
        engine.open()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            _profiled(engine, profiler)
        cpu: list[tuple[int, float, float]] = []
        _timed(engine, cpu)
        thread = threading.Thread(target=engine.run, kwargs={"install_signals": False})
        started_ms = int(time.time() * 1000)
        thread.start()
        time.sleep(seconds)
        engine.request_stop()
        thread.join()
        conn = sqlite3.connect(db_file)
        skip = started_ms + int(SKIP_SECONDS * 1000)
        cols = ", ".join(f"{s}_ms" for s in STAGES)
        rows = conn.execute(
            f"SELECT duration_ms, {cols}, bars, intents, orders, fills, id FROM cycles"
            " WHERE started_at >= ? AND error IS NULL",
            (skip,),
        ).fetchall()
        ml = conn.execute("SELECT count(*) FROM regimes WHERE source = 'ml'").fetchone()[0]
        shadow = conn.execute(
            "SELECT count(*) FROM predictions WHERE role = 'challenger'"
        ).fetchone()[0]
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        conn.close()
    walls = [float(r[0]) for r in rows]
    print(
        f"{symbols:3d} symbols: {len(rows)} cycles, {orders} orders, {ml} model calls,"
        f" {shadow} shadow predictions; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"    cycle      p50 {statistics.median(walls):7.2f} ms  p99 {_pct(walls, 0.99):7.2f} ms"
        f"  max {max(walls):7.2f} ms"
    )
    for i, stage in enumerate(STAGES, start=1):
        values = [float(r[i] or 0.0) for r in rows]
        print(
            f"    {stage:10s} p50 {statistics.median(values):7.2f} ms"
            f"  p99 {_pct(values, 0.99):7.2f} ms"
        )
    _print_tail(rows, {c: (w, t) for c, w, t in cpu})
    if profiler is not None:
        _print_profile(profiler)


def _print_tail(rows: list[tuple[float, ...]], cpu: dict[int, tuple[float, float]]) -> None:
    """The slowest 2% of cycles: their mean stages, and thread CPU against wall."""
    n = max(1, len(rows) // 50)
    slow = sorted(rows, key=lambda r: float(r[0]))[-n:]
    stages = "  ".join(
        f"{stage} {statistics.fmean(float(r[i] or 0.0) for r in slow):.1f}"
        for i, stage in enumerate(STAGES, start=1)
    )
    print(f"    slowest {n} cycles, mean ms: {stages}")
    # What the slow cycles had to do, against every cycle: more bars (a catch-up after
    # a late run), more intents and orders, or the same work done slower.
    work = len(STAGES) + 1
    print(
        "    bars / intents / orders / fills a cycle, slowest against all: "
        + "  ".join(
            f"{name} {statistics.fmean(float(r[work + i]) for r in slow):.1f}"
            f" / {statistics.fmean(float(r[work + i]) for r in rows):.1f}"
            for i, name in enumerate(("bars", "intents", "orders", "fills"))
        )
    )
    timed = [cpu[int(r[-1])] for r in rows if int(r[-1]) in cpu]
    slow_timed = [cpu[int(r[-1])] for r in slow if int(r[-1]) in cpu]
    if timed and slow_timed:
        ratio = statistics.median(t / w for w, t in timed if w > 0)
        print(
            f"    trading-thread CPU / wall of the job: median {ratio:.0%};"
            f" slowest {n}: {statistics.fmean(t for _, t in slow_timed):.1f} ms CPU of"
            f" {statistics.fmean(w for w, _ in slow_timed):.1f} ms wall"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sizes", default="20,100")
    parser.add_argument("--cycle-seconds", type=float, default=0.05)
    parser.add_argument("--no-challenger", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the trading thread")
    args = parser.parse_args()
    print(
        f"bench/cycle.py: real runner and scheduler, {args.cycle_seconds} s cycles,"
        f" {args.seconds:g} s per size (first {SKIP_SECONDS:g} s skipped), champion"
        f"{'' if args.no_challenger else ' + shadow challenger'};"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args.seconds, args.cycle_seconds, not args.no_challenger, args.profile)


if __name__ == "__main__":
    main()
