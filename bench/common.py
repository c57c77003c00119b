"""Shared by the bench scripts: an engine on a throwaway database, and percentiles."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import Settings, load_settings
from engine.process.runner import Engine


class SimClock:
    def __init__(self, start: int = 1_767_225_600_000, step_ms: int = 1000) -> None:
        self.now, self.step_ms = start, step_ms

    def __call__(self) -> int:
        return self.now

    def tick(self) -> None:
        self.now += self.step_ms


def settings(symbols: int, **risk: Any) -> Settings:
    return load_settings(
        engine={"symbols": symbols, "cycle_seconds": 1.0, "seed": 5, "warmup_bars": 200},
        risk=risk or None,
    )


def open_engine(folder: Path, cfg: Settings, clock: SimClock) -> Engine:
    engine = Engine(cfg, folder / "bench.db", clock=clock)
    engine.open()
    return engine


def describe(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered):7.3f} ms  p99 {p99:7.3f} ms"
        f"  max {ordered[-1]:7.3f} ms  (n={len(ordered)})"
    )
