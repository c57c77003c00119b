"""Read models for the cockpit: typed rows and DataFrames built from the state store.

Every function takes a database path and `now` (epoch ms) where time matters, opens
one short-lived read-only connection, and lets SQLite do the aggregation, so a
page draws what it gets. Charts get at most `MAX_POINTS` points: series are
sampled in SQL at evenly spaced instants instead of being thinned in Python.

A missing database file is not an error here: the engine has not run yet, and
every read model has an empty value that pages show as an empty state.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.market.calendar import TradingDay
from engine.risk.facts import day_start_equity
from store.db import db_path, maybe_reader
from store.status import beat_seconds, engine_alive

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str] | None
MAX_POINTS = 1_500
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
SEVERITIES = ("CRITICAL", "HIGH", "WARNING", "INFO")


# A read-only connection, or None when the engine has not created the file yet.
_read = maybe_reader


def _frame(
    conn: sqlite3.Connection | None, sql: str, params: Any = (), columns: Any = ()
) -> pd.DataFrame:
    if conn is None:
        return pd.DataFrame(columns=list(columns))
    try:
        cur = conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        # A file the engine is still creating has no tables yet: same as empty.
        if "no such table" not in str(exc):
            raise
        return pd.DataFrame(columns=list(columns))
    names = [d[0] for d in cur.description]
    return pd.DataFrame(cur.fetchall(), columns=names)


def _one(conn: sqlite3.Connection | None, sql: str, params: Any = ()) -> sqlite3.Row | None:
    if conn is None:
        return None
    try:
        row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None
    return row


# SQLite answers MIN or MAX alone from an index in one probe, but MIN and MAX
# together in one SELECT scan the table: ask for each in its own subquery.
_SPAN = "SELECT (SELECT MIN({col}) FROM {table} {where}), (SELECT MAX({col}) FROM {table} {where})"


def _distinct(conn: sqlite3.Connection | None, table: str, column: str) -> list[str]:
    """Distinct non-null values of an indexed column, one index probe per value
    (a loose index scan) instead of a scan of every row."""
    df = _frame(
        conn,
        f"WITH RECURSIVE v(x) AS (SELECT MIN({column}) FROM {table} UNION ALL"
        f" SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > v.x) FROM v"
        " WHERE v.x IS NOT NULL) SELECT x FROM v WHERE x IS NOT NULL",
        columns=["x"],
    )
    return [str(x) for x in df["x"]]


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class EngineStatus:
    """The sidebar's facts: the engine row plus unacknowledged alerts by severity."""

    present: bool  # an engine has written its row at least once
    trading_state: str = "UNKNOWN"
    state_reason: str = ""
    state_changed_at: int | None = None
    mode: str = "PAPER"
    broker: str = ""
    broker_connected: bool = False
    market_open: bool = False
    heartbeat_at: int | None = None
    heartbeat_age_s: float | None = None
    stale: bool = True
    started_at: int | None = None
    stopped_at: int | None = None
    pid: int | None = None
    cycle_seconds: float | None = None
    last_cycle_at: int | None = None
    market_time: int | None = None  # the market clock: the time of the bars processed
    speed: float | None = None  # market seconds per wall second; None = unpaced
    simulated: bool = False
    bar_interval: str = ""
    open_positions: int = 0
    open_orders: int = 0
    unacked: dict[str, int] = field(default_factory=dict)

    @property
    def unacked_total(self) -> int:
        return sum(self.unacked.values())

    @property
    def is_flat(self) -> bool:
        return self.open_positions == 0 and self.open_orders == 0


