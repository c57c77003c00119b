"""Helpers for the backtest tests: CSV folders and a settings environment in which
only the strategy decides exits (for comparisons with other backtesters)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

# The monitor's protective exits and the volatility filter are rules of this
# engine that a plain SMA cross in another tool does not have.
REFERENCE_RISK = {
    "COCKPIT_RISK__TRAILING_STOP": "off",
    "COCKPIT_RISK__MAX_POSITION_LOSS": "1",
    "COCKPIT_RISK__MAX_ATR_PCT": "1",
    "COCKPIT_RISK__DAILY_LOSS": "1",
    "COCKPIT_RISK__MAX_DRAWDOWN": "1",
}


def reference_risk(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REFERENCE_RISK.items():
        monkeypatch.setenv(name, value)


def write_csv(folder: Path, symbol: str, frame: pd.DataFrame) -> Path:
    """An OHLCV frame indexed by time, as SYMBOL.csv in the engine's format."""
    folder.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame(
        {
            "timestamp": [t.isoformat() for t in frame.index],
            "open": frame["Open"].to_numpy(),
            "high": frame["High"].to_numpy(),
            "low": frame["Low"].to_numpy(),
            "close": frame["Close"].to_numpy(),
            "volume": frame["Volume"].to_numpy(),
        }
    )
    path = folder / f"{symbol}.csv"
    out.to_csv(path, index=False)
    return path
