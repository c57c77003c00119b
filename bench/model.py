"""Model benchmarks: training time at the default bootstrap size, single-row inference
through ModelService.predict (the cycle's path), live feature update, and batch
inference throughput. Prints figures; never passes or fails on time.

It also times a cycle's batch (20 rows, both heads) called back to back and called
once every 50 ms, as a 0.05 s cycle calls it, in thread CPU time: between two calls
the machine runs other work, and the trees come back from memory rather than the
caches. What the cycle pays per call is the second figure.

    .venv/bin/python bench/model.py [--bars 5000] [--symbols 5] [--rows 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import MlSettings
from engine.domain import Bar
from engine.market.feeds import generate_history
from engine.market.indicators import IncrementalIndicators
from engine.ml import registry
from engine.ml.artifact import load_artifact
from engine.ml.features import LiveFeatures
from engine.ml.service import ModelService, _heads
from engine.ml.train import bootstrap_model, build_dataset
from store.db import open_writer


def _percentiles(samples_ns: list[int]) -> str:
    us = np.asarray(samples_ns) / 1_000
    return f"p50 {np.percentile(us, 50):7.1f} µs   p99 {np.percentile(us, 99):7.1f} µs"


def _hot_and_cold(direction: Any, regime: Any, rows: np.ndarray) -> None:
    """A cycle's batch back to back, then once every 50 ms; thread CPU time."""
    for label, pause in (("back to back", 0.0), ("every 50 ms (as the cycle)", 0.05)):
        cpu = []
        for _ in range(100):
            time.sleep(pause)
            t = time.thread_time_ns()
            _heads(direction, regime, rows)
            cpu.append(time.thread_time_ns() - t)
        print(f"{len(rows)} rows, both heads, {label:26s} CPU {_percentiles(cpu)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=MlSettings().bootstrap_bars)
    parser.add_argument("--symbols", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000, help="single-row predictions")
    args = parser.parse_args()
    settings = MlSettings(bootstrap_bars=args.bars)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        champion = bootstrap_model(settings, artifacts_dir=folder / "m", symbols=args.symbols)
        train_s = time.perf_counter() - t0
        challenger = bootstrap_model(
            settings, artifacts_dir=folder / "m", symbols=args.symbols, seed=12
        )
        rows = champion.data_range["rows"]
        print(
            f"training ({args.symbols} symbols x {args.bars} bars = {rows} rows, 2 heads,"
            f" walk-forward CV + final fit, 1 thread): {train_s:.2f} s"
        )
        for head, report in champion.metrics.items():
            extra = f", rules {report['rules']['accuracy']:.3f}" if "rules" in report else ""
            print(
                f"  {head}: walk-forward accuracy {report['overall']['accuracy']:.3f}"
                f" (majority {report['majority']['accuracy']:.3f}{extra})"
            )

        history = generate_history(["BENCH"], 3_000, seed=99)["BENCH"]
        x = build_dataset({"BENCH": history}, settings.horizon_bars).x
        db = open_writer(folder / "bench.db")
        registry.adopt(db, champion)
        service = ModelService(db, settings, folder / "m", lambda *a: None)
        samples = []
        for i in range(args.rows):
            row = x[i % len(x)]
            t = time.perf_counter_ns()
            service.predict("BENCH", row)
            samples.append(time.perf_counter_ns() - t)
        print(f"predict, champion only (both heads):  {_percentiles(samples)}")

        registry.adopt(db, challenger)
        service.sync()
        samples = []
        for i in range(args.rows):
            row = x[i % len(x)]
            t = time.perf_counter_ns()
            service.predict("BENCH", row)
            samples.append(time.perf_counter_ns() - t)
        print(f"predict, champion + shadow challenger: {_percentiles(samples)}")

        live, state, samples = LiveFeatures(), IncrementalIndicators(), []
        for r in history.itertuples():
            bar = Bar("BENCH", int(r.ts), r.open, r.high, r.low, r.close, r.volume)
            t = time.perf_counter_ns()
            live.update(bar, state.update(bar.high, bar.low, bar.close))
            samples.append(time.perf_counter_ns() - t)
        print(f"indicators + live features per bar:    {_percentiles(samples)}")

        loaded = load_artifact(champion.path, champion.sha256)
        _hot_and_cold(loaded.direction, loaded.regime, np.ascontiguousarray(x[:20]))
        booster = loaded.direction
        batch = np.tile(x, (max(1, 100_000 // len(x)), 1))
        for threads in (1, 2):
            t = time.perf_counter()
            booster.predict(batch, num_threads=threads)
            elapsed = time.perf_counter() - t
            print(
                f"batch inference, direction head, {threads} thread(s):"
                f" {len(batch) / elapsed:,.0f} rows/s ({len(batch)} rows)"
            )
        db.conn.close()


if __name__ == "__main__":
    main()
