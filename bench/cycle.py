"""Cycle time on the embedded default (simulated market, paper broker, SQLite WAL).

Runs the real cycle with a simulated clock for 1, 20 and 50 symbols and prints
p50/p99 of the whole cycle (commit included) and of each stage. No pass/fail.

    .venv/bin/python bench/cycle.py [CYCLES]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import SimClock, describe, open_engine, settings

from engine.cycle import STAGES


def run(symbols: int, cycles: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        clock = SimClock()
        engine = open_engine(Path(folder), settings(symbols), clock)
        assert engine.trader is not None
        walls: list[float] = []
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        orders = 0
        for _ in range(cycles):
            clock.tick()
            started = time.perf_counter()
            result = engine.trader.cycle()
            walls.append((time.perf_counter() - started) * 1000)
            orders += result.orders
            for stage in STAGES:
                stages[stage].append(result.timings.get(stage, 0.0))
        engine.close()
    print(f"{symbols:3d} symbols  cycle {describe(walls)}  orders {orders}")
    for stage in STAGES:
        print(f"      {stage:10s} {describe(stages[stage])}")


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"bench/cycle.py: {cycles} cycles per size, simulated clock, real SQLite file")
    for n in (1, 20, 50):
        run(n, cycles)


if __name__ == "__main__":
    main()
