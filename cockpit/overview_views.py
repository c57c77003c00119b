"""The Overview page's read model: the account today, the equity curve, open
positions and the latest fills."""

from __future__ import annotations

import sqlite3
from bisect import bisect_left
from dataclasses import dataclass

import pandas as pd

from cockpit.reader import (
    MAX_POINTS,
    SPAN,
    LruCache,
    PathLike,
    frame,
    market_clock,
    one,
    read,
    rows,
)
from engine.risk.facts import day_start_equity
from store.db import db_path


@dataclass(frozen=True)
class AccountSummary:
    equity: float | None
    cash: float | None
    day_pnl: float | None
    total_pnl: float | None
    drawdown: float | None  # now, fraction below peak
    max_drawdown: float | None  # worst on record
    open_positions: int
    unrealized: float | None
    trades_today: int
    fills_today: int
    as_of: int | None


def _moved_after(conn: sqlite3.Connection | None, ts: int | None) -> float:
    """Net deposits less withdrawals after the mark at `ts` (0 without a mark)."""
    if conn is None or ts is None:
        return 0.0
    row = conn.execute(
        "SELECT TOTAL(amount) FROM cash_movements WHERE ts > ?", (int(ts),)
    ).fetchone()
    return float(row[0] or 0.0)


def account_summary(path: PathLike, now: int) -> AccountSummary:
    """The account today. "Today" is the risk gate's trading day on market time (the
    engine's market clock, else `now`), and the day's P&L is measured from the same
    day-start equity the daily loss limit uses, so the page and the gate agree.
    Deposits and withdrawals are left out of both P&L figures."""
    with read(path) as conn:
        market, trading_day = market_clock(conn)
        day = trading_day.start(market if market is not None else now)
        last = one(conn, "SELECT ts, equity, cash, drawdown FROM equity ORDER BY ts DESC LIMIT 1")
        first = one(conn, "SELECT equity, ts FROM equity ORDER BY ts LIMIT 1")
        base = day_start_equity(conn, day) if conn is not None else None
        # Deposits and withdrawals since the first mark moved equity without being P&L.
        moved_total = _moved_after(conn, first[1] if first else None)
        worst = one(conn, "SELECT MAX(drawdown) FROM equity")
        pos = one(
            conn,
            "SELECT COUNT(*), SUM(unrealized_pnl) FROM positions WHERE qty != 0",
        )
        trades = one(conn, "SELECT COUNT(*) FROM trades WHERE exit_ts >= ?", (day,))
        fills = one(conn, "SELECT COUNT(*) FROM fills WHERE ts >= ?", (day,))
    equity = float(last["equity"]) if last else None
    return AccountSummary(
        equity=equity,
        cash=float(last["cash"]) if last and last["cash"] is not None else None,
        day_pnl=equity - base if equity is not None and base is not None else None,
        total_pnl=(
            equity - float(first[0]) - moved_total if equity is not None and first else None
        ),
        drawdown=float(last["drawdown"] or 0.0) if last else None,
        max_drawdown=float(worst[0]) if worst and worst[0] is not None else None,
        open_positions=int(pos[0]) if pos else 0,
        unrealized=float(pos[1]) if pos and pos[1] is not None else None,
        trades_today=int(trades[0]) if trades else 0,
        fills_today=int(fills[0]) if fills else 0,
        as_of=int(last["ts"]) if last else None,
    )


@dataclass(frozen=True)
class SampledCurve:
    """The curve at the instants `start`, `start + step`, ... up to `upto`: each the
    last mark at or before its instant. Marks only arrive later than the last one,
    so these never change and the next call samples only the instants after `upto`."""

    start: int
    upto: int
    rows: tuple[tuple[int, int, float, float], ...]  # (instant, ts, equity, drawdown)


# Per database file, first mark and step; a head start checked against the table.
CURVES: LruCache[tuple[str, int, int], SampledCurve] = LruCache(8)
_SAMPLE = (
    "WITH RECURSIVE i(t) AS (SELECT ? UNION ALL SELECT t + ? FROM i WHERE t + ? <= ?)"
    " SELECT i.t, e.ts, e.equity, e.drawdown FROM i JOIN equity e"
    " ON e.ts = (SELECT MAX(ts) FROM equity WHERE ts <= i.t) ORDER BY i.t"
)


