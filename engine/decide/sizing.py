"""Position sizing: how many units an entry should be, and why.

Three methods, each a pure function returning `Sizing(qty, details)`; the details
(method and every input) are recorded on the order so a size can be explained later.

- fixed fractional (default): risk a share of equity between entry and stop-loss.
- volatility-scaled: risk the same share over a multiple of ATR instead of the stop,
  so positions shrink when the market moves more.
- fractional Kelly: the risk share from the trade history's win rate and payoff,
  times a fraction, capped; fixed fractional until the history holds enough wins
  and enough losses (scratches are neither).

`size(settings, ...)` picks the configured method and applies the caps that the
gate would otherwise deny on (risk per trade, position quantity and notional, lot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from engine.config import RiskSettings


class Sizing(NamedTuple):
    qty: float
    details: dict[str, object]


def round_to_lot(qty: float, lot: float) -> float:
    """Down to a whole number of lots (never up: rounding must not add risk)."""
    if not math.isfinite(qty) or qty <= 0:
        return 0.0
    lots = math.floor(qty / lot + 1e-9)
    return lots * lot


def _valid(*values: float) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


def fixed_fractional(
    equity: float, entry: float, stop: float, risk_share: float, lot: float = 1.0
) -> Sizing:
    distance = abs(entry - stop)
    details: dict[str, object] = {
        "method": "fixed_fractional",
        "equity": equity,
        "entry": entry,
        "stop": stop,
        "risk_share": risk_share,
        "lot": lot,
    }
    if not _valid(equity, entry, stop, risk_share, distance):
        return Sizing(0.0, details | {"why": "no valid equity, entry or stop distance"})
    risk = risk_share * equity
    return Sizing(round_to_lot(risk / distance, lot), details | {"risk": risk})


def volatility_scaled(
    equity: float, atr: float, risk_share: float, atr_multiple: float, lot: float = 1.0
) -> Sizing:
    details: dict[str, object] = {
        "method": "volatility",
        "equity": equity,
        "atr": atr,
        "atr_multiple": atr_multiple,
        "risk_share": risk_share,
        "lot": lot,
    }
    if not _valid(equity, atr, risk_share, atr_multiple):
        return Sizing(0.0, details | {"why": "no valid equity or ATR"})
    risk = risk_share * equity
    return Sizing(round_to_lot(risk / (atr * atr_multiple), lot), details | {"risk": risk})


# A round trip within half a cent of zero is a scratch: neither a win nor a loss.
SCRATCH = 0.005


def outcomes(pnls: Sequence[float]) -> tuple[list[float], list[float]]:
    """The wins and the losses (as positive amounts) of a history; scratches and
    values that are not numbers count as neither."""
    wins = [p for p in pnls if math.isfinite(p) and p >= SCRATCH]
    losses = [-p for p in pnls if math.isfinite(p) and p <= -SCRATCH]
    return wins, losses


def kelly_share(pnls: Sequence[float]) -> tuple[float, float, float]:
    """Full-Kelly risk share f* = W - (1 - W) / R, with win rate W and payoff R over
    the wins and losses (scratches excluded).

    Returns (f*, W, R); f* <= 0 means the history shows no edge. Without both a win
    and a loss the payoff is unknown, and f* is 0: no evidence is no edge.
    """
    wins, losses = outcomes(pnls)
    decided = len(wins) + len(losses)
    if not decided:
        return 0.0, 0.0, 0.0
    w = len(wins) / decided
    if not wins or not losses:
        return 0.0, w, math.nan
    r = (sum(wins) / len(wins)) / (sum(losses) / len(losses))
    return w - (1 - w) / r, w, r


def kelly(
    equity: float,
    entry: float,
    stop: float,
    pnls: Sequence[float],
    *,
    fraction: float,
    cap: float,
    min_trades: int,
    fallback_share: float,
    lot: float = 1.0,
    min_each: int = 1,
) -> Sizing:
    """Fractional Kelly on the stop distance, at most `cap`. Fixed fractional until
    the history holds `min_trades` wins and losses together and `min_each` of
    each: a win rate from a history without losses is not an edge."""
    wins, losses = outcomes(pnls)
    decided = len(wins) + len(losses)
    if decided < min_trades or min(len(wins), len(losses)) < min_each:
        base = fixed_fractional(equity, entry, stop, min(fallback_share, cap), lot)
        why = (
            f"{len(wins)} wins and {len(losses)} losses (scratches excluded); Kelly needs"
            f" {min_trades} together and {min_each} of each: fixed fractional"
        )
        return Sizing(base.qty, base.details | {"method": "kelly", "fallback": why})
    full, win_rate, payoff = kelly_share(pnls)
    share = min(max(full * fraction, 0.0), cap)
    base = fixed_fractional(equity, entry, stop, share, lot)
    stats = {
        "method": "kelly",
        "trades": len(pnls),
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": win_rate,
        "payoff": payoff,
        "kelly_full": full,
        "kelly_fraction": fraction,
        "cap": cap,
    }
    if share <= 0:
        return Sizing(0.0, base.details | stats | {"why": "no edge in the trade history"})
    return Sizing(base.qty, base.details | stats)


def size(
    settings: RiskSettings,
    *,
    equity: float,
    entry: float,
    stop: float,
    atr: float | None = None,
    pnls: Sequence[float] = (),
    symbol: str = "",
) -> Sizing:
    """The configured method's size, capped so the gate's size limits hold."""
    lot = settings.lot_sizes.get(symbol.upper(), settings.lot_size)
    if settings.sizing == "volatility" and atr is not None:
        result = volatility_scaled(
            equity, atr, settings.risk_per_trade, settings.vol_atr_multiple, lot
        )
    elif settings.sizing == "kelly":
        result = kelly(
            equity,
            entry,
            stop,
            pnls,
            fraction=settings.kelly_fraction,
            cap=min(settings.kelly_cap, settings.risk_per_trade),
            min_trades=settings.kelly_min_trades,
            fallback_share=settings.risk_per_trade,
            lot=lot,
            min_each=settings.kelly_min_wins_losses,
        )
    else:
        result = fixed_fractional(equity, entry, stop, settings.risk_per_trade, lot)
    qty, details = result
    caps = {"max_position_qty": settings.max_position_qty}
    if _valid(entry, equity):
        caps["max_position_notional"] = settings.max_position_notional * equity / entry
    distance = abs(entry - stop)
    if _valid(distance, equity):
        caps["risk_per_trade"] = settings.risk_per_trade * equity / distance
    for name, limit in caps.items():
        capped = round_to_lot(limit, lot)
        if qty > capped:
            qty = capped
            details = details | {"capped_by": name}
    return Sizing(qty, details | {"qty": qty})
