"""One backtest: the live `Trader` stepped over history on market time.

The trader runs on an in-memory SQLite state store with the full schema, so every
rule reads and writes exactly what it does live; the clock it is given returns the
time of the bars being processed. After each cycle the monitor steps once, so the
kill switch, pauses and protective exits act between bars as they do between live
cycles. The run's outputs are read back from that store at the end and written to
a temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pandas as pd
from pydantic import ValidationError
from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.backtest import metrics
from engine.backtest.costs import CostSpecError, paper_settings
from engine.backtest.data import (
    DataError,
    MarketData,
    ReplayFeed,
    infer_interval_ms,
    interval_ms,
    interval_text,
    load_csv,
    simulate,
    split,
)
from engine.backtest.model import BatchModel, ModelError, load_model
from engine.backtest.precomputed import PrecomputedFeatures, accepted, precompute
from engine.backtest.scenarios import (
    ScenarioError,
    StressFigures,
    scenario,
    stress_figures,
    strike_time,
)
from engine.backtest.strategies import GuardedStrategy, StrategyError, load_strategy
from engine.config import RiskSettings, Settings
from engine.cycle import Trader
from engine.decide.strategy import Strategy
from engine.domain import Bar
from engine.execution.brokers.paper import PaperBroker
from engine.market.feeds import default_symbols
from engine.ml.artifact import LoadedModel
from store import backtests as outcome
from store.alerts import first_emergency_stop
from store.db import PROJECT_ROOT
from store.schema import migrate
from store.writebehind import WriteBehind

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

# The discretionary limits --risk-off lifts (a stop on every entry among them);
# price sanity, buying power, position bounds, exposure, the kill switch and protective exits stay.
RISK_OFF = {
    "max_trades_per_day": 1_000_000_000,
    "max_consecutive_losses": 1_000_000_000,
    "cooldown_minutes": 0.0,
    "min_reward_risk": 0.0,
    "require_stop": False,
}


class BacktestError(Exception):
    """The backtest cannot run or failed; the message is the one line to show."""


@dataclass(frozen=True)
class BacktestConfig:
    data_dir: Path | None = None
    sim_bars: int = 2_000  # per symbol, when there is no data_dir
    symbols: tuple[str, ...] | None = None
    start: int | None = None  # epoch ms, inclusive
    end: int | None = None
    bar_interval: str | None = None  # "1d", ...; inferred from the data when None
    strategy: str = "regime"
    params: Mapping[str, Any] = field(default_factory=dict)
    cash: float | None = None
    commission: str | None = None
    slippage: str | None = None
    risk_off: bool = False
    scenario: str | None = None  # a stress scenario or historical window (scenarios.py)
    model: str | None = None  # "champion" or a model's sidecar file (engine.backtest.model)
    model_db: str | None = None  # the state store the champion is taken from
    overrides: Mapping[str, Any] = field(default_factory=dict)  # "risk.KEY" / "paper.KEY"

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"] = str(self.data_dir) if self.data_dir else None
        out["params"] = dict(self.params)
        out["overrides"] = dict(self.overrides)
        return out


@dataclass
class BacktestResult:
    run_id: str
    config: BacktestConfig
    settings: Settings
    metrics: dict[str, Any]
    equity: list[dict[str, Any]]
    trades: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    bars: dict[str, list[Bar]]
    regimes: list[tuple[str, int, str]]  # symbol, ts, regime
    data_sha256: dict[str, str]
    rejected_bars: int
    kill_switch_at: int | None
    seconds: float
    out: Path | None = None
    strike: int | None = None  # when a synthetic stress scenario struck
    stress: StressFigures | None = None


class MarketClock:
    """The time of the bars being processed; the backtest moves it."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _section(model: Any, update: Mapping[str, Any]) -> Any:
    return type(model).model_validate({**model.model_dump(), **update})


