"""The Marathon page's read model: the facts a long paper-trading run is judged on
(cycles run, missed and failed, halts, drawdown, market sessions), cycle time and
errors over time, and P&L per trading day. The go-live policy that judges these
facts is the engine's (`engine.risk.golive`); this module gathers them.

Counting every cycle of a long marathon would scan the cycles table on every page
run, so the counts are kept in `TALLIES`, a small process-wide cache that each
call extends with the cycles stored since the last one.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cockpit.reader import (
    DAY_MS,
    HOUR_MS,
    SPAN,
    PathLike,
    equity_range,
    frame,
    market_clock,
    one,
    read,
    rows,
)
from cockpit.status_views import engine_status
from engine.risk.golive import (
    MARKET,
    WALL,
    CheckItem,
    MarathonFacts,
    ReadinessThresholds,
    readiness,
)
from store.db import db_path

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MARKET",
    "TALLIES",
    "WALL",
    "CheckItem",
    "CycleWindow",
    "MarathonFacts",
    "ReadinessThresholds",
    "TallyCache",
    "cycle_percentiles",
    "cycle_times",
    "cycle_window",
    "errors_per_hour",
    "marathon_facts",
    "pnl_per_day",
    "readiness",
    "sharpe_like",
]


@dataclass(frozen=True)
class CycleTally:
    """Cycle counts up to `last_id`, so the next call reads only newer cycles."""

    first_id: int
    last_id: int
    last_started: int
    cycles: int
    failed: int
    gaps: int
    missed: int


class TallyCache:
    """The cycle tallies of the last `size` (database file, cycle interval) pairs.

    Process-wide (every Streamlit session of one server shares it) and thread-safe;
    the least recently used entry goes when a new one would exceed `size`. An entry
    is only a head start: `tally_cycles` checks it against the table before use.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, float], CycleTally] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, float]) -> CycleTally | None:
        with self._lock:
            tally = self._entries.get(key)
            if tally is not None:
                self._entries.move_to_end(key)
            return tally

    def put(self, key: tuple[str, float], tally: CycleTally) -> None:
        with self._lock:
            self._entries[key] = tally
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


TALLIES = TallyCache()


def tally_cycles(
    conn: sqlite3.Connection, key: tuple[str, float], cycle_ms: float, cache: TallyCache = TALLIES
) -> CycleTally | None:
    """Counts over the whole cycles table, extended incrementally from the cached tally.

    A gap beyond 1.5 cycles means cycles were missed: as many as fit in the gap. The
    tally is rebuilt when the oldest cycles were pruned or the file was replaced.
    """
    ends = one(conn, SPAN.format(col="id", table="cycles", where=""))
    if ends is None or ends[0] is None:
        return None
    cached = cache.get(key)
    if cached is not None:
        anchor = one(conn, "SELECT started_at FROM cycles WHERE id = ?", (cached.last_id,))
        if cached.first_id != ends[0] or anchor is None or anchor[0] != cached.last_started:
            cached = None
    if cached is not None and cached.last_id == ends[1]:
        return cached
    start_id = cached.last_id if cached else int(ends[0])
    row = one(
        conn,
        "SELECT COUNT(*), SUM(error IS NOT NULL), SUM(gap > 1.5 * ?),"
        " SUM(CASE WHEN gap > 1.5 * ? THEN MAX(1, CAST(ROUND(gap / ?) AS INTEGER) - 1) END),"
        " MAX(id) FROM ("
        "  SELECT id, error, started_at - LAG(started_at) OVER (ORDER BY id) AS gap"
        "  FROM cycles WHERE id >= ?) WHERE id > ?",
        # the anchor row (the last one already counted) only lends its time to LAG
        (cycle_ms, cycle_ms, cycle_ms, start_id, start_id if cached else start_id - 1),
    )
    if row is None or row[4] is None:
        return cached
    last = one(conn, "SELECT started_at FROM cycles WHERE id = ?", (row[4],))
    base = cached or CycleTally(int(ends[0]), 0, 0, 0, 0, 0, 0)
    tally = CycleTally(
        first_id=base.first_id,
        last_id=int(row[4]),
        last_started=int(last[0]) if last else 0,
        cycles=base.cycles + int(row[0]),
        failed=base.failed + int(row[1] or 0),
        gaps=base.gaps + int(row[2] or 0),
        missed=base.missed + int(row[3] or 0),
    )
    cache.put(key, tally)
    return tally


