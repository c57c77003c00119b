"""Parameter sweeps and walk-forward optimisation over backtests.

`python -m engine sweep --param fast=5:50:5 --param slow=20:200:10 --metric sharpe`
runs every point of the grid (or `--random N` of them), each a full backtest on
the engine's path, on a local process pool (`--workers`, default one per core) or
on a Ray cluster (`--ray ADDRESS`; Ray schedules, nothing here does). A parameter
is `key=START:STOP:STEP` (inclusive), `key=A,B,C` or `key=VALUE`; `risk.KEY` and
`paper.KEY` sweep settings instead of strategy parameters.

Walk-forward (`--walk-forward K`): the bars are cut into K+1 equal stretches; fold
i chooses the best point on stretch i (in-sample) and trades it on stretch i+1
(out-of-sample). The out-of-sample equity curves are chained into one, and the
in-sample against out-of-sample figures show how much of the edge survives.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.backtest.data import MarketData
from engine.backtest.run import BacktestConfig, BacktestError, run_backtest
from engine.backtest.verbs import METRICS
from engine.config import Settings

SECTION_PREFIXES = ("risk.", "paper.")
Point = dict[str, Any]


class SweepError(BacktestError):
    """A sweep that cannot run; the message is the one line to show."""


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_axis(spec: str) -> tuple[str, list[Any]]:
    from engine.backtest.cli import param_value

    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise SweepError(f"--param {spec!r}: use KEY=START:STOP:STEP, KEY=A,B,C or KEY=VALUE")
    if values.count(":") == 2:
        try:
            start, stop, step = (_number(v) for v in values.split(":"))
        except ValueError:
            raise SweepError(f"--param {spec!r}: START:STOP:STEP must be numbers") from None
        if step <= 0 or stop < start:
            raise SweepError(f"--param {spec!r}: need STEP > 0 and STOP >= START")
        count = math.floor((stop - start) / step + 1e-9) + 1
        grid = [start + i * step for i in range(count)]
        if all(isinstance(v, int) for v in (start, stop, step)):
            grid = [int(v) for v in grid]
        else:
            grid = [round(float(v), 12) for v in grid]
        return key, grid
    return key, [param_value(v.strip()) for v in values.split(",")]


def grid_points(axes: Sequence[tuple[str, list[Any]]]) -> list[Point]:
    keys = [k for k, _ in axes]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))
    ]


def choose_points(
    axes: Sequence[tuple[str, list[Any]]], random_n: int | None, seed: int, max_runs: int
) -> list[Point]:
    size = math.prod(len(v) for _, v in axes)
    if random_n is None and size > max_runs:
        raise SweepError(
            f"the grid has {size:,} points, more than backtest.max_runs = {max_runs:,};"
            " narrow it, or sample it with --random N"
        )
    if random_n is not None and random_n > max_runs:
        raise SweepError(f"--random {random_n:,} is more than backtest.max_runs = {max_runs:,}")
    points = grid_points(axes)
    if random_n is not None and random_n < len(points):
        points = random.Random(seed).sample(points, random_n)
    return points


def with_point(cfg: BacktestConfig, point: Point) -> BacktestConfig:
    params = dict(cfg.params)
    overrides = dict(cfg.overrides)
    for key, value in point.items():
        if key.startswith(SECTION_PREFIXES):
            overrides[key] = value
        else:
            params[key] = value
    return replace(cfg, params=params, overrides=overrides)


# ----------------------------------------------------------------------- runs


def _run_point(job: tuple[Settings, BacktestConfig, Point]) -> tuple[Point, dict[str, Any]]:
    """One backtest in a worker: its metrics, or the error as `{"error": ...}`."""
    settings, cfg, point = job
    logger = logging.getLogger("engine")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # a run's alerts belong in its figures, not the log
    try:
        result = run_backtest(settings, with_point(cfg, point))
    except BacktestError as exc:
        return point, {"error": str(exc)}
    finally:
        logger.setLevel(level)
    figures = dict(result.metrics)
    figures["equity"] = [(e["ts"], e["equity"]) for e in result.equity]
    return point, figures


Runner = Callable[
    [list[tuple[Settings, BacktestConfig, Point]]], list[tuple[Point, dict[str, Any]]]
]


def local_runner(workers: int, progress: Callable[[int, int], None] | None = None) -> Runner:
    def run(
        jobs: list[tuple[Settings, BacktestConfig, Point]],
    ) -> list[tuple[Point, dict[str, Any]]]:
        if workers <= 1 or len(jobs) <= 1:
            out = []
            for i, job in enumerate(jobs):
                out.append(_run_point(job))
                if progress:
                    progress(i + 1, len(jobs))
            return out
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            out = []
            for i, item in enumerate(pool.map(_run_point, jobs)):
                out.append(item)
                if progress:
                    progress(i + 1, len(jobs))
            return out

    return run


def ray_runner(address: str, progress: Callable[[int, int], None] | None = None) -> Runner:
    def run(
        jobs: list[tuple[Settings, BacktestConfig, Point]],
    ) -> list[tuple[Point, dict[str, Any]]]:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        remote = ray.remote(_run_point)
        refs = [remote.remote(job) for job in jobs]
        out = []
        for i, ref in enumerate(refs):
            out.append(ray.get(ref))
            if progress:
                progress(i + 1, len(jobs))
        return out

    return run


def score(figures: Mapping[str, Any], metric: str) -> float:
    value = figures.get(metric)
    if isinstance(value, int | float) and math.isfinite(value):
        # a drawdown is negative in empyrical's convention: larger (closer to 0) is better
        return float(value)
    return -math.inf


@dataclass
class SweepResult:
    metric: str
    keys: list[str]
    rows: list[tuple[Point, dict[str, Any]]]
    best: Point | None
    folds: list[dict[str, Any]]
    oos_equity: list[tuple[int, float]]


def sweep(
    settings: Settings, cfg: BacktestConfig, points: list[Point], metric: str, runner: Runner
) -> SweepResult:
    jobs = [(settings, cfg, p) for p in points]
    rows = runner(jobs)
    errors = [f for _, f in rows if "error" in f]
    if errors and len(errors) == len(rows):
        raise SweepError(str(errors[0]["error"]))
    best = max(rows, key=lambda r: score(r[1], metric))[0] if rows else None
    return SweepResult(metric, list(points[0]) if points else [], rows, best, [], [])


def fold_edges(timeline: Sequence[int], folds: int) -> list[int]:
    """K+1 equal stretches of the timeline: their first times, then the last time."""
    if folds < 1:
        raise SweepError("--walk-forward needs at least 1 fold")
    n = len(timeline)
    if n < (folds + 1) * 20:
        raise SweepError(
            f"{n} bars are too few for {folds} walk-forward folds (need 20 per stretch)"
        )
    return [timeline[i * n // (folds + 1)] for i in range(folds + 1)] + [timeline[-1]]


def walk_forward(
    settings: Settings,
    cfg: BacktestConfig,
    *,
    points: list[Point],
    metric: str,
    runner: Runner,
    timeline: Sequence[int],
    folds: int,
) -> SweepResult:
    edges = fold_edges(timeline, folds)
    fold_rows: list[dict[str, Any]] = []
    stitched: list[tuple[int, float]] = []
    all_rows: list[tuple[Point, dict[str, Any]]] = []
    for i in range(folds):
        is_cfg = replace(cfg, start=edges[i], end=edges[i + 1] - 1)
        oos_cfg = replace(cfg, start=edges[i + 1], end=edges[i + 2] if i + 2 < len(edges) else None)
        chosen = sweep(settings, is_cfg, points, metric, runner)
        all_rows.extend(chosen.rows)
        assert chosen.best is not None
        is_figures = next(f for p, f in chosen.rows if p == chosen.best)
        [(_, oos)] = runner([(settings, oos_cfg, chosen.best)])
        if "error" in oos:
            raise SweepError(f"fold {i + 1} out-of-sample: {oos['error']}")
        curve = oos.pop("equity")
        base = stitched[-1][1] if stitched else curve[0][1]
        scale = base / curve[0][1] if curve and curve[0][1] else 1.0
        stitched.extend((t, e * scale) for t, e in curve)
        fold_rows.append(
            {
                "fold": i + 1,
                "in_sample": [edges[i], edges[i + 1] - 1],
                "out_of_sample": [edges[i + 1], edges[i + 2]],
                "params": chosen.best,
                f"is_{metric}": is_figures.get(metric),
                f"oos_{metric}": oos.get(metric),
                "is_total_return": is_figures.get("total_return"),
                "oos_total_return": oos.get("total_return"),
            }
        )
    return SweepResult(metric, list(points[0]), all_rows, None, fold_rows, stitched)


def workers_default(configured: int) -> int:
    return configured or max(os.cpu_count() or 1, 1)


def heatmap_html(result: SweepResult) -> str:
    """Two parameters against the metric (the best over any others), the chosen
    point marked; one parameter is a line."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    keys = result.keys
    ok = [(p, f) for p, f in result.rows if "error" not in f]
    if not keys or not ok:
        body = "<p>No completed runs.</p>"
    elif len(keys) == 1:
        xs = sorted({p[keys[0]] for p, _ in ok})
        ys = [max(score(f, result.metric) for p, f in ok if p[keys[0]] == x) for x in xs]
        fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name=result.metric))
        if result.best:
            fig.add_trace(
                go.Scatter(
                    x=[result.best[keys[0]]],
                    y=[max(ys)],
                    mode="markers",
                    marker={"size": 14, "symbol": "star"},
                    name="chosen",
                )
            )
        fig.update_layout(xaxis_title=keys[0], yaxis_title=result.metric)
        body = fig.to_html(full_html=False, include_plotlyjs=False)
    else:
        kx, ky = keys[0], keys[1]
        xs = sorted({p[kx] for p, _ in ok})
        ys = sorted({p[ky] for p, _ in ok})
        z: list[list[float | None]] = []
        for y in ys:
            row: list[float | None] = []
            for x in xs:
                vals = [score(f, result.metric) for p, f in ok if p[kx] == x and p[ky] == y]
                finite = [v for v in vals if math.isfinite(v)]
                row.append(max(finite) if finite else None)
            z.append(row)
        fig = go.Figure(
            go.Heatmap(x=xs, y=ys, z=z, colorscale="Viridis", colorbar={"title": result.metric})
        )
        if result.best:
            fig.add_trace(
                go.Scatter(
                    x=[result.best[kx]],
                    y=[result.best[ky]],
                    mode="markers",
                    marker={"size": 16, "symbol": "x", "color": "red"},
                    name="chosen",
                )
            )
        fig.update_layout(xaxis_title=kx, yaxis_title=ky, title=f"{result.metric} by {kx} and {ky}")
        body = fig.to_html(full_html=False, include_plotlyjs=False)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Sweep</title>"
        f"<script>{get_plotlyjs()}</script></head><body>{body}</body></html>"
    )