def backtest_settings(
    base: Settings, cfg: BacktestConfig, symbols: tuple[str, ...], bar_ms: int
) -> Settings:
    try:
        paper = paper_settings(base.paper, cfg.commission, cfg.slippage)
    except CostSpecError as exc:
        raise BacktestError(str(exc)) from None
    risk: RiskSettings = _section(base.risk, RISK_OFF) if cfg.risk_off else base.risk
    sections: dict[str, dict[str, Any]] = {"risk": {}, "paper": {}}
    for key, value in cfg.overrides.items():
        section, _, name = key.partition(".")
        if section not in sections or not name:
            raise BacktestError(f"{key!r}: sweep settings as risk.KEY or paper.KEY")
        sections[section][name] = value
    try:
        risk = _section(risk, sections["risk"])
        paper = _section(paper, sections["paper"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BacktestError(f"{where} = {first.get('input')!r}: {first['msg']}") from None
    engine = _section(
        base.engine,
        {
            "symbols": symbols,
            "bar_interval": interval_text(bar_ms),
            "speed": "max",
            "starting_cash": cfg.cash if cfg.cash is not None else base.engine.starting_cash,
            "feed": "sim" if cfg.data_dir is None else "csv",
            "data_dir": cfg.data_dir,
        },
    )
    ml = _section(base.ml, {"enabled": False, "bootstrap": False})
    return base.model_copy(update={"engine": engine, "paper": paper, "risk": risk, "ml": ml})


def load_data(base: Settings, cfg: BacktestConfig) -> MarketData:
    if cfg.data_dir is not None:
        bar_ms = interval_ms(cfg.bar_interval) if cfg.bar_interval else None
        return load_csv(cfg.data_dir, cfg.symbols, bar_ms)
    bar_ms = interval_ms(cfg.bar_interval or "1d")
    symbols = cfg.symbols or default_symbols(
        base.engine.symbols if isinstance(base.engine.symbols, int) else 1
    )
    return simulate(symbols, cfg.sim_bars, base.engine.seed, bar_ms)


def code_version() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() or "unknown"


def new_run_id(cfg: BacktestConfig, data: MarketData) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    digest = hashlib.sha256(
        json.dumps(
            [cfg.describe(), data.sha256, data.source, os.getpid(), time.time_ns()],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:6]
    return f"{stamp}-{digest}"


# Tables the Trader writes every bar and nothing reads back within a bar: their
# writes wait in memory and reach SQLite in batches (store.writebehind).
WRITE_BEHIND = (
    "bars",
    "regimes",
    "equity",
    "positions",
    "cycles",
    "engine",
    "risk_usage",
    "order_events",
    "paper_bars",
    "paper_positions",
    "paper_account",
    "paper_executions",
)

# Tables nothing but the Trader writes during a run (no operator queues commands
# into a backtest): their reads are remembered until the Trader touches them.
QUIET = ("commands",)


def _in_memory_store() -> Database:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    migrate(Database(conn))
    return Database(cast(sqlite3.Connection, WriteBehind(conn, WRITE_BEHIND, QUIET)))


def precomputed(
    trader: Trader,
    history: Mapping[str, list[Bar]],
    traded: Mapping[str, list[Bar]],
    model: LoadedModel | None,
) -> None:
    """Hand the started Trader the run's indicators, feature rows and model
    predictions, computed in one vectorised pass (engine.backtest.precomputed)."""
    series = precompute(
        history, accepted(trader.market.validator, traded), features=model is not None
    )
    cursors: dict[str, PrecomputedFeatures] = {}
    for symbol, one in series.items():
        trader.market.indicators[symbol] = one.indicators()
        trader.market.live_features[symbol] = features = one.live_features()
        cursors[symbol] = features
    if model is not None:
        rows = {s: one.features for s, one in series.items() if one.features is not None}
        trader.model = BatchModel(model, rows, cursors)


@dataclass(frozen=True)
class _Prepared:
    """What a run trades: its settings, the bars before and in its range, and how."""

    data: MarketData
    settings: Settings
    history: dict[str, list[Bar]]
    traded: dict[str, list[Bar]]
    strategy: Strategy
    model: LoadedModel | None
    strike: int | None  # when a synthetic stress scenario strikes


def _prepare(base: Settings, cfg: BacktestConfig, data: MarketData | None) -> _Prepared:
    try:
        data = data if data is not None else load_data(base, cfg)
        bar_ms = interval_ms(cfg.bar_interval) if cfg.bar_interval else infer_interval_ms(data.bars)
        settings = backtest_settings(base, cfg, data.symbols, bar_ms)
        stress = scenario(cfg.scenario) if cfg.scenario else None
        start, end = cfg.start, cfg.end
        if stress is not None and stress.transform is None:
            start, end = stress.start, stress.end
        history, traded = split(data, start, end, settings.engine.warmup_bars)
        strike = None
        if stress is not None and stress.transform is not None:
            strike = strike_time(traded)
            traded = stress.transform(traded, strike)
        strategy = load_strategy(cfg.strategy, cfg.params, settings)
        model = load_model(cfg.model, cfg.model_db) if cfg.model else None
    except (DataError, StrategyError, ScenarioError, ModelError) as exc:
        raise BacktestError(str(exc)) from None
    return _Prepared(data, settings, history, traded, strategy, model, strike)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block, then one collection.

    A run allocates a few objects per bar that live on (its bars, snapshots, rows
    and results) among many that die at once, so the collector ran about 1,250
    times in 50,000 bars, each pass walking the survivors again: 6% of the run,
    for no garbage (a run leaves no reference cycles to free). One collection at
    the end walks them once and frees any cycle after all. The switch is the
    process's: nested blocks leave it to the outermost, and a backtest runs in a
    process of its own (the CLI, a sweep's worker, the cockpit's launch)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)


def run_backtest(
    base: Settings,
    cfg: BacktestConfig,
    *,
    data: MarketData | None = None,
    progress: ProgressFn | None = None,
    run_id: str | None = None,
) -> BacktestResult:
    """Run one backtest in memory; raises BacktestError with one clear line."""
    with collector_paused():
        return _run_backtest(base, cfg, data, progress, run_id)


def _run_backtest(
    base: Settings,
    cfg: BacktestConfig,
    data: MarketData | None,
    progress: ProgressFn | None,
    run_id: str | None,
) -> BacktestResult:
    started = time.perf_counter()
    run = _prepare(base, cfg, data)
    settings = run.settings
    feed = ReplayFeed(run.traded)
    timeline = feed.timeline()
    if not timeline:
        raise BacktestError("no bar with a readable time in the chosen range")
    db = _in_memory_store()
    clock = MarketClock(timeline[0])
    broker = PaperBroker(db, settings.paper, settings.engine.starting_cash)
    trader = Trader(
        settings,
        db,
        feed,
        broker,
        clock,
        strategy=run.strategy,
        alerts=Alerts(db, clock),
        record_usage=False,
    )
    trader.start(run.history)
    precomputed(trader, run.history, run.traded, run.model)
    rejected = _replay(trader, clock, timeline, run.strategy, progress)
    out = collect(
        db, settings=settings, cfg=cfg, traded=run.traded, data=run.data, rejected=rejected
    )
    db.conn.close()
    out.strike = run.strike
    out.stress = _stress(out, settings.engine.starting_cash, run.strike)
    out.run_id = run_id or new_run_id(cfg, run.data)
    out.seconds = time.perf_counter() - started
    return out


def _replay(
    trader: Trader,
    clock: MarketClock,
    timeline: list[int],
    strategy: Strategy,
    progress: ProgressFn | None,
) -> int:
    """Step the trader, then its monitor, at every bar time; returns the bars rejected."""
    rejected = 0
    guard = strategy if isinstance(strategy, GuardedStrategy) else None
    for i, ts in enumerate(timeline):
        clock.now = ts
        result = trader.cycle()
        rejected += result.rejected_bars
        if guard is not None and guard.failure is not None:
            raise BacktestError(str(guard.failure))
        if result.error is not None:
            raise BacktestError(
                f"cycle at {datetime.fromtimestamp(ts / 1000, UTC)} failed: {result.error}"
            )
        trader.monitor_step()
        if progress is not None:
            progress(i + 1, len(timeline))
    return rejected


def _stress(out: BacktestResult, starting_cash: float, strike: int | None) -> StressFigures:
    returns = metrics.daily_returns(
        [e["ts"] for e in out.equity], [e["equity"] for e in out.equity], starting_cash
    )
    return stress_figures(
        [(e["ts"], e["equity"]) for e in out.equity],
        {
            int(d.timestamp() * 1000): float(r)
            for d, r in zip(pd.DatetimeIndex(returns.index), returns.to_numpy(), strict=True)
        },
        strike,
        out.kill_switch_at,
    )


def collect(
    db: Database,
    *,
    settings: Settings,
    cfg: BacktestConfig,
    traded: dict[str, list[Bar]],
    data: MarketData,
    rejected: int,
) -> BacktestResult:
    """The run's outcome, read back from its store, with the figures computed on it."""
    conn = db.conn
    equity, trades = outcome.equity_curve(conn), outcome.round_trips(conn)
    halt = first_emergency_stop(conn)
    figures = _figures(equity, trades, settings.engine.starting_cash)
    figures["rejected_bars"] = rejected
    figures["denied"] = outcome.denials(conn)
    figures["kill_switch_at"] = halt
    return BacktestResult(
        run_id="",
        config=cfg,
        settings=settings,
        metrics=figures,
        equity=equity,
        trades=trades,
        orders=outcome.orders(conn),
        bars=traded,
        regimes=outcome.regime_calls(conn),
        data_sha256=dict(data.sha256),
        rejected_bars=rejected,
        kill_switch_at=halt,
        seconds=0.0,
    )


def _figures(
    equity: list[dict[str, Any]], trades: list[dict[str, Any]], starting_cash: float
) -> dict[str, Any]:
    trips = [
        metrics.RoundTrip(
            t["pnl"],
            t["entry_ts"],
            t["exit_ts"],
            t["qty"] * (t["entry_price"] + t["exit_price"]),
        )
        for t in trades
    ]
    return metrics.compute(
        [e["ts"] for e in equity],
        [e["equity"] for e in equity],
        [(e["gross_exposure"] or 0) > 0 for e in equity],
        starting_cash,
        trips,
    )


# ------------------------------------------------------------------ outputs


def iso(ts: int | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})


def run_record(result: BacktestResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "config": result.config.describe(),
        "settings": result.settings.model_dump(mode="json"),
        "data_sha256": result.data_sha256,
        "code_version": code_version(),
        "seed": result.settings.engine.seed,
        "seconds": round(result.seconds, 3),
    }


def write_outputs(result: BacktestResult, out: Path) -> Path:
    """Write every output file into `out`, all or nothing: a partial folder is
    removed, and an existing `out` is only replaced by a complete one."""
    from engine.backtest.report import write_report

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        trades = [
            {**t, "entry_ts": iso(t["entry_ts"]), "exit_ts": iso(t["exit_ts"])}
            for t in result.trades
        ]
        _write_csv(tmp / "trades.csv", outcome.TRADE_COLUMNS, trades)
        _write_csv(
            tmp / "equity.csv",
            ["ts", "equity", "cash", "drawdown"],
            [{**e, "ts": iso(e["ts"])} for e in result.equity],
        )
        _write_csv(
            tmp / "orders.csv",
            outcome.ORDER_COLUMNS,
            [{**o, "created_at": iso(o["created_at"])} for o in result.orders],
        )
        (tmp / "metrics.json").write_text(json.dumps(result.metrics, indent=2, default=str))
        (tmp / "run.json").write_text(json.dumps(run_record(result), indent=2, default=str))
        write_report(result, tmp / "report.html")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.out = out
    return out
