"""Stops and targets in a backtest are the live path's resting bracket: a STOP and a
LIMIT at the paper broker that name the entry and share an OCO group, filled where
a bar's range crosses them (a gap through the stop fills at the open), and the
other side canceled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.config import load_settings
from tests.backtest_support import write_csv

ENTRY_BAR = 40  # the strategy buys at this bar's close (100), stop 95, target 110
STRATEGY = '''
from engine.domain import Intent, Purpose, Side


class OneEntry:
    """Buys once, at the close of bar {entry}, with a stop and a target; never exits."""

    name = "one_entry"

    def __init__(self):
        self.bars = 0

    def decide(self, ctx):
        self.bars += 1
        if self.bars != {entry} or ctx.position is not None:
            return []
        close = ctx.snap.close
        return [Intent(ctx.symbol, Side.BUY, 100, Purpose.ENTRY,
                       stop_loss=close - 5, take_profit=close + 10, reason="one entry")]
'''.replace("{entry}", str(ENTRY_BAR))


def _bars(test_bar: tuple[float, float, float, float]) -> pd.DataFrame:
    """Flat bars around 100 (range 2), then `test_bar` as (open, high, low, close),
    then flat bars at its close."""
    rows = [(100.0, 101.0, 99.0, 100.0)] * (ENTRY_BAR + 2)
    rows += [test_bar] + [(test_bar[3], test_bar[3] + 1, test_bar[3] - 1, test_bar[3])] * 3
    index = pd.date_range("2024-01-01", periods=len(rows), freq="1h")
    frame = pd.DataFrame(rows, columns=["Open", "High", "Low", "Close"], index=index)
    frame["Volume"] = 1_000_000.0
    return frame


def _run(tmp_path: Path, test_bar: tuple[float, float, float, float]) -> tuple[list, list]:
    write_csv(tmp_path / "data", "AAA", _bars(test_bar))
    strategy = tmp_path / "one_entry.py"
    strategy.write_text(STRATEGY)
    cfg = BacktestConfig(
        data_dir=tmp_path / "data",
        bar_interval="1h",
        strategy=f"{strategy}:OneEntry",
        commission="none",
        slippage="none",
        risk_off=True,
        overrides={"risk.trailing_stop": "off", "risk.max_position_loss": 1.0},
    )
    result = run_backtest(load_settings(), cfg)
    return result.trades, result.orders


TEST_BAR_TS = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=ENTRY_BAR + 2)


@pytest.mark.parametrize(
    ("test_bar", "expected"),
    [
        ((98.0, 99.0, 94.0, 96.0), ("stop", 95.0, "STOP", "LIMIT")),  # crosses the stop
        ((91.0, 92.0, 90.0, 91.0), ("stop", 91.0, "STOP", "LIMIT")),  # gaps through it
        ((104.0, 112.0, 103.0, 109.0), ("target", 110.0, "LIMIT", "STOP")),  # trades through
        ((111.0, 113.0, 110.5, 112.0), ("target", 111.0, "LIMIT", "STOP")),  # gaps past it
    ],
)
def test_a_protected_entry_rests_a_bracket_that_fills_where_the_bar_crosses_it(
    tmp_path: Path,
    test_bar: tuple[float, float, float, float],
    expected: tuple[str, float, str, str],
) -> None:
    reason, price, filled, canceled = expected
    trades, orders = _run(tmp_path, test_bar)
    [trade] = trades
    assert (trade["side"], trade["entry_price"]) == ("BUY", 100.0)
    assert (trade["exit_reason"], trade["exit_price"]) == (reason, price)
    assert (trade["stop"], trade["target"]) == (95.0, 110.0)
    assert trade["exit_ts"] == int(TEST_BAR_TS.timestamp() * 1000)
    entry, *children = orders
    assert (entry["type"], entry["purpose"], entry["status"]) == ("MARKET", "ENTRY", "FILLED")
    legs = {o["type"]: o for o in children}
    assert sorted(legs) == ["LIMIT", "STOP"] and len(children) == 2  # resting, not market
    assert all(o["purpose"] == "EXIT" and o["qty"] == trade["qty"] for o in children)
    assert legs[filled]["status"] == "FILLED" and legs[filled]["avg_price"] == price
    assert legs[canceled]["status"] == "CANCELED"  # one cancels the other


def test_a_bar_that_never_reaches_either_side_leaves_both_resting(tmp_path: Path) -> None:
    trades, orders = _run(tmp_path, (100.0, 105.0, 96.0, 101.0))
    assert trades == []
    legs = {o["type"]: o["status"] for o in orders[1:]}
    assert legs == {"STOP": "ACCEPTED", "LIMIT": "ACCEPTED"}
