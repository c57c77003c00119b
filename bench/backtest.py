"""Backtest speed: bars per second through the engine's full path (gate, OMS,
paper broker, portfolio, monitor, metrics), against backtrader on the same SMA
cross in the same run. No pass/fail; prints figures.

Data: 20 chained copies of backtesting.py's EURUSD hourly bars (100k bars), each
copy continuing from the previous close one hour later.

    .venv/bin/python bench/backtest.py [COPIES]
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on the path)
import pandas as pd

from engine.backtest.run import BacktestConfig, run_backtest
from engine.config import load_settings

FAST, SLOW, SIZE = 10, 30, 0.2


def chained(copies: int) -> pd.DataFrame:
    from backtesting.test import EURUSD

    parts, scale, start = [], 1.0, EURUSD.index[0]
    step = pd.Timedelta(hours=1)
    for i in range(copies):
        part = EURUSD[["Open", "High", "Low", "Close", "Volume"]].copy()
        part[["Open", "High", "Low", "Close"]] *= scale
        part.index = pd.date_range(start + i * len(EURUSD) * step, periods=len(part), freq="1h")
        scale = part["Close"].iloc[-1] / EURUSD["Close"].iloc[0]
        parts.append(part)
    frame = pd.concat(parts)
    frame["Volume"] = frame["Volume"].clip(lower=1) * 1_000_000  # volume never caps an order
    return frame


def write_csv(frame: pd.DataFrame, folder: Path) -> None:
    out = pd.DataFrame(
        {
            "timestamp": [t.isoformat() for t in frame.index],
            "open": frame["Open"],
            "high": frame["High"],
            "low": frame["Low"],
            "close": frame["Close"],
            "volume": frame["Volume"],
        }
    )
    out.to_csv(folder / "EURUSD.csv", index=False)


def ours(folder: Path) -> tuple[float, list[tuple[str, int, int]]]:
    settings = load_settings(
        risk={"trailing_stop": "off", "max_position_loss": 1, "max_atr_pct": 1,
              "daily_loss": 1, "max_drawdown": 1}
    )  # fmt: skip
    cfg = BacktestConfig(
        data_dir=folder, strategy="sma_cross", params={"fast": FAST, "slow": SLOW, "size": SIZE},
        commission="none", slippage="none", risk_off=True, bar_interval="1h",
    )  # fmt: skip
    started = time.perf_counter()
    result = run_backtest(settings, cfg)
    seconds = time.perf_counter() - started
    trades = [(t["side"], t["entry_ts"], t["exit_ts"]) for t in result.trades]
    return seconds, trades


def theirs(frame: pd.DataFrame) -> float:
    import backtrader as bt

    class Cross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.fast = bt.indicators.SMA(self.data.close, period=FAST)
            self.slow = bt.indicators.SMA(self.data.close, period=SLOW)

        def next(self) -> None:
            long = self.fast[0] > self.slow[0]
            held = self.position.size
            if (held > 0 and long) or (held < 0 and not long) or self.fast[0] == self.slow[0]:
                return
            qty = math.floor(self.broker.getvalue() * SIZE / self.data.close[0])
            self.close()
            (self.buy if long else self.sell)(size=qty)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.set_coc(True)  # fill at the signal bar's close, as the paper broker does
    cerebro.broker.setcash(100_000.0)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame))
    cerebro.addstrategy(Cross)
    started = time.perf_counter()
    cerebro.run()
    return time.perf_counter() - started


def main() -> None:
    logging.disable(logging.WARNING)
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    frame = chained(copies)
    n = len(frame)
    print(f"bench/backtest.py: {n:,} hourly bars ({copies} chained copies of EURUSD), 1 symbol")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_csv(frame, folder)
        ours_s, trades = ours(folder)
        again_s, trades_again = ours(folder)
    bt_s = theirs(frame)
    rate, again = n / ours_s, n / again_s
    print(f"  engine, rules (no model): {rate:,.0f} bars/s ({ours_s:.1f} s), {len(trades)} trades")
    print(f"  engine, second run:       {again:,.0f} bars/s; same trades: {trades == trades_again}")
    print("  engine, with the ML model: not measured (backtests run on rules only so far)")
    print(f"  backtrader:               {n / bt_s:,.0f} bars/s ({bt_s:.1f} s)")
    print(f"  engine / backtrader:      {bt_s / min(ours_s, again_s):.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
