"""The engine's status as one typed read model, for the CLI and the cockpit's sidebar."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from store.alerts import unacknowledged_by_severity
from store.db import reader
from store.portfolio import last_mark
from store.schema import OPEN_STATUSES

DEFAULT_HEARTBEAT_SECONDS = 1.0  # engine.heartbeat_seconds' default, for rows without one
STALE_BEATS = 5


def engine_alive(
    heartbeat_at: int | None,
    stopped_at: int | None,
    heartbeat_seconds: float | None,
    now: int,
) -> bool:
    """The one liveness rule (CLI status, the cockpit's sidebar, autostart): a heartbeat
    within STALE_BEATS of the engine's own `heartbeat_seconds`, and no stop after it.

    Several beats, not one: the heartbeat runs on the trading thread, behind a cycle
    that may take a moment."""
    if not heartbeat_at:
        return False
    if stopped_at is not None and stopped_at >= heartbeat_at:
        return False
    beat_ms = (heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS) * 1000
    return now - heartbeat_at <= STALE_BEATS * beat_ms


@dataclass(frozen=True)
class EngineStatus:
    trading_state: str
    state_reason: str
    mode: str
    broker: str | None
    broker_connected: bool
    pid: int | None
    running: bool
    heartbeat_age_s: float | None
    last_cycle_age_s: float | None
    cycles: int
    failed_cycles: int
    equity: float | None
    drawdown: float | None
    open_positions: int
    open_orders: int
    unacked_alerts: dict[str, int]
    market_time: int | None = None  # the time of the bars the engine last processed
    speed: float | None = None  # market seconds per wall second; None = unpaced
    simulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def market_clock(self) -> str:
        return describe_market_clock(self.market_time, self.speed, self.simulated)

    def describe(self) -> str:
        beat = "never" if self.heartbeat_age_s is None else f"{self.heartbeat_age_s:.1f} s ago"
        alerts = ", ".join(f"{k} {v}" for k, v in self.unacked_alerts.items()) or "none"
        equity = "-" if self.equity is None else f"{self.equity:,.2f}"
        dd = "-" if self.drawdown is None else f"{self.drawdown:.2%}"
        reason = f" ({self.state_reason})" if self.state_reason else ""
        lines = [
            f"state      {self.trading_state}{reason}",
            f"engine     {'running' if self.running else 'not running'}"
            f" (pid {self.pid}, heartbeat {beat})",
            f"mode       {self.mode} via {self.broker or '-'}"
            f" ({'connected' if self.broker_connected else 'disconnected'})",
            f"cycles     {self.cycles} ({self.failed_cycles} failed)",
            f"equity     {equity}  drawdown {dd}",
            f"market     {self.market_clock()}",
            f"positions  {self.open_positions} open, {self.open_orders} working orders",
            f"alerts     {alerts} unacknowledged",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did, for the one screen printed at the end of the data."""

    first_bar: int | None
    last_bar: int | None
    trading_days: int
    bars: int
    rejected_rows: int
    orders: int
    fills: int
    round_trips: int
    winners: int
    pnl: float
    equity: float | None
    day_limit_pauses: int
    trading_state: str

    def describe(self) -> str:
        def day(ms: int | None) -> str:
            return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()

        wins = f"{self.winners / self.round_trips:.0%}" if self.round_trips else "-"
        equity = "-" if self.equity is None else f"{self.equity:,.2f}"
        return "\n".join(
            [
                "replay finished: end of the data",
                f"market     {day(self.first_bar)} to {day(self.last_bar)},"
                f" {self.trading_days} trading days",
                f"bars       {self.bars:,} stored, {self.rejected_rows:,} rows rejected",
                f"orders     {self.orders:,} sent, {self.fills:,} fills",
                f"trades     {self.round_trips:,} round trips, {wins} winners",
                f"P&L        {self.pnl:+,.2f} (equity {equity})",
                f"day limits {self.day_limit_pauses} times entries waited for the next day",
                f"state      {self.trading_state}",
            ]
        )


def describe_market_clock(market_time: int | None, speed: float | None, simulated: bool) -> str:
    """Market time as the operator reads it: the time, and how fast it runs."""
    if market_time is None:
        return "no bar yet"
    when = datetime.fromtimestamp(market_time / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not simulated:
        return f"{when} (live)"
    pace = "unpaced" if speed is None else f"{speed:g}x"
    return f"{when} (simulated, {pace})"


def replay_summary(path: str | os.PathLike[str] | None) -> ReplaySummary | None:
    from engine.market.calendar import TradingDay

    try:
        with reader(path) as conn:
            engine = conn.execute(
                "SELECT trading_state, trading_day FROM engine WHERE id = 1"
            ).fetchone()
            span = conn.execute("SELECT min(ts), max(ts), count(*) FROM bars").fetchone()
            rejected = conn.execute("SELECT coalesce(sum(rejected_bars), 0) FROM cycles").fetchone()
            orders = conn.execute("SELECT count(*) FROM orders").fetchone()
            fills = conn.execute("SELECT count(*) FROM fills").fetchone()
            trades = conn.execute(
                "SELECT count(*), coalesce(sum(pnl > 0), 0) FROM trades"
            ).fetchone()
            equity = conn.execute(
                "SELECT (SELECT equity FROM equity ORDER BY ts LIMIT 1),"
                " (SELECT equity FROM equity ORDER BY ts DESC LIMIT 1)"
            ).fetchone()
            pauses = conn.execute(
                "SELECT coalesce(sum(count), 0) FROM alerts WHERE title LIKE 'Entries paused%'"
            ).fetchone()
    except FileNotFoundError:
        return None
    day = TradingDay.from_spec(engine["trading_day"] if engine else None)
    first, last = span[0], span[1]
    return ReplaySummary(
        first_bar=first,
        last_bar=last,
        trading_days=day.count(first, last) if first is not None else 0,
        bars=int(span[2]),
        rejected_rows=int(rejected[0]),
        orders=int(orders[0]),
        fills=int(fills[0]),
        round_trips=int(trades[0]),
        winners=int(trades[1]),
        pnl=(equity[1] - equity[0]) if equity[0] is not None else 0.0,
        equity=equity[1],
        day_limit_pauses=int(pauses[0]),
        trading_state=engine["trading_state"] if engine else "ACTIVE",
    )


def beat_seconds(engine_row: sqlite3.Row) -> float | None:
    """The row's heartbeat interval; None in a database from before it was recorded."""
    keys = engine_row.keys()
    return engine_row["heartbeat_seconds"] if "heartbeat_seconds" in keys else None


def read_status(path: str | os.PathLike[str] | None, now: int) -> EngineStatus | None:
    try:
        with reader(path) as conn:
            # `*`: a database written before heartbeat_seconds existed still reads.
            engine = conn.execute("SELECT * FROM engine WHERE id = 1").fetchone()
            cycles = conn.execute("SELECT count(*), count(error) FROM cycles").fetchone()
            equity = last_mark(conn)
            positions = conn.execute("SELECT count(*) FROM positions WHERE qty != 0").fetchone()
            orders = conn.execute(
                f"SELECT count(*) FROM orders WHERE status IN {OPEN_STATUSES}"
            ).fetchone()
            alerts = unacknowledged_by_severity(conn)
    except FileNotFoundError:
        return None
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # the engine is creating the schema right now
        raise
    beat = engine["heartbeat_at"] if engine else None
    last_cycle = engine["last_cycle_at"] if engine else None
    running = bool(engine and engine_alive(beat, engine["stopped_at"], beat_seconds(engine), now))
    return EngineStatus(
        trading_state=engine["trading_state"] if engine else "ACTIVE",
        state_reason=(engine["state_reason"] or "") if engine else "",
        mode=(engine["mode"] or "PAPER") if engine else "PAPER",
        broker=engine["broker"] if engine else None,
        broker_connected=bool(engine and engine["broker_connected"]),
        pid=engine["pid"] if engine else None,
        running=running,
        heartbeat_age_s=None if beat is None else (now - beat) / 1000,
        last_cycle_age_s=None if last_cycle is None else (now - last_cycle) / 1000,
        cycles=int(cycles[0]),
        failed_cycles=int(cycles[1]),
        equity=float(equity[0]) if equity else None,
        drawdown=float(equity[1]) if equity else None,
        open_positions=int(positions[0]),
        open_orders=int(orders[0]),
        unacked_alerts=alerts,
        market_time=_column(engine, "market_time"),
        speed=_column(engine, "speed"),
        simulated=bool(_column(engine, "simulated")),
    )


def _column(row: sqlite3.Row | None, name: str) -> Any:
    """A column the engine adds when it opens the database (None before that)."""
    return row[name] if row is not None and name in row.keys() else None  # noqa: SIM118