def engine_status(path: PathLike, now: int) -> EngineStatus:
    with _read(path) as conn:
        row = _one(conn, "SELECT * FROM engine WHERE id = 1")
        if row is None:
            return EngineStatus(present=False, unacked=_unacked(conn))
        counts = _one(
            conn,
            "SELECT (SELECT COUNT(*) FROM positions WHERE qty != 0),"
            " (SELECT COUNT(*) FROM orders WHERE status IN"
            "  ('NEW','SUBMITTED','ACCEPTED','PARTIALLY_FILLED'))",
        )
        unacked = _unacked(conn)
    beat = row["heartbeat_at"]
    age = (now - beat) / 1000 if beat else None
    stale = not engine_alive(beat, row["stopped_at"], beat_seconds(row), now)
    return EngineStatus(
        present=True,
        trading_state=row["trading_state"] or "UNKNOWN",
        state_reason=row["state_reason"] or "",
        state_changed_at=row["state_changed_at"],
        mode=row["mode"] or "PAPER",
        broker=row["broker"] or "",
        broker_connected=bool(row["broker_connected"]),
        market_open=bool(row["market_open"]),
        heartbeat_at=beat,
        heartbeat_age_s=age,
        stale=stale,
        started_at=row["started_at"],
        stopped_at=row["stopped_at"],
        pid=row["pid"],
        cycle_seconds=row["cycle_seconds"],
        last_cycle_at=row["last_cycle_at"],
        market_time=_col(row, "market_time"),
        speed=_col(row, "speed"),
        simulated=bool(_col(row, "simulated")),
        bar_interval=_col(row, "bar_interval") or "",
        open_positions=int(counts[0]) if counts else 0,
        open_orders=int(counts[1]) if counts else 0,
        unacked=unacked,
    )


def _col(row: sqlite3.Row, name: str) -> Any:
    """A column the engine adds when it starts (None on a database it has not opened yet)."""
    return row[name] if name in row.keys() else None  # noqa: SIM118 (a Row iterates values)


def market_clock(conn: sqlite3.Connection | None) -> tuple[int | None, TradingDay]:
    """The engine's market time and its trading-day definition, the one the risk gate
    uses; without an engine row, the last equity mark and the 24/7 default."""
    row = _one(conn, "SELECT * FROM engine WHERE id = 1")
    market = _col(row, "market_time") if row is not None else None
    day = TradingDay.from_spec(_col(row, "trading_day") if row is not None else None)
    if market is None:
        last = _one(conn, "SELECT max(ts) FROM equity")
        market = last[0] if last is not None else None
    return (int(market) if market is not None else None), day


def _unacked(conn: sqlite3.Connection | None) -> dict[str, int]:
    df = _frame(
        conn,
        "SELECT severity, COUNT(*) AS n FROM alerts WHERE acked_at IS NULL GROUP BY severity",
    )
    return {str(s): int(n) for s, n in zip(df.get("severity", []), df.get("n", []), strict=True)}


def symbols_with_positions(path: PathLike) -> list[str]:
    with _read(path) as conn:
        df = _frame(conn, "SELECT symbol FROM positions WHERE qty != 0 ORDER BY symbol")
    return [str(s) for s in df.get("symbol", [])]


