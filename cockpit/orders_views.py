"""The Orders page's read model: the blotter and its export, one order's lifecycle,
round trips, and the intents the risk gate denied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from cockpit.reader import PathLike, distinct, frame, json_or_empty, one, read
from engine.domain import OrderStatus, Side

__all__ = [
    "ORDER_COLUMNS",
    "SIDES",
    "STATUSES",
    "OrderFilter",
    "OrderLifecycle",
    "TradeSummary",
    "denials_by_check",
    "denied_intents",
    "json_or_empty",
    "order_lifecycle",
    "order_symbols",
    "orders",
    "orders_count",
    "orders_csv",
    "round_trips",
    "trade_summary",
]

STATUSES = tuple(s.value for s in OrderStatus)
SIDES = tuple(s.value for s in Side)


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
    with read(path) as conn:
        return distinct(conn, "orders", "symbol")


def orders(path: PathLike, flt: OrderFilter, limit: int | None = 500) -> pd.DataFrame:
    """The blotter, newest first; `limit=None` for the full export."""
    where, params = flt.where()
    sql = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders{where} ORDER BY created_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    with read(path) as conn:
        return frame(conn, sql, params, ORDER_COLUMNS)


def orders_count(path: PathLike, flt: OrderFilter) -> int:
    where, params = flt.where()
    with read(path) as conn:
        row = one(conn, f"SELECT COUNT(*) FROM orders{where}", params)
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
    with read(path) as conn:
        row = one(conn, "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        if row is None:
            return None
        events = frame(
            conn,
            "SELECT ts, status, detail FROM order_events WHERE client_order_id = ? ORDER BY ts, id",
            (client_order_id,),
            ["ts", "status", "detail"],
        )
        fills = frame(
            conn,
            "SELECT ts, exec_id, qty, price, commission, ref_price FROM fills"
            " WHERE client_order_id = ? ORDER BY ts, id",
            (client_order_id,),
            ["ts", "exec_id", "qty", "price", "commission", "ref_price"],
        )
        signal = one(
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
    with read(path) as conn:
        return frame(
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
    with read(path) as conn:
        row = one(
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
    with read(path) as conn:
        return frame(
            conn,
            f"SELECT {', '.join(columns)} FROM signals WHERE verdict = 'denied'"
            " AND ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
            (since or 0, limit),
            columns,
        )


def denials_by_check(path: PathLike, since: int | None = None) -> pd.DataFrame:
    with read(path) as conn:
        return frame(
            conn,
            "SELECT check_name, COUNT(*) AS denied FROM signals WHERE verdict = 'denied'"
            " AND ts >= ? GROUP BY check_name ORDER BY denied DESC",
            (since or 0,),
            ["check_name", "denied"],
        )