# ------------------------------------------------------------------------ CLI


def _write_rows(path: Path, keys: list[str], rows: list[tuple[Point, dict[str, Any]]]) -> None:
    import csv

    columns = [*keys, *METRICS, "trades", "error"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for point, figures in rows:
            writer.writerow(
                [point.get(k) for k in keys] + [figures.get(c, "") for c in columns[len(keys) :]]
            )


def cmd_sweep(args: Any) -> int:
    from engine.backtest.cli import quiet_engine_logs

    with quiet_engine_logs(args):
        return _sweep(args)


def _sweep(args: Any) -> int:
    import sys

    from engine.backtest import cli as bcli
    from store import backtests as store

    settings = bcli._settings(args)
    run_id = args.run_id or (
        "sweep-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid() % 10_000}"
    )
    started = False
    try:
        cfg, points, data, timeline = _prepare(args, settings)
        if args.command_id is not None:
            _record_start(args, run_id, cfg, data, "")
            started = True
        result = _run(args, settings, cfg=cfg, points=points, timeline=timeline, run_id=run_id)
    except (BacktestError, ValueError) as exc:
        if started:
            store.finish_run(args.db, run_id, None, str(exc))
        print(f"sweep: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else bcli.default_out_dir(settings) / run_id
    summary = _write_outputs(result, out)
    if started:
        store.set_out_dir(args.db, run_id, str(out))
    else:
        _record_start(args, run_id, cfg, data, str(out))
    store.finish_run(args.db, run_id, summary)
    _print(args, run_id, out, result, summary)
    return 0


def _prepare(
    args: Any, settings: Settings
) -> tuple[BacktestConfig, list[Point], MarketData, list[int]]:
    from engine.backtest import cli as bcli
    from engine.backtest.data import split
    from engine.backtest.run import load_data

    axes = [parse_axis(spec) for spec in args.param or []]
    if not axes:
        raise SweepError("give at least one --param KEY=START:STOP:STEP (or A,B,C)")
    points = choose_points(axes, args.random, settings.engine.seed, settings.backtest.max_runs)
    cfg = bcli.config_from_args(argparse_copy(args, param=None), settings)
    data = load_data(settings, cfg)
    _, traded = split(data, cfg.start, cfg.end, 0)
    timeline = sorted({b.ts for rows in traded.values() for b in rows if b.ts > 0})
    return cfg, points, data, timeline


def _record_start(args: Any, run_id: str, cfg: BacktestConfig, data: MarketData, out: str) -> None:
    from store import backtests as store

    store.start_run(
        args.db, run_id, kind="sweep", strategy=cfg.strategy, symbols=",".join(data.symbols),
        out_dir=out, config=cfg.describe(), command_id=args.command_id,
    )  # fmt: skip


def _run(
    args: Any,
    settings: Settings,
    *,
    cfg: BacktestConfig,
    points: list[Point],
    timeline: list[int],
    run_id: str,
) -> SweepResult:
    from engine.backtest import cli as bcli
    from store import backtests as store

    folds = args.walk_forward or 0
    total = len(points) * max(folds, 1) + folds
    bar = bcli._progress_bar("sweep", total)

    def progress(n: int, _total: int) -> None:
        bar.update(1)
        if args.command_id is not None:
            store.set_progress(args.db, run_id, min(bar.n / total, 1.0))

    workers = args.workers or workers_default(settings.backtest.workers)
    runner = ray_runner(args.ray, progress) if args.ray else local_runner(workers, progress)
    try:
        if folds:
            return walk_forward(
                settings, cfg, points=points, metric=args.metric, runner=runner,
                timeline=timeline, folds=folds,
            )  # fmt: skip
        return sweep(settings, cfg, points, args.metric, runner)
    finally:
        bar.close()


def _write_outputs(result: SweepResult, out: Path) -> dict[str, Any]:
    """sweep.csv, heatmap.html, sweep.json (and oos_equity.csv), all or nothing."""
    import shutil

    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_rows(tmp / "sweep.csv", result.keys, result.rows)
    (tmp / "heatmap.html").write_text(heatmap_html(result), encoding="utf-8")
    summary = summarise(result)
    (tmp / "sweep.json").write_text(json.dumps(summary, indent=2, default=str))
    if result.oos_equity:
        (tmp / "oos_equity.csv").write_text(
            "ts,equity\n" + "".join(f"{t},{e}\n" for t, e in result.oos_equity)
        )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return summary


def _print(args: Any, run_id: str, out: Path, result: SweepResult, summary: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"run_id": run_id, "out": str(out), **summary}, default=str))
        return
    print(f"sweep {run_id}: {len(result.rows)} runs, {out}")
    if result.best is not None:
        print(f"  best {args.metric}: {summary.get('best_value')} at {result.best}")
    for fold in result.folds:
        print(
            f"  fold {fold['fold']}: {fold['params']}  in-sample"
            f" {fold[f'is_{args.metric}']}, out-of-sample {fold[f'oos_{args.metric}']}"
        )
    if result.folds:
        print(f"  out-of-sample / in-sample: {summary.get('decay')}")


