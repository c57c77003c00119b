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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cockpit.reader import (
    DAY_MS,
    HOUR_MS,
    SPAN,
    LruCache,
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
    "WINDOWS",
    "CheckItem",
    "CycleWindow",
    "LruCache",
    "MarathonFacts",
    "ReadinessThresholds",
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


# Cycle counts per (database file, cycle interval).
TALLIES: LruCache[tuple[str, float], CycleTally] = LruCache(8)


def tally_cycles(
    conn: sqlite3.Connection,
    key: tuple[str, float],
    cycle_ms: float,
    cache: LruCache[tuple[str, float], CycleTally] = TALLIES,
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


@dataclass(frozen=True)
class WindowRows:
    """The cycles of a window as arrays, up to cycle `last_id`: the next call reads
    only the cycles stored since and drops those that left the window."""

    first_id: int  # the table's oldest cycle when read: a pruned table rereads
    last_id: int
    last_started: int
    since: int
    started: np.ndarray  # int64 epoch ms
    duration: np.ndarray  # float64 ms, NaN where missing
    failed: np.ndarray  # float64, 1.0 for a failed cycle


# The Marathon page's window per (database file, bucket): one per chart window, since
# each window has its own bucket. A week of one-second cycles is about 15 MB.
WINDOWS: LruCache[tuple[str, int], WindowRows] = LruCache(4)


def cycle_window(path: PathLike, since: int | None = None, bucket_ms: int = HOUR_MS) -> CycleWindow:
    """Per bucket: cycles, failures, p50, p99 and max duration; and p50 and p99 over
    the window. Percentiles are nearest rank, ranked in numpy: SQLite's window
    functions took four times as long on a week of cycles, and the page needs both.
    The window's rows are kept in `WINDOWS`, so a page run reads only new cycles."""
    with read(path) as conn:
        window = (
            _window_rows(conn, (str(db_path(path).resolve()), bucket_ms), since or 0)
            if conn is not None
            else None
        )
    if window is None or not len(window.started):
        return CycleWindow(pd.DataFrame(columns=TIMES_COLUMNS), None, None)
    known = np.sort(window.duration[~np.isnan(window.duration)])
    p50, p99 = (_rank(known, q) for q in (0.50, 0.99))
    buckets = window.started // bucket_ms * bucket_ms
    return CycleWindow(_per_bucket(buckets, window.duration, window.failed), p50, p99)


def _window_rows(conn: sqlite3.Connection, key: tuple[str, int], since: int) -> WindowRows | None:
    """The cycles at or after `since`, extended from the cached rows when they still
    describe this table (same oldest cycle, the last one read still there)."""
    ends = one(conn, SPAN.format(col="id", table="cycles", where=""))
    if ends is None or ends[0] is None:
        return None
    cached = WINDOWS.get(key)
    if cached is not None:
        anchor = one(conn, "SELECT started_at FROM cycles WHERE id = ?", (cached.last_id,))
        fits = anchor is not None and anchor[0] == cached.last_started and cached.since <= since
        if cached.first_id != ends[0] or not fits:
            cached = None
    after = cached.last_id if cached is not None else 0
    found = rows(
        conn,
        "SELECT id, started_at, duration_ms, error IS NOT NULL FROM cycles"
        " WHERE id > ? AND started_at >= ? ORDER BY id",
        (after, since),
    )
    # epoch ms fit a float exactly (below 2**53); a missing duration reads as NaN
    table = np.array([tuple(r) for r in found], dtype=np.float64).reshape(-1, 4)
    started = table[:, 1].astype(np.int64)
    duration, failed = table[:, 2], table[:, 3]
    if cached is not None:
        keep = cached.started >= since
        started = np.concatenate([cached.started[keep], started])
        duration = np.concatenate([cached.duration[keep], duration])
        failed = np.concatenate([cached.failed[keep], failed])
    last_id = int(table[-1, 0]) if len(table) else after
    last_started = int(started[-1]) if len(started) else 0
    if not len(table) and cached is not None:
        last_started = cached.last_started
    window = WindowRows(int(ends[0]), last_id, last_started, since, started, duration, failed)
    if last_id:
        WINDOWS.put(key, window)
    return window


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