def curve_step(lo: int, hi: int, points: int) -> int:
    """At least (hi - lo) / (points - 1), rounded up to three significant bits, so
    the step stays the same while the span grows by an eighth: the instants on a
    fixed grid of that step keep their places as marks arrive."""
    raw = max(1, -(-(hi - lo) // max(1, points - 1)))
    shift = max(0, raw.bit_length() - 3)
    return -(-raw >> shift) << shift


def equity_curve(
    path: PathLike, since: int | None = None, points: int = MAX_POINTS
) -> pd.DataFrame:
    """Equity and drawdown at most `points` instants: the multiples of `curve_step`
    from the window's start, then the last mark. At each instant, the last mark at
    or before it (one index probe per instant, not a scan of the window); the
    instants sampled by an earlier call are taken from `CURVES`.

    A dip shorter than the spacing can fall between two instants; the worst drawdown
    on record is read exactly by `account_summary`.
    """
    columns = ["ts", "equity", "drawdown"]
    with read(path) as conn:
        span = one(conn, SPAN.format(col="ts", table="equity", where=""))
        if conn is None or span is None or span[0] is None:
            return pd.DataFrame(columns=columns)
        first_mark, hi = int(span[0]), int(span[1])
        lo = max(first_mark, since or first_mark)
        step = curve_step(lo, hi, points)
        start = -(-lo // step) * step  # the first instant of the grid in the window
        key = (str(db_path(path)), first_mark, step)
        sampled = _extend(conn, CURVES.get(key), start, hi, step)
        CURVES.put(key, sampled)
        last = one(conn, "SELECT ts, equity, drawdown FROM equity WHERE ts = ?", (hi,))
    taken = sampled.rows[bisect_left(sampled.rows, (start,)) :]
    out: list[tuple[int, float, float]] = []
    for _, ts, equity, drawdown in taken:
        if not out or out[-1][0] != ts:
            out.append((ts, equity, drawdown))
    if last is not None and (not out or out[-1][0] != hi):
        out.append((hi, last[1], last[2]))
    return pd.DataFrame(out, columns=columns)


def _extend(
    conn: sqlite3.Connection, cached: SampledCurve | None, start: int, hi: int, step: int
) -> SampledCurve:
    """The instants from `start` up to the last one before `hi`, sampled where the
    cache has none; a cache that starts later or whose last mark changed is dropped."""
    if cached is not None and cached.rows:
        if cached.start > start or cached.upto >= hi:
            cached = None
        else:
            _, ts, equity, _ = cached.rows[-1]
            now = one(conn, "SELECT equity FROM equity WHERE ts = ?", (ts,))
            if now is None or now[0] != equity:
                cached = None
    end = hi - 1 - (hi - 1 - start) % step if hi > start else start - step
    if cached is None:
        cached = SampledCurve(start, start - step, ())
    if end <= cached.upto:
        return cached
    begin = cached.upto + step
    fresh = [
        (int(t), int(ts), e, d) for t, ts, e, d in rows(conn, _SAMPLE, (begin, step, step, end))
    ]
    return SampledCurve(cached.start, end, cached.rows + tuple(fresh))


def open_positions(path: PathLike) -> pd.DataFrame:
    with read(path) as conn:
        return frame(
            conn,
            "SELECT symbol, qty, avg_price, last_price, unrealized_pnl, realized_pnl,"
            " stop, target, opened_at FROM positions WHERE qty != 0 ORDER BY symbol",
            columns=[
                "symbol",
                "qty",
                "avg_price",
                "last_price",
                "unrealized_pnl",
                "realized_pnl",
                "stop",
                "target",
                "opened_at",
            ],
        )


def latest_fills(path: PathLike, limit: int = 20) -> pd.DataFrame:
    with read(path) as conn:
        return frame(
            conn,
            "SELECT ts, symbol, side, qty, price, commission, ref_price, client_order_id"
            " FROM fills ORDER BY ts DESC, id DESC LIMIT ?",
            (limit,),
            ["ts", "symbol", "side", "qty", "price", "commission", "ref_price", "client_order_id"],
        )
