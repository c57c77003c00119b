"""Strategies by name or file: the README's example runs, a bad file says where,
and a strategy failing live costs one symbol's decision, not the cycle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.backtest.strategies import StrategyError, load_strategy
from engine.config import load_settings
from engine.decide.strategy import StrategyInput
from engine.domain import Intent
from engine.process.runner import Engine
from store.db import PROJECT_ROOT
from tests.conftest import engine_settings


def _readme_example(folder: Path) -> Path:
    text = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    [example] = [b for b in blocks if "def decide" in b]
    assert len(example.strip().splitlines()) <= 25
    path = folder / "rsi_reversion.py"
    path.write_text(example)
    return path


def test_the_readme_example_strategy_runs_and_trades(tmp_path: Path) -> None:
    path = _readme_example(tmp_path)
    result = run_backtest(
        load_settings(),
        BacktestConfig(
            sim_bars=400,
            symbols=("SIMA", "SIMB"),
            bar_interval="1h",
            strategy=f"{path}:RsiReversion",
            params={"low": 35},
            risk_off=True,
        ),
    )
    assert result.trades
    assert {o["purpose"] for o in result.orders} >= {"ENTRY"}
    assert any(o["reason"].startswith("RSI") for o in result.orders)


@pytest.mark.parametrize(
    ("source", "spec", "says"),
    [
        ("x = 1\ny = (\n", "Strat", r"{path}:2: SyntaxError"),
        ("import no_such_module_here\n", "Strat", r"{path}:1: ModuleNotFoundError"),
        ("class Other:\n    pass\n", "Strat", r"no class Strat; classes there: Other"),
        ("class Strat:\n    name = 's'\n", "Strat", r"{path}:1: class Strat has no decide"),
        (
            "class Strat:\n    def __init__(self, n=1):\n        pass\n"
            "    def decide(self, ctx):\n        return []\n",
            "Strat",
            r"unknown parameter\(s\) m; it takes: n",
        ),
    ],
)
def test_a_bad_strategy_file_is_refused_naming_file_and_line(
    tmp_path: Path, source: str, spec: str, says: str
) -> None:
    path = tmp_path / "strat.py"
    path.write_text(source)
    params = {"m": 2} if "unknown" in says else {}
    with pytest.raises(StrategyError, match=says.format(path=re.escape(str(path)))):
        load_strategy(f"{path}:{spec}", params, load_settings())


def test_a_missing_strategy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match="no such strategy file"):
        load_strategy(f"{tmp_path}/absent.py:X", {}, load_settings())


class _FailsOn:
    name = "fails_on"

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.asked: set[str] = set()

    def decide(self, ctx: StrategyInput) -> list[Intent]:
        if ctx.symbol == self.symbol:
            raise RuntimeError("bad arithmetic")
        self.asked.add(ctx.symbol)
        return []


def test_a_strategy_exception_live_is_contained_per_symbol_and_alerted(
    db_file, clock, open_engines
) -> None:
    eng = Engine(engine_settings(symbols=("AAA", "BBB")), db_file, clock=clock)
    trader = eng.open()
    open_engines.append(eng)
    strategy = _FailsOn("AAA")
    trader.strategy = strategy
    clock.advance(1000)
    [result] = eng.step()

    assert result.error is None
    assert strategy.asked == {"BBB"}
    row = trader.db.conn.execute(
        "SELECT severity, title, message FROM alerts WHERE source = 'strategy'"
    ).fetchone()
    assert row[0] == "HIGH" and "AAA" in row[1] and "bad arithmetic" in row[2]


def test_engine_strategy_in_the_configuration_runs_live(
    tmp_path: Path, db_file, clock, open_engines, monkeypatch
) -> None:
    path = _readme_example(tmp_path)
    monkeypatch.setenv("COCKPIT_ENGINE__STRATEGY", f"{path}:RsiReversion")
    monkeypatch.setenv("COCKPIT_ENGINE__STRATEGY_PARAMS", '{"low": 40}')
    eng = Engine(engine_settings(), db_file, clock=clock)
    trader = eng.open()
    open_engines.append(eng)
    assert trader.strategy.name == "rsi_reversion"
    assert trader.strategy.inner.low == 40  # type: ignore[attr-defined]
