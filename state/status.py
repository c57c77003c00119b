"""The engine's status as one typed read model, for the CLI and the cockpit's sidebar."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from state.db import reader

STALE_AFTER_MS = 5_000


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

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
            f"positions  {self.open_positions} open, {self.open_orders} working orders",
            f"alerts     {alerts} unacknowledged",
        ]
        return "\n".join(lines)


def read_status(
    path: str | os.PathLike[str] | None, now: int, stale_after_ms: int = STALE_AFTER_MS
) -> EngineStatus | None:
    try:
        with reader(path) as conn:
            engine = conn.execute(
                "SELECT trading_state, state_reason, mode, broker, broker_connected, pid,"
                " heartbeat_at, last_cycle_at, stopped_at FROM engine WHERE id = 1"
            ).fetchone()
            cycles = conn.execute("SELECT count(*), count(error) FROM cycles").fetchone()
            equity = conn.execute(
                "SELECT equity, drawdown FROM equity ORDER BY ts DESC LIMIT 1"
            ).fetchone()
            positions = conn.execute("SELECT count(*) FROM positions WHERE qty != 0").fetchone()
            orders = conn.execute(
                "SELECT count(*) FROM orders WHERE status IN"
                " ('NEW', 'SUBMITTED', 'ACCEPTED', 'PARTIALLY_FILLED')"
            ).fetchone()
            alerts = conn.execute(
                "SELECT severity, count(*) FROM alerts WHERE acked_at IS NULL GROUP BY severity"
            ).fetchall()
    except FileNotFoundError:
        return None
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # the engine is creating the schema right now
        raise
    beat = engine["heartbeat_at"] if engine else None
    last_cycle = engine["last_cycle_at"] if engine else None
    running = bool(
        engine and engine["stopped_at"] is None and beat and now - beat <= stale_after_ms
    )
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
        unacked_alerts={row[0]: int(row[1]) for row in alerts},
    )
