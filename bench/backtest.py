"""Backtest speed: bars per second through the engine's full path (gate, OMS,
paper broker, portfolio, monitor, metrics), against backtrader on the same SMA
cross in the same run, and with and without the ML model. No pass/fail; prints
figures: wall-clock bars/s (what a user waits) and bars per CPU-second (what the
code costs; steadier than the wall clock on a shared machine).

Data: 20 chained copies of backtesting.py's EURUSD hourly bars (100k bars), each
copy continuing from the previous close one hour later.

Runs:
- sma_cross without a model, twice (the trades must be identical), and the same
  cross on backtrader: the ratio is taken on this pair;
- the regime strategy on the rules alone, and on an ML model (trained here on
  simulated history; its predictions for the whole run are made in one batch).

    .venv/bin/python bench/backtest.py [COPIES]
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts the project on the path)
import pandas as pd

from engine.backtest.run import BacktestConfig, run_backtest
from engine.config import Settings, load_settings

FAST, SLOW, SIZE = 10, 30, 0.2
REFERENCE_RISK = {
    "trailing_stop": "off",
    "max_position_loss": 1,
    "max_atr_pct": 1,
    "daily_loss": 1,
    "max_drawdown": 1,
}


@dataclass
class Timed:
    wall: float
    cpu: float
    trades: list[tuple[str, int, int]]

    def rate(self, n: int) -> str:
        return f"{n / self.wall:7,.0f} bars/s ({n / self.cpu:7,.0f} per CPU-s, {self.wall:5.1f} s)"


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


def ours(settings: Settings, folder: Path, **config: Any) -> Timed:
    cfg = BacktestConfig(
        data_dir=folder, commission="none", slippage="none", risk_off=True, bar_interval="1h",
        **config,
    )  # fmt: skip
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_backtest(settings, cfg)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Timed(wall, cpu, [(t["side"], t["entry_ts"], t["exit_ts"]) for t in result.trades])


def theirs(frame: pd.DataFrame) -> Timed:
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
    wall, cpu = time.perf_counter(), time.process_time()
    cerebro.run()
    return Timed(time.perf_counter() - wall, time.process_time() - cpu, [])


def train_model(folder: Path) -> Path:
    """A small model on simulated hourly history: the bench measures its use, not its skill."""
    from engine.market.feeds import generate_history
    from engine.ml.train import TrainParams, train_on_history

    trained = train_on_history(
        generate_history(["A", "B", "C"], 3_000, seed=2, bar_ms=3_600_000),
        load_settings().ml,
        artifacts_dir=folder,
        now=1_767_225_600_000,
        params=TrainParams(n_folds=2, rounds=50),
    )
    return trained.path


def main() -> None:
    logging.disable(logging.WARNING)
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    frame = chained(copies)
    n = len(frame)
    print(f"bench/backtest.py: {n:,} hourly bars ({copies} chained copies of EURUSD), 1 symbol")
    import empyrical  # noqa: F401  (imported once, before the clock: it is not per bar)

    reference = load_settings(risk=REFERENCE_RISK)
    cross = {"strategy": "sma_cross", "params": {"fast": FAST, "slow": SLOW, "size": SIZE}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_csv(frame, folder)
        first = ours(reference, folder, **cross)
        second = ours(reference, folder, **cross)
        model = train_model(folder / "models")
        rules = ours(load_settings(), folder, strategy="regime")
        with_model = ours(load_settings(), folder, strategy="regime", model=str(model))
    bt = theirs(frame)
    best = min(first, second, key=lambda t: t.wall)
    print(f"  sma_cross, no model:       {first.rate(n)}, {len(first.trades)} trades")
    same = first.trades == second.trades
    print(f"  sma_cross, second run:     {second.rate(n)}; same trades: {same}")
    print(f"  regime, rules only:        {rules.rate(n)}, {len(rules.trades)} trades")
    print(f"  regime, with the ML model: {with_model.rate(n)}, {len(with_model.trades)} trades")
    print(f"  backtrader (sma cross):    {bt.rate(n)}")
    print(
        f"  engine / backtrader:       {bt.wall / best.wall:.2f}x wall,"
        f" {bt.cpu / min(first.cpu, second.cpu):.2f}x CPU (target >= 2x)"
    )


if __name__ == "__main__":
    main()
