"""Read models for the Risk page: limit usage, denials, state history, calendar.

Limit usage comes from `risk_usage`, which the engine's monitor overwrites every
second. When that table is missing or older than `USAGE_FRESH_MS` (no monitor, an
engine that stopped), the same figures are computed from the stored positions,
orders, trades and equity with the engine's own pure `usage` function, and the
view says which source it used.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from dataclasses import dataclass

import pandas as pd

from cockpit.reader import market_clock
from cockpit.reader import rows as _rows
from engine.config import RiskSettings
from engine.domain import Order, OrderStatus, OrderType, Position, Purpose, Side
from engine.market.calendar import EventsFileError, MarketCalendar
from engine.risk.facts import load_risk_facts
from engine.risk.usage import usage
from store.db import maybe_reader
from store.schema import OPEN_STATUSES

logger = logging.getLogger(__name__)

PathLike = str | None
USAGE_FRESH_MS = 30_000
RETURNS_WINDOW = 120  # bars per symbol for the correlation groups

LABELS = {
    "daily_loss": "Daily loss",
    "max_drawdown": "Drawdown from peak",
    "open_positions": "Open positions",
    "gross_exposure": "Gross exposure",
    "net_exposure": "Net exposure",
    "buying_power": "Buying power used",
    "position_notional": "Largest position",
    "correlated_exposure": "Largest correlated group",
    "position_loss": "Largest open loss",
    "trades_per_day": "Trades today",
    "consecutive_losses": "Losing streak",
    "order_rate": "Orders in the last minute",
    "order_fill_ratio": "Orders per fill today",
}


@dataclass(frozen=True)
class Gauge:
    name: str
    label: str
    value: float
    limit: float
    unit: str  # money, count, ratio
    share: float
    detail: str = ""


@dataclass(frozen=True)
class LimitsView:
    gauges: tuple[Gauge, ...]
    as_of: int | None
    source: str  # "engine", "computed" or "none"

    def frame(self) -> pd.DataFrame:
        columns = ["limit", "value", "maximum", "use", "unit", "detail"]
        return pd.DataFrame(
            [(g.label, g.value, g.limit, g.share, g.unit, g.detail) for g in self.gauges],
            columns=columns,
        )


def limit_usage(path: PathLike, now: int, settings: RiskSettings) -> LimitsView:
    """Every limit's current use: the monitor's figures if fresh, else computed."""
    with maybe_reader(path) as conn:
        if conn is None:
            return LimitsView((), None, "none")
        rows = _rows(
            conn,
            "SELECT name, value, limit_value, unit, share, detail, updated_at FROM risk_usage",
        )
        fresh = [
            r
            for r in rows
            if r["updated_at"] is not None and now - r["updated_at"] <= USAGE_FRESH_MS
        ]
        if fresh and len(fresh) == len(rows):
            order = list(LABELS)
            gauges = sorted(
                (
                    Gauge(
                        r["name"],
                        LABELS.get(r["name"], r["name"]),
                        float(r["value"]),
                        float(r["limit_value"]),
                        r["unit"],
                        float(r["share"]),
                        r["detail"] or "",
                    )
                    for r in fresh
                ),
                key=lambda g: order.index(g.name) if g.name in order else len(order),
            )
            return LimitsView(tuple(gauges), max(r["updated_at"] for r in fresh), "engine")
        return _computed(conn, now, settings)


def _computed(conn: sqlite3.Connection, now: int, settings: RiskSettings) -> LimitsView:
    snapshot = _rows(conn, "SELECT ts, equity, cash FROM equity ORDER BY ts DESC LIMIT 1")
    if not snapshot:
        return LimitsView((), None, "none")
    ts, equity, cash = snapshot[0]["ts"], snapshot[0]["equity"], snapshot[0]["cash"]
    # The gate's own day and clock, so the gauges count what the gate counts.
    market, trading_day = market_clock(conn)
    positions = {
        r["symbol"]: Position(r["symbol"], r["qty"], r["avg_price"], opened_at=r["opened_at"])
        for r in _rows(
            conn, "SELECT symbol, qty, avg_price, opened_at FROM positions WHERE qty != 0"
        )
    }
    prices = {
        r["symbol"]: r["last_price"]
        for r in _rows(conn, "SELECT symbol, last_price FROM positions WHERE last_price > 0")
    }
    orders = _open_orders(conn)
    for o in orders:
        if o.symbol not in prices:
            row = _rows(
                conn,
                "SELECT close FROM bars WHERE symbol = ? ORDER BY ts DESC LIMIT 1",
                (o.symbol,),
            )
            if row:
                prices[o.symbol] = row[0]["close"]
    returns = {s: _returns(conn, s) for s in set(positions) | {o.symbol for o in orders}}
    ctx = load_risk_facts(conn, market or now, day=trading_day).context(
        equity=float(equity),
        cash=cash,
        positions=positions,
        last_prices=prices,
        open_orders=orders,
        returns=returns,
    )
    gauges = tuple(
        Gauge(u.name, LABELS.get(u.name, u.name), u.value, u.limit, u.unit.value, u.share, u.detail)
        for u in usage(ctx, settings)
    )
    return LimitsView(gauges, int(ts), "computed")


def _open_orders(conn: sqlite3.Connection) -> list[Order]:
    return [
        Order(
            r["client_order_id"],
            r["symbol"],
            Side(r["side"]),
            r["qty"],
            OrderType(r["type"]),
            Purpose(r["purpose"] or "ENTRY"),
            OrderStatus(r["status"]),
            limit_price=r["limit_price"],
            stop_price=r["stop_price"],
            filled_qty=r["filled_qty"] or 0.0,
        )
        for r in _rows(
            conn,
            "SELECT client_order_id, symbol, side, qty, type, purpose, status, limit_price,"
            f" stop_price, filled_qty FROM orders WHERE status IN {OPEN_STATUSES}",
        )
    ]


def _returns(conn: sqlite3.Connection, symbol: str) -> list[float]:
    closes = [
        r["close"]
        for r in reversed(
            _rows(
                conn,
                "SELECT close FROM bars WHERE symbol = ? ORDER BY ts DESC LIMIT ?",
                (symbol, RETURNS_WINDOW + 1),
            )
        )
    ]
    return [b / a - 1 for a, b in itertools.pairwise(closes) if a]


# --------------------------------------------------------------------------- denials


def denials(path: PathLike, since: int | None = None, limit: int = 200) -> pd.DataFrame:
    columns = ["ts", "symbol", "side", "qty", "purpose", "check_name", "reason"]
    with maybe_reader(path) as conn:
        rows = _rows(
            conn,
            f"SELECT {', '.join(columns)} FROM signals WHERE verdict = 'denied' AND ts >= ?"
            " ORDER BY ts DESC, id DESC LIMIT ?",
            (since or 0, limit),
        )
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def denials_by_check(path: PathLike, since: int | None = None) -> pd.DataFrame:
    with maybe_reader(path) as conn:
        rows = _rows(
            conn,
            "SELECT check_name, COUNT(*) AS denied FROM signals WHERE verdict = 'denied'"
            " AND ts >= ? GROUP BY check_name ORDER BY denied DESC, check_name",
            (since or 0,),
        )
    return pd.DataFrame([tuple(r) for r in rows], columns=["check_name", "denied"])


# --------------------------------------------------------------------------- state


def _event(to: str, actor: str, reason: str) -> str:
    if to == "HALTED":
        automatic = actor in {"engine", "monitor"} or "limit" in reason
        return "kill switch" if automatic else "emergency stop"
    return {"PAUSED": "pause", "ACTIVE": "resume"}.get(to, to.lower())


def state_history(path: PathLike, since: int | None = None, limit: int = 200) -> pd.DataFrame:
    """Trading-state changes from the audit trail, newest first."""
    columns = ["ts", "event", "from_state", "to_state", "actor", "reason"]
    with maybe_reader(path) as conn:
        rows = _rows(
            conn,
            "SELECT ts, actor, payload FROM audit WHERE action = 'state_change' AND ts >= ?"
            " ORDER BY ts DESC, id DESC LIMIT ?",
            (since or 0, limit),
        )
    out = []
    for r in rows:
        try:
            payload = json.loads(r["payload"] or "{}")
        except json.JSONDecodeError:
            payload = {}
        to, actor, reason = str(payload.get("to", "")), r["actor"] or "", payload.get("reason", "")
        out.append((r["ts"], _event(to, actor, reason), payload.get("from", ""), to, actor, reason))
    return pd.DataFrame(out, columns=columns)


# --------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class CalendarView:
    sessions: pd.DataFrame  # exchange, symbols, open, close
    blackouts: pd.DataFrame  # name, kind, symbols, start, end, active
    exchanges: int
    error: str = ""


def calendar(settings: RiskSettings, now: int, limit: int = 20) -> CalendarView:
    cal = MarketCalendar.from_settings(settings.exchanges, settings.events_file)
    sessions = pd.DataFrame(
        [(s.exchange, ", ".join(s.symbols), s.open, s.close) for s in cal.next_sessions(now)],
        columns=["exchange", "symbols", "open", "close"],
    )
    columns = ["name", "kind", "symbols", "start", "end", "active"]
    try:
        upcoming = cal.next_blackouts(now, limit)
        error = ""
    except EventsFileError as exc:
        upcoming, error = [], str(exc)
    blackouts = pd.DataFrame(
        [
            (
                b.name,
                b.kind,
                ", ".join(sorted(b.symbols)) or "all",
                b.start,
                b.end,
                b.start <= now < b.end,
            )
            for b in upcoming
        ],
        columns=columns,
    )
    return CalendarView(sessions, blackouts, len(set(settings.exchanges.values())), error)
