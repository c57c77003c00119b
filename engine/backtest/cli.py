"""`python -m engine backtest` (and `python -m engine sweep`, registered by the
sweep module): runs in this process, never in the engine's, with a progress bar on
stderr.

Exit codes follow the engine CLI: 0 done, 1 failed, 2 bad input or configuration
(one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.backtest.data import MarketData
from engine.backtest.model import CHAMPION
from engine.backtest.run import BacktestConfig, BacktestError, BacktestResult
from engine.config import Settings, load_settings
from store.db import PROJECT_ROOT, db_path

OK, FAILED, USAGE = 0, 1, 2
log = logging.getLogger(__name__)


def param_value(text: str) -> float | int | bool | str:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def params_arg(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BacktestError(f"--param {item!r}: use KEY=VALUE, e.g. --param fast=10")
        out[key.strip()] = param_value(value.strip())
    return out


def _symbols(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(s.strip().upper() for s in text.split(",") if s.strip()) or None


def default_out_dir(settings: Settings) -> Path:
    return settings.backtest.out_dir or PROJECT_ROOT / "var" / "backtests"


def config_from_args(args: argparse.Namespace, settings: Settings) -> BacktestConfig:
    if args.data and args.sim:
        raise BacktestError("give --data DIR or --sim, not both")
    params = dict(settings.engine.strategy_params) if not args.strategy else {}
    params.update(params_arg(args.param))
    return BacktestConfig(
        data_dir=Path(args.data) if args.data else None,
        sim_bars=args.bars,
        symbols=_symbols(args.symbols),
        start=args.start,
        end=args.end,
        bar_interval=args.bar_interval,
        strategy=args.strategy or settings.engine.strategy,
        params=params,
        cash=args.cash,
        commission=args.commission,
        slippage=args.slippage,
        risk_off=args.risk_off,
        scenario=getattr(args, "scenario", None),
        model=args.model,
        model_db=str(db_path(args.db)) if args.model == CHAMPION else None,
    )


def _settings(args: argparse.Namespace) -> Settings:
    engine: dict[str, Any] = {}
    if args.seed is not None:
        engine["seed"] = args.seed
    return load_settings(engine=engine)


def _progress_bar(desc: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="bar", desc=desc, leave=False, mininterval=0.5)


def execute(
    args: argparse.Namespace,
    cfg: BacktestConfig | None = None,
    out_dir: Path | None = None,
    data: MarketData | None = None,
) -> BacktestResult:
    """Run and write one backtest from parsed arguments; raises BacktestError.

    A run launched by a command is recorded as running first, so the page can show
    its progress; a run from the command line is recorded once it is complete."""
    from engine.backtest.run import new_run_id, run_backtest, write_outputs
    from store import backtests as store

    settings = _settings(args)
    cfg = cfg or config_from_args(args, settings)
    data = data if data is not None else _load(settings, cfg)
    run_id = args.run_id or new_run_id(cfg, data)
    progress = _Progress(args, run_id)
    started = args.command_id is not None
    if started:
        _record_start(args, run_id, cfg, data, "")
    try:
        result = run_backtest(settings, cfg, data=data, progress=progress, run_id=run_id)
        out = out_dir or (Path(args.out) if args.out else default_out_dir(settings) / run_id)
        write_outputs(result, out)
    except BaseException as exc:
        if started:
            store.finish_run(args.db, run_id, None, str(exc))
        raise
    finally:
        progress.close()
    if started:
        store.set_out_dir(args.db, run_id, str(result.out))
    else:
        _record_start(args, run_id, cfg, data, str(result.out))
    store.finish_run(args.db, run_id, result.metrics)
    return result


def _load(settings: Settings, cfg: BacktestConfig) -> MarketData:
    from engine.backtest.run import load_data

    try:
        return load_data(settings, cfg)
    except ValueError as exc:  # DataError
        raise BacktestError(str(exc)) from None


def _record_start(
    args: argparse.Namespace, run_id: str, cfg: BacktestConfig, data: MarketData, out: str
) -> None:
    from store import backtests as store

    store.start_run(
        args.db, run_id, kind="backtest", strategy=cfg.strategy,
        symbols=",".join(data.symbols), out_dir=out, config=cfg.describe(),
        command_id=args.command_id,
    )  # fmt: skip


class _Progress:
    """A tqdm bar made on the first bar (so bad input prints one line), and, for a
    launched run, its progress in the store every 5%."""

    def __init__(self, args: argparse.Namespace, run_id: str) -> None:
        self.args, self.run_id = args, run_id
        self.bar: Any = None
        self.reported = 0.0

    def __call__(self, done: int, total: int) -> None:
        from store import backtests as store

        if self.bar is None:
            self.bar = _progress_bar("backtest", total)
        self.bar.update(done - self.bar.n)
        if self.args.command_id is not None and done / total - self.reported >= 0.05:
            self.reported = done / total
            store.set_progress(self.args.db, self.run_id, done / total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_backtest(args: argparse.Namespace) -> int:
    with quiet_engine_logs(args):
        return _backtest(args)


def _backtest(args: argparse.Namespace) -> int:
    if args.scenarios:
        return cmd_scenarios(args)
    try:
        result = execute(args)
    except BacktestError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return USAGE
    summary = {"run_id": result.run_id, "out": str(result.out), "metrics": result.metrics}
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(describe(result))
    return OK


@contextmanager
def quiet_engine_logs(args: argparse.Namespace) -> Iterator[None]:
    """A backtest raises many alerts a marathon would; they are in the report, not
    on the terminal (unless -v). The level is restored after the run."""
    logger = logging.getLogger("engine")
    level = logger.level
    if not getattr(args, "verbose", False):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def describe(result: BacktestResult) -> str:
    from engine.backtest.report import FIGURE_LABELS, fmt

    m = result.metrics
    lines = [f"backtest {result.run_id}: {result.out}"]
    for key in (
        "total_return",
        "cagr",
        "sharpe",
        "max_drawdown",
        "trades",
        "win_rate",
        "final_equity",
        "rejected_bars",
    ):
        label, kind = FIGURE_LABELS[key]
        lines.append(f"  {label:<28} {fmt(m.get(key), kind)}")
    if result.kill_switch_at:
        from engine.backtest.run import iso

        lines.append(f"  kill switch fired at {iso(result.kill_switch_at)}")
    lines.append(f"  {m.get('bars', 0):,} bars in {result.seconds:.1f} s")
    return "\n".join(lines)


def cmd_scenarios(args: argparse.Namespace) -> int:
    """The data as it is, then every synthetic scenario: one table, one folder each."""
    from dataclasses import replace

    from engine.backtest.report import STRESS_HEADERS, stress_row
    from engine.backtest.run import load_data
    from engine.backtest.scenarios import SYNTHETIC

    settings = _settings(args)
    try:
        cfg = config_from_args(args, settings)
        data = load_data(settings, cfg)
    except (BacktestError, ValueError) as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return USAGE
    base = Path(args.out) if args.out else default_out_dir(settings) / "scenarios"
    rows, summaries = [], []
    for name in [None, *SYNTHETIC]:
        label = name or "baseline"
        try:
            result = execute(args, replace(cfg, scenario=name), base / label, data)
        except BacktestError as exc:
            print(f"backtest: {label}: {exc}", file=sys.stderr)
            return USAGE
        row = stress_row(result)
        rows.append(row)
        summaries.append(
            {"scenario": label, "run_id": result.run_id, "out": str(result.out),
             "stress": dict(zip(STRESS_HEADERS, row, strict=True)), "metrics": result.metrics}
        )  # fmt: skip
    if args.json:
        print(json.dumps(summaries, default=str))
        return OK
    widths = [max(len(str(r[i])) for r in [STRESS_HEADERS, *rows]) for i in range(len(rows[0]))]
    for r in [STRESS_HEADERS, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"reports in {base}")
    return OK