def argparse_copy(args: Any, **changes: Any) -> Any:

    return argparse.Namespace(**{**vars(args), **changes})


def summarise(result: SweepResult) -> dict[str, Any]:
    out: dict[str, Any] = {"metric": result.metric, "runs": len(result.rows), "keys": result.keys}
    if result.best is not None:
        figures = next(f for p, f in result.rows if p == result.best)
        out["best"] = result.best
        out["best_value"] = figures.get(result.metric)
        out["sharpe"] = figures.get("sharpe")
        out["total_return"] = figures.get("total_return")
    if result.folds:
        key = result.metric
        is_values = [f[f"is_{key}"] for f in result.folds if isinstance(f[f"is_{key}"], float)]
        oos_values = [f[f"oos_{key}"] for f in result.folds if isinstance(f[f"oos_{key}"], float)]
        out["folds"] = result.folds
        mean_is = sum(is_values) / len(is_values) if is_values else None
        mean_oos = sum(oos_values) / len(oos_values) if oos_values else None
        out["is_mean"], out["oos_mean"] = mean_is, mean_oos
        out["decay"] = mean_oos / mean_is if mean_is and mean_oos is not None else None
        curve = result.oos_equity
        out["oos_total_return"] = curve[-1][1] / curve[0][1] - 1 if curve else None
    return out