def marathon_facts(path: PathLike, now: int, lookback_days: float) -> MarathonFacts:
    status = engine_status(path, now)
    cycle_ms = (status.cycle_seconds or 1.0) * 1000
    halt_since = now - int(lookback_days * DAY_MS)
    with read(path) as conn:
        span = one(conn, SPAN.format(col="started_at", table="cycles", where=""))
        tally = (
            tally_cycles(conn, (str(db_path(path).resolve()), cycle_ms), cycle_ms)
            if conn is not None
            else None
        )
        halts = one(
            conn,
            "SELECT COUNT(*), MAX(ts) FROM audit WHERE action = 'state_change' AND ts >= ?"
            " AND json_extract(payload, '$.to') = 'HALTED'",
            (halt_since,),
        )
        worst = one(conn, "SELECT MAX(drawdown) FROM equity")
        _, trading_day = market_clock(conn)
        marks = one(conn, SPAN.format(col="ts", table="equity", where=""))
    sessions = (
        trading_day.count(int(marks[0]), int(marks[1]))
        if marks is not None and marks[0] is not None
        else 0
    )
    has_cycles = span is not None and span[0] is not None and tally is not None
    return MarathonFacts(
        first_cycle_at=int(span[0]) if has_cycles and span else None,
        last_cycle_at=int(span[1]) if has_cycles and span else None,
        cycles=tally.cycles if tally else 0,
        failed=tally.failed if tally else 0,
        missed=tally.missed if tally else 0,
        gaps=tally.gaps if tally else 0,
        cycle_seconds=status.cycle_seconds,
        engine_started_at=status.started_at,
        engine_alive=status.present and not status.stale,
        halts=int(halts[0]) if halts else 0,
        last_halt_at=int(halts[1]) if halts and halts[1] is not None else None,
        max_drawdown=float(worst[0]) if worst and worst[0] is not None else None,
        unacked_critical=status.unacked.get("CRITICAL", 0),
        market_sessions=sessions,
    )


@dataclass(frozen=True)
class CycleWindow:
    """Cycle time over a window: per time bucket (`times`) and over the whole window."""

    times: pd.DataFrame  # bucket, cycles, errors, p50_ms, p99_ms, max_ms
    p50_ms: float | None
    p99_ms: float | None


TIMES_COLUMNS = ["bucket", "cycles", "errors", "p50_ms", "p99_ms", "max_ms"]


