"""Performance figures equal empyrical-reloaded's on the same daily returns, and the
Marathon page's ratio is the same function on trading days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import empyrical
import numpy as np
import pandas as pd
import pytest

from cockpit import marathon_views
from engine.backtest import metrics
from store.db import open_writer

DAY_MS = 86_400_000


def _weekday_marks(days: int, seed: int = 3) -> tuple[list[int], list[float]]:
    rng = np.random.default_rng(seed)
    ts, equity, value = [], [], 100_000.0
    day = datetime(2026, 1, 5, 21, tzinfo=UTC)  # a Monday, after the close
    while len(ts) < days:
        if day.weekday() < 5:
            value *= 1 + rng.normal(0.001, 0.01)
            ts.append(int(day.timestamp() * 1000))
            equity.append(value)
        day += timedelta(days=1)
    return ts, equity


def test_return_figures_equal_empyrical_on_the_same_daily_returns() -> None:
    ts, equity = _weekday_marks(300)
    returns = metrics.daily_returns(ts, equity, 100_000.0)
    figures = metrics.return_metrics(returns)

    assert len(returns) == 300  # weekends are not days of returns
    assert figures["sharpe"] == pytest.approx(empyrical.sharpe_ratio(returns))
    assert figures["sortino"] == pytest.approx(empyrical.sortino_ratio(returns))
    assert figures["calmar"] == pytest.approx(empyrical.calmar_ratio(returns))
    assert figures["cagr"] == pytest.approx(empyrical.annual_return(returns))
    assert figures["annual_volatility"] == pytest.approx(empyrical.annual_volatility(returns))
    assert figures["max_drawdown"] == pytest.approx(empyrical.max_drawdown(returns))
    assert figures["total_return"] == pytest.approx(equity[-1] / 100_000.0 - 1)


def test_drawdown_duration_counts_trading_days_below_the_peak() -> None:
    returns = pd.Series([0.1, -0.05, 0.01, 0.01, 0.05, -0.01])
    # below the peak after day 1 until day 4 recovers it: days 2, 3, 4; then day 6
    assert metrics.drawdown_duration_days(returns) == 3


def test_marathon_ratio_uses_trading_days_and_the_backtester_function(tmp_path: Path) -> None:
    ts, equity = _weekday_marks(84)
    path = tmp_path / "cockpit.db"
    writer = open_writer(path)
    writer.conn.executemany(
        "INSERT INTO equity (ts, cash, equity, peak, drawdown) VALUES (?, ?, ?, 0, 0)",
        [(t, e, e) for t, e in zip(ts, equity, strict=True)],
    )
    writer.conn.commit()
    writer.conn.close()

    daily = marathon_views.pnl_per_day(path)
    ratio = marathon_views.sharpe_like(daily["ret"].astype(float).tolist())

    assert len(daily) == 84  # the weekend days between the marks are not zero-return days
    # the first day opens at its own (only) mark: a zero return, then close to close
    expected = empyrical.sharpe_ratio(pd.Series(equity).pct_change().fillna(0.0))
    assert ratio == pytest.approx(expected, rel=1e-9)


def test_trade_figures_from_round_trips() -> None:
    trips = [
        metrics.RoundTrip(100.0, 0, 3_600_000, 1_000.0),
        metrics.RoundTrip(-50.0, 0, 7_200_000, 1_000.0),
        metrics.RoundTrip(30.0, 0, 3_600_000, 1_000.0),
    ]
    figures = metrics.trade_metrics(trips, mean_equity=10_000.0, years=1.0)
    assert figures["win_rate"] == pytest.approx(2 / 3)
    assert figures["profit_factor"] == pytest.approx(130 / 50)
    assert figures["expectancy"] == pytest.approx(80 / 3)
    assert figures["avg_holding_hours"] == pytest.approx(4 / 3)
    assert figures["turnover"] == pytest.approx(0.3)
