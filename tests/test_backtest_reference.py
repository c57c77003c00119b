"""The reference SMA cross on the engine's path agrees with backtesting.py, an
independent backtester, on the same data at zero costs."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.test import GOOG

from engine.backtest.run import BacktestConfig, run_backtest
from engine.config import load_settings
from tests.backtest_support import reference_risk, write_csv

FAST, SLOW, SIZE, CASH = 10, 30, 0.2, 100_000.0
ROWS = 400


class AlwaysInSmaCross(Strategy):
    """The same rule in backtesting.py: long above, short below, reverse on a cross,
    sized at SIZE of equity in whole shares, at the bar's close."""

    def init(self) -> None:
        pass

    def next(self) -> None:
        closes = self.data.Close
        if len(closes) < SLOW:
            return
        fast, slow = closes[-FAST:].mean(), closes[-SLOW:].mean()
        if fast == slow:
            return
        long = fast > slow
        if (self.position.is_long and long) or (self.position.is_short and not long):
            return
        qty = math.floor(self.equity * SIZE / closes[-1])
        self.position.close()
        (self.buy if long else self.sell)(size=qty)


def _theirs(frame: pd.DataFrame) -> tuple[list[tuple[str, int, int]], float]:
    bt = Backtest(frame, AlwaysInSmaCross, cash=CASH, commission=0, trade_on_close=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "trades remain open": the last one is, by design
        stats = bt.run()
    trades = stats["_trades"]
    rows = [
        (
            "BUY" if size > 0 else "SELL",
            int(pd.Timestamp(entry).tz_localize("UTC").timestamp() * 1000),
            int(pd.Timestamp(exit_).tz_localize("UTC").timestamp() * 1000),
        )
        for size, entry, exit_ in zip(
            trades["Size"], trades["EntryTime"], trades["ExitTime"], strict=True
        )
    ]
    return rows, float(stats["Equity Final [$]"])


def test_sma_cross_matches_backtesting_py_at_zero_costs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference_risk(monkeypatch)
    frame = GOOG.iloc[:ROWS]
    write_csv(tmp_path / "data", "GOOG", frame)
    ours = run_backtest(
        load_settings(),
        BacktestConfig(
            data_dir=tmp_path / "data",
            strategy="sma_cross",
            params={"fast": FAST, "slow": SLOW, "size": SIZE},
            cash=CASH,
            commission="none",
            slippage="none",
            risk_off=True,
        ),
    )
    theirs, their_equity = _theirs(frame)

    assert ours.rejected_bars == 0
    assert [(t["side"], t["entry_ts"], t["exit_ts"]) for t in ours.trades] == theirs
    assert len(theirs) >= 5
    assert ours.metrics["final_equity"] == pytest.approx(their_equity, rel=0.01)