def json_or_empty(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- overview


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
    with _read(path) as conn:
        market, trading_day = market_clock(conn)
        day = trading_day.start(market if market is not None else now)
        last = _one(conn, "SELECT ts, equity, cash, drawdown FROM equity ORDER BY ts DESC LIMIT 1")
        first = _one(conn, "SELECT equity, ts FROM equity ORDER BY ts LIMIT 1")
        base = day_start_equity(conn, day) if conn is not None else None
        # Deposits and withdrawals since the first mark moved equity without being P&L.
        moved_total = _moved_after(conn, first[1] if first else None)
        worst = _one(conn, "SELECT MAX(drawdown) FROM equity")
        pos = _one(
            conn,
            "SELECT COUNT(*), SUM(unrealized_pnl) FROM positions WHERE qty != 0",
        )
        trades = _one(conn, "SELECT COUNT(*) FROM trades WHERE exit_ts >= ?", (day,))
        fills = _one(conn, "SELECT COUNT(*) FROM fills WHERE ts >= ?", (day,))
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


def equity_range(path: PathLike) -> tuple[int, int] | None:
    with _read(path) as conn:
        row = _one(conn, _SPAN.format(col="ts", table="equity", where=""))
    return (int(row[0]), int(row[1])) if row and row[0] is not None else None


def equity_curve(
    path: PathLike, since: int | None = None, points: int = MAX_POINTS
) -> pd.DataFrame:
    """Equity and drawdown at most `points` evenly spaced instants: at each, the last
    mark at or before it (one index probe per instant, not a scan of the window).

    A dip shorter than the spacing can fall between two instants; the worst drawdown
    on record is read exactly by `account_summary`.
    """
    columns = ["ts", "equity", "drawdown"]
    span = equity_range(path)
    if span is None:
        return pd.DataFrame(columns=columns)
    lo, hi = max(span[0], since or span[0]), span[1]
    step = max(1, (hi - lo) // max(1, points - 1))
    first = hi - step * ((hi - lo) // step)
    with _read(path) as conn:
        return _frame(
            conn,
            "WITH RECURSIVE i(t) AS (SELECT ? UNION ALL SELECT t + ? FROM i WHERE t + ? <= ?)"
            " SELECT DISTINCT e.ts, e.equity, e.drawdown FROM i JOIN equity e"
            " ON e.ts = (SELECT MAX(ts) FROM equity WHERE ts <= i.t) ORDER BY e.ts",
            (first, step, step, hi),
            columns,
        )


GAP_FACTOR = 3.0  # a spacing this many times the usual one is a gap, not a slow tick


def time_gaps(ts: Iterable[int], min_gap: float | None = None) -> list[tuple[int, int]]:
    """Stretches with no points, as (last point before, first point after): consecutive
    instants further apart than `min_gap`, by default GAP_FACTOR x their median
    spacing. On the equity curve a gap is time the engine did not mark: it was down."""
    times = [int(t) for t in ts]
    steps = [b - a for a, b in itertools.pairwise(times)]
    if not steps:
        return []
    limit = min_gap if min_gap is not None else GAP_FACTOR * float(np.median(steps))
    return [(a, b) for a, b in itertools.pairwise(times) if b - a > limit]


def broken_at(frame: pd.DataFrame, column: str, gaps: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """The frame with an empty row in the middle of each gap, so a line chart breaks
    there instead of drawing a straight line across time nobody saw."""
    if not gaps:
        return frame
    blanks = pd.DataFrame({column: [(a + b) // 2 for a, b in gaps]})
    out = pd.concat([frame, blanks], ignore_index=True)
    return out.sort_values(column, kind="stable").reset_index(drop=True)


def open_positions(path: PathLike) -> pd.DataFrame:
    with _read(path) as conn:
        return _frame(
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
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT ts, symbol, side, qty, price, commission, ref_price, client_order_id"
            " FROM fills ORDER BY ts DESC, id DESC LIMIT ?",
            (limit,),
            ["ts", "symbol", "side", "qty", "price", "commission", "ref_price", "client_order_id"],
        )


# --------------------------------------------------------------------------- regime


def regime_symbols(path: PathLike) -> list[str]:
    with _read(path) as conn:
        return _distinct(conn, "regimes", "symbol")


def current_regimes(path: PathLike) -> pd.DataFrame:
    """The latest call per symbol."""
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT r.symbol, r.ts, r.regime, r.confidence, r.source, r.rules_regime,"
            " r.model_version FROM regimes r JOIN"
            " (SELECT symbol, MAX(ts) AS ts FROM regimes GROUP BY symbol) m"
            " ON m.symbol = r.symbol AND m.ts = r.ts"
            " GROUP BY r.symbol ORDER BY r.symbol",
            columns=[
                "symbol",
                "ts",
                "regime",
                "confidence",
                "source",
                "rules_regime",
                "model_version",
            ],
        )


def latest_features(path: PathLike, symbol: str) -> tuple[int | None, dict[str, Any]]:
    """The indicators behind the latest call for `symbol`."""
    with _read(path) as conn:
        row = _one(
            conn,
            "SELECT ts, features FROM regimes WHERE symbol = ? ORDER BY ts DESC LIMIT 1",
            (symbol,),
        )
    if row is None:
        return None, {}
    return int(row["ts"]), json_or_empty(row["features"])


def regime_timeline(
    path: PathLike, symbol: str, since: int | None = None, points: int = MAX_POINTS
) -> pd.DataFrame:
    """Close price and regime call for `symbol`, at most `points` rows (last per bucket)."""
    columns = ["ts", "close", "regime", "confidence"]
    with _read(path) as conn:
        span = _one(
            conn, _SPAN.format(col="ts", table="regimes", where="WHERE symbol = ?"), (symbol,) * 2
        )
        if span is None or span[0] is None:
            return pd.DataFrame(columns=columns)
        lo = max(int(span[0]), since or int(span[0]))
        bucket = max(1, (int(span[1]) - lo) // max(1, points - 1) + 1)
        return _frame(
            conn,
            "SELECT MAX(r.ts) AS ts, b.close, r.regime, r.confidence FROM regimes r"
            " LEFT JOIN bars b ON b.symbol = r.symbol AND b.ts = r.ts"
            " WHERE r.symbol = ? AND r.ts >= ? GROUP BY (r.ts - ?) / ? ORDER BY ts",
            (symbol, lo, lo, bucket),
            columns,
        )


def _symbol_window(symbol: str | None, since: int | None) -> tuple[str, list[Any]]:
    """A WHERE clause on (symbol, ts) that the regimes(symbol, ts) index can serve."""
    if symbol:
        return "symbol = ? AND ts >= ?", [symbol, since or 0]
    return "ts >= ?", [since or 0]


def time_in_regime(
    path: PathLike, symbol: str | None = None, since: int | None = None
) -> pd.DataFrame:
    """Hours and share of time per regime; each call lasts until the symbol's next one."""
    where, params = _symbol_window(symbol, since)
    with _read(path) as conn:
        df = _frame(
            conn,
            "SELECT regime, SUM(span) / 3600000.0 AS hours, COUNT(*) AS calls FROM ("
            " SELECT regime, COALESCE(LEAD(ts) OVER (PARTITION BY symbol ORDER BY ts) - ts, 0)"
            f" AS span FROM regimes WHERE {where})"
            " GROUP BY regime ORDER BY hours DESC",
            params,
            ["regime", "hours", "calls"],
        )
    total = float(df["hours"].sum()) if len(df) else 0.0
    df["share"] = df["hours"] / total if total > 0 else 0.0
    return df


def rules_vs_ml(
    path: PathLike, symbol: str | None = None, since: int | None = None
) -> pd.DataFrame:
    """Where the ML model made the call: what the rules said against what ML said."""
    where, params = _symbol_window(symbol, since)
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT rules_regime, regime AS ml_regime, COUNT(*) AS calls FROM regimes"
            f" WHERE source = 'ml' AND {where}"
            " GROUP BY rules_regime, regime ORDER BY calls DESC",
            params,
            ["rules_regime", "ml_regime", "calls"],
        )


def regime_sources(
    path: PathLike, symbol: str | None = None, since: int | None = None
) -> pd.DataFrame:
    where, params = _symbol_window(symbol, since)
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT source, COUNT(*) AS calls, AVG(confidence) AS avg_confidence FROM regimes"
            f" WHERE {where} GROUP BY source",
            params,
            ["source", "calls", "avg_confidence"],
        )


# --------------------------------------------------------------------------- orders


@dataclass(frozen=True)
class OrderFilter:
    symbols: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    sides: tuple[str, ...] = ()
    since: int | None = None
    until: int | None = None

    def where(self, time_column: str = "created_at") -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, values in (
            ("symbol", self.symbols),
            ("status", self.statuses),
            ("side", self.sides),
        ):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if self.since is not None:
            clauses.append(f"{time_column} >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{time_column} < ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


ORDER_COLUMNS = [
    "created_at",
    "client_order_id",
    "symbol",
    "side",
    "qty",
    "type",
    "purpose",
    "status",
    "filled_qty",
    "avg_price",
    "limit_price",
    "stop_price",
    "stop_loss",
    "take_profit",
    "ref_price",
    "reason",
    "updated_at",
]


def order_symbols(path: PathLike) -> list[str]:
    with _read(path) as conn:
        return _distinct(conn, "orders", "symbol")


def orders(path: PathLike, flt: OrderFilter, limit: int | None = 500) -> pd.DataFrame:
    """The blotter, newest first; `limit=None` for the full export."""
    where, params = flt.where()
    sql = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders{where} ORDER BY created_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    with _read(path) as conn:
        return _frame(conn, sql, params, ORDER_COLUMNS)


def orders_count(path: PathLike, flt: OrderFilter) -> int:
    where, params = flt.where()
    with _read(path) as conn:
        row = _one(conn, f"SELECT COUNT(*) FROM orders{where}", params)
    return int(row[0]) if row else 0


def orders_csv(path: PathLike, flt: OrderFilter) -> str:
    return orders(path, flt, limit=None).to_csv(index=False)


@dataclass(frozen=True)
class OrderLifecycle:
    order: dict[str, Any]
    events: pd.DataFrame
    fills: pd.DataFrame
    signal: dict[str, Any]


def order_lifecycle(path: PathLike, client_order_id: str) -> OrderLifecycle | None:
    with _read(path) as conn:
        row = _one(conn, "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        if row is None:
            return None
        events = _frame(
            conn,
            "SELECT ts, status, detail FROM order_events WHERE client_order_id = ? ORDER BY ts, id",
            (client_order_id,),
            ["ts", "status", "detail"],
        )
        fills = _frame(
            conn,
            "SELECT ts, exec_id, qty, price, commission, ref_price FROM fills"
            " WHERE client_order_id = ? ORDER BY ts, id",
            (client_order_id,),
            ["ts", "exec_id", "qty", "price", "commission", "ref_price"],
        )
        signal = _one(
            conn,
            "SELECT ts, strength, model_version, check_name, reason FROM signals"
            " WHERE client_order_id = ? LIMIT 1",
            (client_order_id,),
        )
    return OrderLifecycle(dict(row), events, fills, dict(signal) if signal else {})


@dataclass(frozen=True)
class TradeSummary:
    trades: int
    winners: int
    pnl: float
    commission: float
    slippage: float
    avg_holding_s: float | None

    @property
    def win_rate(self) -> float | None:
        return self.winners / self.trades if self.trades else None


def _trade_where(symbol: str | None, since: int | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if symbol:
        clauses.append("symbol = ?")
        params.append(symbol)
    if since is not None:
        clauses.append("exit_ts >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def round_trips(
    path: PathLike, symbol: str | None = None, since: int | None = None, limit: int = 500
) -> pd.DataFrame:
    where, params = _trade_where(symbol, since)
    columns = [
        "exit_ts",
        "symbol",
        "side",
        "qty",
        "entry_price",
        "exit_price",
        "exit_reason",
        "stop",
        "target",
        "pnl",
        "commission",
        "slippage",
        "holding_s",
        "entry_ts",
    ]
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT exit_ts, symbol, side, qty, entry_price, exit_price, exit_reason, stop,"
            " target, pnl, commission, slippage, (exit_ts - entry_ts) / 1000.0 AS holding_s,"
            f" entry_ts FROM trades{where}"
            " ORDER BY exit_ts DESC, id DESC LIMIT ?",
            [*params, limit],
            columns,
        )


def trade_summary(
    path: PathLike, symbol: str | None = None, since: int | None = None
) -> TradeSummary:
    where, params = _trade_where(symbol, since)
    with _read(path) as conn:
        row = _one(
            conn,
            "SELECT COUNT(*), SUM(pnl > 0), SUM(pnl), SUM(commission), SUM(slippage),"
            f" AVG(exit_ts - entry_ts) / 1000.0 FROM trades{where}",
            params,
        )
    if row is None or not row[0]:
        return TradeSummary(0, 0, 0.0, 0.0, 0.0, None)
    return TradeSummary(
        trades=int(row[0]),
        winners=int(row[1] or 0),
        pnl=float(row[2] or 0.0),
        commission=float(row[3] or 0.0),
        slippage=float(row[4] or 0.0),
        avg_holding_s=float(row[5]) if row[5] is not None else None,
    )


def denied_intents(path: PathLike, since: int | None = None, limit: int = 500) -> pd.DataFrame:
    columns = ["ts", "symbol", "side", "qty", "purpose", "strength", "check_name", "reason"]
    with _read(path) as conn:
        return _frame(
            conn,
            f"SELECT {', '.join(columns)} FROM signals WHERE verdict = 'denied'"
            " AND ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
            (since or 0, limit),
            columns,
        )


def denials_by_check(path: PathLike, since: int | None = None) -> pd.DataFrame:
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT check_name, COUNT(*) AS denied FROM signals WHERE verdict = 'denied'"
            " AND ts >= ? GROUP BY check_name ORDER BY denied DESC",
            (since or 0,),
            ["check_name", "denied"],
        )


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class AlertFilter:
    severities: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: int | None = None
    until: int | None = None
    unacked_only: bool = False

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, values in (("severity", self.severities), ("source", self.sources)):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            params.append(self.until)
        if self.unacked_only:
            clauses.append("acked_at IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


ALERT_COLUMNS = [
    "id",
    "ts",
    "last_ts",
    "severity",
    "source",
    "title",
    "message",
    "count",
    "acked_at",
    "acked_by",
]


def alert_sources(path: PathLike) -> list[str]:
    with _read(path) as conn:
        return _distinct(conn, "alerts", "source")


def alerts(path: PathLike, flt: AlertFilter, limit: int = 500) -> pd.DataFrame:
    where, params = flt.where()
    with _read(path) as conn:
        return _frame(
            conn,
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts{where} ORDER BY ts DESC, id DESC"
            " LIMIT ?",
            [*params, limit],
            ALERT_COLUMNS,
        )


def alerts_count(path: PathLike, flt: AlertFilter) -> int:
    where, params = flt.where()
    with _read(path) as conn:
        row = _one(conn, f"SELECT COUNT(*) FROM alerts{where}", params)
    return int(row[0]) if row else 0


def alert_counts_over_time(
    path: PathLike, flt: AlertFilter, bucket_ms: int = HOUR_MS
) -> pd.DataFrame:
    """Alerts per time bucket and severity (bucket start in epoch ms)."""
    where, params = flt.where()
    with _read(path) as conn:
        return _frame(
            conn,
            f"SELECT (ts / ?) * ? AS bucket, severity, COUNT(*) AS alerts FROM alerts{where}"
            " GROUP BY bucket, severity ORDER BY bucket",
            [bucket_ms, bucket_ms, *params],
            ["bucket", "severity", "alerts"],
        )


# --------------------------------------------------------------------------- marathon


@dataclass(frozen=True)
class MarathonFacts:
    first_cycle_at: int | None
    last_cycle_at: int | None
    cycles: int
    failed: int
    missed: int
    gaps: int
    cycle_seconds: float | None
    engine_started_at: int | None
    engine_alive: bool
    halts: int  # transitions into HALTED in the lookback
    last_halt_at: int | None
    max_drawdown: float | None
    unacked_critical: int
    market_sessions: int = 0  # trading days the market clock has covered (strategy evidence)

    @property
    def days_run(self) -> float:
        """Days of wall time with cycles (operations: is the process dependable?)."""
        if self.first_cycle_at is None or self.last_cycle_at is None:
            return 0.0
        return (self.last_cycle_at - self.first_cycle_at) / DAY_MS

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.cycles if self.cycles else None

    @property
    def missed_rate(self) -> float | None:
        expected = self.cycles + self.missed
        return self.missed / expected if expected else None


@dataclass(frozen=True)
class _CycleTally:
    """Cycle counts up to `last_id`, so the next call reads only newer cycles."""

    first_id: int
    last_id: int
    last_started: int
    cycles: int
    failed: int
    gaps: int
    missed: int


_tallies: dict[tuple[str, float], _CycleTally] = {}
_tally_lock = threading.Lock()


def _tally_cycles(
    conn: sqlite3.Connection, key: tuple[str, float], cycle_ms: float
) -> _CycleTally | None:
    """Counts over the whole cycles table, extended incrementally from the last call.

    A gap beyond 1.5 cycles means cycles were missed: as many as fit in the gap. The
    tally is rebuilt when the oldest cycles were pruned or the file was replaced.
    """
    ends = _one(conn, _SPAN.format(col="id", table="cycles", where=""))
    if ends is None or ends[0] is None:
        return None
    with _tally_lock:
        cached = _tallies.get(key)
    if cached is not None:
        anchor = _one(conn, "SELECT started_at FROM cycles WHERE id = ?", (cached.last_id,))
        if cached.first_id != ends[0] or anchor is None or anchor[0] != cached.last_started:
            cached = None
    if cached is not None and cached.last_id == ends[1]:
        return cached
    start_id = cached.last_id if cached else int(ends[0])
    row = _one(
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
    last = _one(conn, "SELECT started_at FROM cycles WHERE id = ?", (row[4],))
    base = cached or _CycleTally(int(ends[0]), 0, 0, 0, 0, 0, 0)
    tally = _CycleTally(
        first_id=base.first_id,
        last_id=int(row[4]),
        last_started=int(last[0]) if last else 0,
        cycles=base.cycles + int(row[0]),
        failed=base.failed + int(row[1] or 0),
        gaps=base.gaps + int(row[2] or 0),
        missed=base.missed + int(row[3] or 0),
    )
    with _tally_lock:
        _tallies[key] = tally
    return tally


def marathon_facts(path: PathLike, now: int, lookback_days: float) -> MarathonFacts:
    status = engine_status(path, now)
    cycle_ms = (status.cycle_seconds or 1.0) * 1000
    halt_since = now - int(lookback_days * DAY_MS)
    with _read(path) as conn:
        span = _one(conn, _SPAN.format(col="started_at", table="cycles", where=""))
        tally = (
            _tally_cycles(conn, (str(db_path(path).resolve()), cycle_ms), cycle_ms)
            if conn is not None
            else None
        )
        halts = _one(
            conn,
            "SELECT COUNT(*), MAX(ts) FROM audit WHERE action = 'state_change' AND ts >= ?"
            " AND json_extract(payload, '$.to') = 'HALTED'",
            (halt_since,),
        )
        worst = _one(conn, "SELECT MAX(drawdown) FROM equity")
        _, trading_day = market_clock(conn)
        marks = _one(conn, "SELECT MIN(ts), MAX(ts) FROM equity")
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


def cycle_times(path: PathLike, since: int | None = None, bucket_ms: int = HOUR_MS) -> pd.DataFrame:
    """Per time bucket: cycles, failures, and the p50 and p99 cycle duration (nearest rank)."""
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT bucket, COUNT(*) AS cycles, SUM(error IS NOT NULL) AS errors,"
            " MIN(CASE WHEN rn >= 0.50 * n THEN duration_ms END) AS p50_ms,"
            " MIN(CASE WHEN rn >= 0.99 * n THEN duration_ms END) AS p99_ms,"
            " MAX(duration_ms) AS max_ms FROM ("
            "  SELECT (started_at / ?) * ? AS bucket, duration_ms, error,"
            "  ROW_NUMBER() OVER (PARTITION BY started_at / ? ORDER BY duration_ms) AS rn,"
            "  COUNT(*) OVER (PARTITION BY started_at / ?) AS n"
            "  FROM cycles WHERE started_at >= ?)"
            " GROUP BY bucket ORDER BY bucket",
            (bucket_ms, bucket_ms, bucket_ms, bucket_ms, since or 0),
            ["bucket", "cycles", "errors", "p50_ms", "p99_ms", "max_ms"],
        )


def cycle_percentiles(
    path: PathLike, since: int | None = None
) -> tuple[float | None, float | None]:
    """p50 and p99 cycle duration over the window (nearest rank)."""
    with _read(path) as conn:
        row = _one(
            conn,
            "SELECT MIN(CASE WHEN rn >= 0.50 * n THEN duration_ms END),"
            " MIN(CASE WHEN rn >= 0.99 * n THEN duration_ms END) FROM ("
            " SELECT duration_ms, ROW_NUMBER() OVER (ORDER BY duration_ms) AS rn,"
            " COUNT(*) OVER () AS n FROM cycles WHERE started_at >= ? AND duration_ms IS NOT NULL)",
            (since or 0,),
        )
    if row is None or row[0] is None:
        return None, None
    return float(row[0]), float(row[1])


def pnl_per_day(path: PathLike) -> pd.DataFrame:
    """P&L per trading day (the gate's days, on market time): the last mark of the
    day against the last mark before it. A day without a single mark (no session,
    the engine down) is not a day of returns, so it is left out rather than counted
    as a zero-return day that would flatten volatility and the ratios."""
    columns = ["day", "start_equity", "end_equity", "pnl", "ret"]
    span = equity_range(path)
    if span is None:
        return pd.DataFrame(columns=columns)
    with _read(path) as conn:
        _, trading_day = market_clock(conn)
        starts = trading_day.starts(span[0], span[1])
        values = ",".join(f"({int(s)}, {int(e)})" for s, e in itertools.pairwise(starts))
        df = _frame(
            conn,
            f"WITH d(start, stop) AS (VALUES {values}) SELECT start,"
            " (SELECT equity FROM equity WHERE ts < d.stop ORDER BY ts DESC LIMIT 1) AS mark,"
            " EXISTS (SELECT 1 FROM equity WHERE ts >= d.start AND ts < d.stop) AS marked"
            " FROM d ORDER BY start",
            (),
            ["start", "mark", "marked"],
        )
        first = _one(conn, "SELECT equity FROM equity ORDER BY ts LIMIT 1")
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
    with _read(path) as conn:
        moved = conn.execute("SELECT ts, amount FROM cash_movements").fetchall() if conn else []
    next_start = dict(itertools.pairwise(starts))
    moved_in_day = [sum(a for ts, a in moved if day <= ts < next_start[day]) for day in out["day"]]
    out["pnl"] = out["end_equity"] - out["start_equity"] - moved_in_day
    out["ret"] = out["pnl"] / out["start_equity"]
    return out.reset_index(drop=True)[columns]


def errors_per_hour(path: PathLike, since: int | None = None) -> pd.DataFrame:
    with _read(path) as conn:
        return _frame(
            conn,
            "SELECT (started_at / ?) * ? AS hour, COUNT(*) AS errors FROM cycles"
            " WHERE error IS NOT NULL AND started_at >= ? GROUP BY hour ORDER BY hour",
            (HOUR_MS, HOUR_MS, since or 0),
            ["hour", "errors"],
        )


@dataclass(frozen=True)
class ReadinessThresholds:
    min_days: float = 14.0
    min_sessions: int = 20  # trading days of market evidence (a month of sessions)
    no_halt_days: float = 7.0
    max_failure_rate: float = 0.005
    max_missed_rate: float = 0.01
    max_drawdown: float = 0.15  # the risk limit; pages pass risk.max_drawdown
    min_sharpe: float = 1.0
    p99_share_of_cycle: float = 0.5  # p99 cycle time as a share of the cycle interval


# Operations are judged on the wall clock (how long the process has run and
# behaved); the strategy on market time (how many sessions of trading it has seen).
WALL = "wall time"
MARKET = "market time"


@dataclass(frozen=True)
class CheckItem:
    name: str
    fact: str
    target: str
    passed: bool
    clock: str = WALL  # which clock the check counts on


def sharpe_like(daily_returns: list[float]) -> float | None:
    """The annualised Sharpe ratio of trading-day returns: the backtester's function
    (empyrical's definition, 252 periods a year), so the two always agree."""
    from engine.backtest.metrics import sharpe

    return sharpe(pd.Series(daily_returns, dtype="float64"))


def readiness(
    facts: MarathonFacts,
    sharpe: float | None,
    p99_ms: float | None,
    t: ReadinessThresholds,
) -> list[CheckItem]:
    """The go-live checklist: each item with the fact behind it and pass or fail."""
    cycle_ms = (facts.cycle_seconds or 1.0) * 1000
    fail_rate, missed_rate = facts.failure_rate, facts.missed_rate
    return [
        CheckItem(
            "Marathon length",
            f"{facts.days_run:.1f} days of cycles",
            f"≥ {t.min_days:g} days",
            facts.days_run >= t.min_days,
            WALL,
        ),
        CheckItem(
            "Market sessions traded",
            f"{facts.market_sessions} trading days",
            f"≥ {t.min_sessions}",
            facts.market_sessions >= t.min_sessions,
            MARKET,
        ),
        CheckItem(
            "No HALT recently",
            f"{facts.halts} HALT(s) in the last {t.no_halt_days:g} days",
            "0",
            facts.halts == 0,
        ),
        CheckItem(
            "Failed cycles",
            f"{facts.failed} of {facts.cycles}"
            + (f" ({fail_rate:.3%})" if fail_rate is not None else ""),
            f"< {t.max_failure_rate:.2%}",
            fail_rate is not None and fail_rate < t.max_failure_rate,
        ),
        CheckItem(
            "Missed cycles",
            f"{facts.missed} missed in {facts.gaps} gap(s)"
            + (f" ({missed_rate:.3%})" if missed_rate is not None else ""),
            f"< {t.max_missed_rate:.2%}",
            missed_rate is not None and missed_rate < t.max_missed_rate,
        ),
        CheckItem(
            "Max drawdown",
            f"{facts.max_drawdown:.2%}" if facts.max_drawdown is not None else "no equity yet",
            f"< {t.max_drawdown:.0%} (risk limit)",
            facts.max_drawdown is not None and facts.max_drawdown < t.max_drawdown,
            MARKET,
        ),
        CheckItem(
            "Sharpe ratio (trading days, annualised)",
            f"{sharpe:.2f}" if sharpe is not None else "needs two days of P&L",
            f"≥ {t.min_sharpe:g}",
            sharpe is not None and sharpe >= t.min_sharpe,
            MARKET,
        ),
        CheckItem(
            "Cycle time p99",
            f"{p99_ms:.0f} ms" if p99_ms is not None else "no cycles",
            f"< {t.p99_share_of_cycle:.0%} of {cycle_ms:.0f} ms",
            p99_ms is not None and p99_ms < t.p99_share_of_cycle * cycle_ms,
        ),
        CheckItem(
            "No unacknowledged CRITICAL alert",
            f"{facts.unacked_critical} open",
            "0",
            facts.unacked_critical == 0,
        ),
        CheckItem(
            "Engine alive",
            "heartbeat fresh" if facts.engine_alive else "no fresh heartbeat",
            "fresh",
            facts.engine_alive,
        ),
    ]
