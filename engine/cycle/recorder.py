"""The cycle's stopwatch and its record: one `cycles` row per cycle, with the
time each stage took and what it did. The SQL lives in `store.cycles`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlite_utils import Database

from store import cycles, engine_row

STAGES = ("feed", "features", "regime", "signal", "risk", "execution", "portfolio", "state")


@dataclass
class CycleResult:
    cycle_id: int
    started_at: int
    duration_ms: float
    timings: dict[str, float] = field(default_factory=dict)
    bars: int = 0
    rejected_bars: int = 0
    intents: int = 0
    denied: int = 0
    orders: int = 0
    fills: int = 0
    error: str | None = None


class Stopwatch:
    """Charges the time since the last lap to the named stage; a stage lapped in
    several places (risk and execution, once per order) adds up."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self._last) * 1000
        self._last = now


class CycleRecorder:
    """Numbers the cycles and writes their rows (not committed: the cycle commits)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.last_id = 0

    def next_id(self) -> int:
        if not self.last_id:
            self.last_id = cycles.last_cycle_id(self.db.conn)
        return self.last_id + 1

    def record(self, r: CycleResult, market_now: int) -> int:
        cycle_id = self.next_id()
        t = r.timings
        cycles.insert_cycle(
            self.db.conn,
            (
                cycle_id,
                r.started_at,
                r.duration_ms,
                *(t.get(stage, 0.0) for stage in STAGES),
                r.bars,
                r.rejected_bars,
                r.intents,
                r.denied,
                r.orders,
                r.fills,
                r.error,
            ),
        )
        engine_row.cycle_done(self.db.conn, r.started_at, market_now)
        self.last_id = cycle_id
        return cycle_id
