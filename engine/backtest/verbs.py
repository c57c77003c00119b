"""The `backtest` and `sweep` verbs' arguments. Their handlers (`cli`, `sweep`) are
imported only when one of them runs, so every other verb, `run` included, starts
without the backtester's imports (pandas among them).
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.ml.cli import _time_arg
from engine.process.deferred import deferred

METRICS = (
    "sharpe", "sortino", "calmar", "total_return", "cagr", "max_drawdown",
    "profit_factor", "win_rate", "expectancy", "final_equity",
)  # fmt: skip


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="state database the run is recorded in (default var/cockpit.db)")
    source = p.add_argument_group("data")
    source.add_argument("--data", help="folder of SYMBOL.csv files")
    source.add_argument("--sim", action="store_true", help="simulated history (the default)")
    source.add_argument("--bars", type=int, default=2_000, help="simulated bars per symbol")
    source.add_argument("--seed", type=int, help="seed of the simulated market")
    source.add_argument("--symbols", help="A,B,... (default: every file, or one simulated)")
    source.add_argument("--from", dest="start", type=_time_arg, help="first bar (ISO date)")
    source.add_argument("--to", dest="end", type=_time_arg, help="last bar (ISO date)")
    source.add_argument("--bar-interval", help="1m, 5m, 15m, 30m, 1h, 4h, 1d")
    p.add_argument("--strategy", help="regime (default), sma_cross, or path/file.py:ClassName")
    p.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="strategy parameter (repeatable)"
    )
    p.add_argument("--cash", type=float, help="starting cash (default engine.starting_cash)")
    p.add_argument("--commission", help="none | per-share:RATE[:MIN] | bps:RATE[:MIN]")
    p.add_argument("--slippage", help="none | bps:N | spread:N | volume:SHARE | paper")
    p.add_argument("--risk-off", action="store_true", help="lift the discretionary limits")
    p.add_argument(
        "--model",
        help="trade on an ML model: champion (the state store's) or a model's model.json",
    )


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "backtest",
        help="run a strategy over history on the engine's own code path",
        description="Backtest on the live Trader: same strategy, sizing, risk gate, monitor,"
        " OMS, paper broker and portfolio, stepped on market time.",
    )
    add_data_options(p)
    p.add_argument("--out", help="output folder (default var/backtests/RUN_ID)")
    p.add_argument("--json", action="store_true", help='print {"run_id", "out", "metrics"}')
    stress = p.add_mutually_exclusive_group()
    stress.add_argument(
        "--scenario", help="gap, vol3, flash, drought, whipsaw, gfc, covid, or YYYY-MM:YYYY-MM"
    )
    stress.add_argument(
        "--scenarios", choices=["all"], help="the data as it is and every synthetic scenario"
    )
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--command-id", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=deferred("engine.backtest.cli:cmd_backtest"))
    register_sweep(subparsers)


def register_sweep(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="parameter sweep or walk-forward optimisation over backtests",
        description="Grid or random search over strategy (KEY) and settings (risk.KEY,"
        " paper.KEY) parameters; --walk-forward K optimises in-sample and trades out-of-sample.",
    )
    add_data_options(p)
    p.add_argument("--metric", default="sharpe", choices=METRICS, help="what to maximise")
    p.add_argument("--random", type=int, metavar="N", help="sample N points of the grid")
    p.add_argument("--walk-forward", type=int, metavar="K", help="K in-/out-of-sample folds")
    p.add_argument("--workers", type=int, help="local processes (default backtest.workers)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on this Ray cluster instead")
    p.add_argument("--out", help="output folder (default var/backtests/sweep-RUN_ID)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--command-id", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=deferred("engine.backtest.sweep:cmd_sweep"))