def cycle_window(path: PathLike, since: int | None = None, bucket_ms: int = HOUR_MS) -> CycleWindow:
    """Per bucket: cycles, failures, p50, p99 and max duration; and p50 and p99 over
    the window. Percentiles are nearest rank. The window's rows are read once and
    ranked in numpy: SQLite's window functions took four times as long on a week of
    cycles, and the page needs both figures."""
    with read(path) as conn:
        found = rows(
            conn,
            "SELECT started_at, duration_ms, error IS NOT NULL FROM cycles WHERE started_at >= ?",
            (since or 0,),
        )
    if not found:
        return CycleWindow(pd.DataFrame(columns=TIMES_COLUMNS), None, None)
    # epoch ms fit a float exactly (below 2**53); a missing duration reads as NaN
    table = np.array([tuple(r) for r in found], dtype=np.float64)
    started, duration, failed = table[:, 0].astype(np.int64), table[:, 1], table[:, 2]
    known = np.sort(duration[~np.isnan(duration)])
    p50, p99 = (_rank(known, q) for q in (0.50, 0.99))
    return CycleWindow(_per_bucket(started // bucket_ms * bucket_ms, duration, failed), p50, p99)


def _rank(ordered: np.ndarray, q: float) -> float | None:
    """The nearest-rank percentile of an ascending array: the smallest value whose
    rank (1-based) reaches q x n."""
    if not len(ordered):
        return None
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


def _per_bucket(bucket: np.ndarray, duration: np.ndarray, failed: np.ndarray) -> pd.DataFrame:
    """Nearest-rank p50 and p99 per bucket, counting a cycle without a duration as
    ranked first (as SQL's ORDER BY does) but never as the percentile itself."""
    missing = np.isnan(duration)
    order = np.lexsort((np.where(missing, -np.inf, duration), bucket))
    bucket, duration, missing = bucket[order], duration[order], missing[order]
    failed = failed[order]
    keys, starts, counts = np.unique(bucket, return_index=True, return_counts=True)
    blank = np.add.reduceat(missing.astype(np.int64), starts)
    last = starts + counts - 1

    def rank(q: float) -> np.ndarray:
        k = np.maximum(np.ceil(q * counts).astype(np.int64), blank + 1)
        return np.where(blank < counts, duration[np.minimum(starts + k - 1, last)], np.nan)

    return pd.DataFrame(
        {
            "bucket": keys,
            "cycles": counts,
            "errors": np.add.reduceat(failed, starts).astype(np.int64),
            "p50_ms": rank(0.50),
            "p99_ms": rank(0.99),
            "max_ms": np.fmax.reduceat(duration, starts),
        }
    )


def cycle_times(path: PathLike, since: int | None = None, bucket_ms: int = HOUR_MS) -> pd.DataFrame:
    """Per time bucket: cycles, failures, and the p50 and p99 cycle duration (nearest rank)."""
    return cycle_window(path, since, bucket_ms).times


def cycle_percentiles(
    path: PathLike, since: int | None = None
) -> tuple[float | None, float | None]:
    """p50 and p99 cycle duration over the window (nearest rank)."""
    window = cycle_window(path, since)
    return window.p50_ms, window.p99_ms


def pnl_per_day(path: PathLike) -> pd.DataFrame:
    """P&L per trading day (the gate's days, on market time): the last mark of the
    day against the last mark before it. A day without a single mark (no session,
    the engine down) is not a day of returns, so it is left out rather than counted
    as a zero-return day that would flatten volatility and the ratios."""
    columns = ["day", "start_equity", "end_equity", "pnl", "ret"]
    span = equity_range(path)
    if span is None:
        return pd.DataFrame(columns=columns)
    with read(path) as conn:
        _, trading_day = market_clock(conn)
        starts = trading_day.starts(span[0], span[1])
        values = ",".join(f"({int(s)}, {int(e)})" for s, e in itertools.pairwise(starts))
        df = frame(
            conn,
            f"WITH d(start, stop) AS (VALUES {values}) SELECT start,"
            " (SELECT equity FROM equity WHERE ts < d.stop ORDER BY ts DESC LIMIT 1) AS mark,"
            " EXISTS (SELECT 1 FROM equity WHERE ts >= d.start AND ts < d.stop) AS marked"
            " FROM d ORDER BY start",
            (),
            ["start", "mark", "marked"],
        )
        first = one(conn, "SELECT equity FROM equity ORDER BY ts LIMIT 1")
    # Each day closes at its last mark and opens at the previous day's close; the
    # first day opens at the first mark on record.
    closing = df["mark"].tolist()
    opening = [float(first[0]) if first else None, *closing[:-1]]
    out = pd.DataFrame(
        {
            "day": df["start"].to_numpy(),
            "start_equity": opening,
            "end_equity": closing,
            "marked": df["marked"].astype(bool).to_numpy(),
        }
    )
    out = out[out["marked"]].dropna(subset=["end_equity"])
    with read(path) as conn:
        moved = conn.execute("SELECT ts, amount FROM cash_movements").fetchall() if conn else []
    next_start = dict(itertools.pairwise(starts))
    moved_in_day = [sum(a for ts, a in moved if day <= ts < next_start[day]) for day in out["day"]]
    out["pnl"] = out["end_equity"] - out["start_equity"] - moved_in_day
    out["ret"] = out["pnl"] / out["start_equity"]
    return out.reset_index(drop=True)[columns]


def errors_per_hour(path: PathLike, since: int | None = None) -> pd.DataFrame:
    with read(path) as conn:
        return frame(
            conn,
            "SELECT (started_at / ?) * ? AS hour, COUNT(*) AS errors FROM cycles"
            " WHERE error IS NOT NULL AND started_at >= ? GROUP BY hour ORDER BY hour",
            (HOUR_MS, HOUR_MS, since or 0),
            ["hour", "errors"],
        )


def sharpe_like(daily_returns: list[float]) -> float | None:
    """The annualised Sharpe ratio of trading-day returns: the backtester's function
    (empyrical's definition, 252 periods a year), so the two always agree."""
    from engine.backtest.metrics import sharpe

    return sharpe(pd.Series(daily_returns, dtype="float64"))
