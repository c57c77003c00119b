"""How much of each limit is in use right now, for the Risk page's gauges.

`usage(ctx, settings)` is pure; `write_usage(db, usages, now)` overwrites one row
per limit in `risk_usage` (the "risk" migration set in `store.schema`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlite_utils import Database

from engine.config import RiskSettings
from engine.risk import capital, limits
from engine.risk.context import RiskContext
from store.risk import replace_usage

logger = logging.getLogger(__name__)


class Unit(StrEnum):
    MONEY = "money"
    COUNT = "count"
    RATIO = "ratio"


@dataclass(frozen=True, slots=True)
class LimitUsage:
    name: str
    value: float
    limit: float
    unit: Unit
    share: float  # value / limit; 1.0 = at the limit
    detail: str = ""


def _usage(name: str, value: float, limit: float, unit: Unit, detail: str = "") -> LimitUsage:
    share = value / limit if limit > 0 else (0.0 if value <= 0 else float("inf"))
    return LimitUsage(name, value, limit, unit, share, detail)


def usage(ctx: RiskContext, settings: RiskSettings) -> list[LimitUsage]:
    """Every limit's current use, in a stable order."""
    held = ctx.symbols_held() | {o.symbol for o in ctx.pending_entries()}
    return [
        *_account_usage(ctx, settings, held),
        _position_notional(ctx, settings, held),
        _correlated_exposure(ctx, settings, held),
        _position_loss(ctx, settings),
        *_activity_usage(ctx, settings),
    ]


def _account_usage(ctx: RiskContext, settings: RiskSettings, held: set[str]) -> list[LimitUsage]:
    """Loss, drawdown, position count and the account's exposures."""
    equity = ctx.equity
    return [
        _usage(
            "daily_loss", limits.loss_today(ctx), settings.daily_loss * ctx.start_equity, Unit.MONEY
        ),
        _usage(
            "max_drawdown",
            max(0.0, ctx.peak - ctx.equity),
            settings.max_drawdown * ctx.peak,
            Unit.MONEY,
        ),
        _usage("open_positions", len(held), settings.max_open_positions, Unit.COUNT),
        _usage(
            "gross_exposure", ctx.gross_exposure(), settings.max_gross_exposure * equity, Unit.MONEY
        ),
        _usage(
            "net_exposure", abs(ctx.net_exposure()), settings.max_net_exposure * equity, Unit.MONEY
        ),
        _usage(
            "buying_power",
            ctx.gross_exposure(),
            equity / settings.margin_requirement,
            Unit.MONEY,
        ),
    ]


def _position_notional(ctx: RiskContext, settings: RiskSettings, held: set[str]) -> LimitUsage:
    """The biggest single position, held plus pending."""
    biggest, biggest_symbol = 0.0, ""
    for s in sorted(held):
        exposure = abs(ctx.exposure(s) + ctx.pending_exposure(s))
        if exposure > biggest:
            biggest, biggest_symbol = exposure, s
    limit = settings.max_position_notional * ctx.equity
    return _usage("position_notional", biggest, limit, Unit.MONEY, biggest_symbol)


def _correlated_exposure(ctx: RiskContext, settings: RiskSettings, held: set[str]) -> LimitUsage:
    """The biggest group of correlated positions, signed by their correlation."""
    group_value, group_members = 0.0, ""
    for s in sorted(held):
        group = capital.correlated_group(s, ctx, settings)
        value = abs(
            sum(sign * (ctx.exposure(m) + ctx.pending_exposure(m)) for m, sign in group.items())
        )
        if len(group) > 1 and value > group_value:
            group_value, group_members = value, ", ".join(sorted(group))
    limit = settings.max_correlated_exposure * ctx.equity
    return _usage("correlated_exposure", group_value, limit, Unit.MONEY, group_members)


def _position_loss(ctx: RiskContext, settings: RiskSettings) -> LimitUsage:
    """The worst open loss of a single position at its last price."""
    worst, worst_symbol = 0.0, ""
    for s, pos in sorted(ctx.positions.items()):
        price = ctx.price(s)
        if pos.qty == 0 or price is None:
            continue
        loss = -(price - pos.avg_price) * pos.qty
        if loss > worst:
            worst, worst_symbol = loss, s
    limit = settings.max_position_loss * ctx.equity
    return _usage("position_loss", worst, limit, Unit.MONEY, worst_symbol)


def _activity_usage(ctx: RiskContext, settings: RiskSettings) -> list[LimitUsage]:
    """Today's trading activity: trades, losing streak, order rate and fill ratio."""
    return [
        _usage("trades_per_day", ctx.trades_today, settings.max_trades_per_day, Unit.COUNT),
        _usage(
            "consecutive_losses",
            ctx.consecutive_losses,
            settings.max_consecutive_losses,
            Unit.COUNT,
        ),
        _usage(
            "order_rate", len(limits.recent_orders(ctx)), settings.max_orders_per_minute, Unit.COUNT
        ),
        _usage(
            "order_fill_ratio",
            ctx.orders_today / max(ctx.fills_today, 1),
            settings.max_order_fill_ratio,
            Unit.RATIO,
            f"{ctx.orders_today} orders, {ctx.fills_today} fills",
        ),
    ]


def write_usage(db: Database, usages: Iterable[LimitUsage], now: int) -> None:
    """Overwrite the current figures; the caller's job commits."""
    replace_usage(
        db.conn, [(u.name, u.value, u.limit, u.unit.value, u.share, u.detail, now) for u in usages]
    )
