"""The sidebar's read model (app.py): the engine row, its liveness, open positions
and orders, and unacknowledged alerts by severity. Every page's header reads it
through `cockpit.ui.engine_status`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from cockpit.reader import SEVERITIES, PathLike, col, frame, one, read
from store.schema import OPEN_STATUSES
from store.status import beat_seconds, engine_alive

__all__ = ["SEVERITIES", "EngineStatus", "engine_status", "symbols_with_positions"]


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
    with read(path) as conn:
        row = one(conn, "SELECT * FROM engine WHERE id = 1")
        if row is None:
            return EngineStatus(present=False, unacked=_unacked(conn))
        counts = one(
            conn,
            "SELECT (SELECT COUNT(*) FROM positions WHERE qty != 0),"
            f" (SELECT COUNT(*) FROM orders WHERE status IN {OPEN_STATUSES})",
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
        market_time=col(row, "market_time"),
        speed=col(row, "speed"),
        simulated=bool(col(row, "simulated")),
        bar_interval=col(row, "bar_interval") or "",
        open_positions=int(counts[0]) if counts else 0,
        open_orders=int(counts[1]) if counts else 0,
        unacked=unacked,
    )


def _unacked(conn: sqlite3.Connection | None) -> dict[str, int]:
    df = frame(
        conn,
        "SELECT severity, COUNT(*) AS n FROM alerts WHERE acked_at IS NULL GROUP BY severity",
    )
    return {str(s): int(n) for s, n in zip(df.get("severity", []), df.get("n", []), strict=True)}


def symbols_with_positions(path: PathLike) -> list[str]:
    with read(path) as conn:
        df = frame(conn, "SELECT symbol FROM positions WHERE qty != 0 ORDER BY symbol")
    return [str(s) for s in df.get("symbol", [])]
