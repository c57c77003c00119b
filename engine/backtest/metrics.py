"""Performance figures of an equity curve and its round trips.

Return figures are computed on *daily* returns with empyrical-reloaded's
functions, annualised with 252 periods a year. A day is a trading day: a day on
which the equity was marked (market time), so weekends and holidays without bars
are not zero-return days that would shrink the volatility and the ratios. The
Marathon page calls `daily_returns` and `sharpe` here for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

PERIODS_PER_YEAR = 252
ANNUALISATION = "daily returns on trading days (days with marks), annualised with 252 periods"
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class RoundTrip:
    pnl: float
    entry_ts: int
    exit_ts: int
    notional: float  # entry plus exit value, for turnover


def daily_returns(ts_ms: Sequence[int], equity: Sequence[float], start_equity: float) -> pd.Series:
    """Close-to-close returns of the last mark of each UTC trading day, the first day
    measured from `start_equity`; indexed by the day (UTC midnight)."""
    if len(ts_ms) == 0:
        return pd.Series(dtype="float64")
    marks = pd.Series(
        np.asarray(equity, dtype="float64"),
        index=pd.to_datetime(np.asarray(ts_ms, dtype="int64"), unit="ms", utc=True),
    )
    days = pd.DatetimeIndex(marks.index).normalize()
    closes = marks.groupby(days).last()
    previous = closes.shift(1)
    previous.iloc[0] = start_equity
    return (closes / previous - 1.0).astype("float64")


def sharpe(returns: pd.Series) -> float | None:
    """Annualised Sharpe ratio of daily returns (risk-free 0); None below two days or
    without variation."""
    import empyrical  # half a second of scipy: paid where a ratio is computed, not per CLI start

    clean = returns.dropna()
    if len(clean) < 2 or float(clean.std(ddof=1)) == 0:
        return None
    return _finite(empyrical.sharpe_ratio(clean, period=empyrical.DAILY))


def _finite(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def drawdown_duration_days(returns: pd.Series) -> int:
    """The longest run of trading days spent below a previous equity peak."""
    wealth = (1.0 + returns.fillna(0.0)).cumprod().to_numpy()
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    longest = run = 0
    for below in wealth < peak - 1e-12:
        run = run + 1 if below else 0
        longest = max(longest, run)
    return longest


def return_metrics(returns: pd.Series) -> dict[str, float | int | None]:
    import empyrical

    r = returns.dropna()
    if r.empty:
        return {"days": 0}
    return {
        "days": len(r),
        "total_return": _finite(empyrical.cum_returns_final(r)),
        "cagr": _finite(empyrical.annual_return(r, period=empyrical.DAILY)),
        "annual_volatility": _finite(empyrical.annual_volatility(r, period=empyrical.DAILY)),
        "sharpe": sharpe(r),
        "sortino": _finite(empyrical.sortino_ratio(r, period=empyrical.DAILY)),
        "calmar": _finite(empyrical.calmar_ratio(r, period=empyrical.DAILY)),
        "max_drawdown": _finite(empyrical.max_drawdown(r)),
        "max_drawdown_days": drawdown_duration_days(r),
        "worst_day": _finite(r.min()),
        "best_day": _finite(r.max()),
    }


def trade_metrics(trips: Sequence[RoundTrip], mean_equity: float, years: float) -> dict[str, Any]:
    pnls = np.array([t.pnl for t in trips], dtype="float64")
    wins, losses = pnls[pnls > 0], pnls[pnls <= 0]
    gross_loss = float(-losses.sum())
    holding = [(t.exit_ts - t.entry_ts) / HOUR_MS for t in trips]
    traded = sum(t.notional for t in trips)
    return {
        "trades": len(trips),
        "win_rate": len(wins) / len(pnls) if len(pnls) else None,
        "profit_factor": float(wins.sum()) / gross_loss if gross_loss > 0 else None,
        "expectancy": float(pnls.mean()) if len(pnls) else None,
        "avg_win": float(wins.mean()) if len(wins) else None,
        "avg_loss": float(losses.mean()) if len(losses) else None,
        "avg_holding_hours": float(np.mean(holding)) if holding else None,
        "turnover": traded / mean_equity / years if mean_equity > 0 and years > 0 else None,
    }


def compute(
    ts_ms: Sequence[int],
    equity: Sequence[float],
    exposed: Sequence[bool],
    start_equity: float,
    trips: Sequence[RoundTrip],
) -> dict[str, Any]:
    """Every figure of a run, with the annualisation stated."""
    returns = daily_returns(ts_ms, equity, start_equity)
    years = len(returns) / PERIODS_PER_YEAR
    out: dict[str, Any] = {"annualisation": ANNUALISATION, "bars": len(ts_ms)}
    out.update(return_metrics(returns))
    out["final_equity"] = float(equity[-1]) if len(equity) else start_equity
    out["exposure"] = float(np.mean(exposed)) if len(exposed) else None
    out.update(trade_metrics(trips, float(np.mean(equity)) if len(equity) else 0.0, years))
    return out
