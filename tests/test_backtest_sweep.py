"""Sweeps and walk-forward: grids, the max_runs limit, the process pool, Ray."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from cockpit.backtests_views import list_runs
from engine.__main__ import main
from engine.backtest.run import BacktestConfig
from engine.backtest.sweep import (
    SweepError,
    choose_points,
    local_runner,
    parse_axis,
    ray_runner,
    sweep,
    walk_forward,
)
from engine.config import load_settings

DATA = ["--sim", "--symbols", "SIMA", "--bars", "200", "--bar-interval", "1h"]
SMA = ["--strategy", "sma_cross", "--risk-off"]


def test_axes_read_ranges_lists_and_single_values() -> None:
    assert parse_axis("fast=5:20:5") == ("fast", [5, 10, 15, 20])
    assert parse_axis("risk.cooldown_minutes=0:1:0.5") == ("risk.cooldown_minutes", [0.0, 0.5, 1.0])
    assert parse_axis("slow=20,40") == ("slow", [20, 40])
    with pytest.raises(SweepError, match="STEP > 0"):
        parse_axis("fast=5:1:1")


def test_a_grid_over_max_runs_is_refused_before_anything_runs(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("COCKPIT_BACKTEST__MAX_RUNS", "3")
    out = tmp_path / "sweep"
    code = main(["sweep", *DATA, *SMA, "--param", "fast=2:5:1", "--param", "slow=20,30",
                 "--db", str(tmp_path / "c.db"), "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "8 points, more than backtest.max_runs = 3" in err
    assert not out.exists() and list_runs(tmp_path / "c.db") == []


def test_a_sweep_on_the_process_pool_picks_the_best_point_and_draws_it(tmp_path, capsys) -> None:
    db, out = tmp_path / "c.db", tmp_path / "sweep"
    code = main(["sweep", *DATA, *SMA, "--param", "fast=5,10", "--param", "slow=20,30",
                 "--metric", "total_return", "--workers", "2", "--db", str(db),
                 "--out", str(out), "--json"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    best = max(rows, key=lambda r: float(r["total_return"]))
    assert summary["best"] == {"fast": int(best["fast"]), "slow": int(best["slow"])}
    assert (
        "Heatmap" in (out / "heatmap.html").read_text()
        or "heatmap" in (out / "heatmap.html").read_text()
    )
    [run] = list_runs(db)
    assert run.kind == "sweep" and run.metrics["best"] == summary["best"]


def test_walk_forward_stitches_out_of_sample_equity_fold_to_fold() -> None:
    settings = load_settings()
    cfg = BacktestConfig(sim_bars=300, symbols=("SIMA",), bar_interval="1h",
                         strategy="sma_cross", risk_off=True)  # fmt: skip
    points = choose_points([("fast", [5, 10]), ("slow", [20])], None, 7, 100)
    from engine.backtest.data import simulate

    data = simulate(("SIMA",), 300, settings.engine.seed, 3_600_000)
    timeline = [b.ts for b in data.bars["SIMA"]]
    result = walk_forward(settings, cfg, points=points, metric="total_return",
                          runner=local_runner(1), timeline=timeline, folds=2)  # fmt: skip
    assert [f["fold"] for f in result.folds] == [1, 2]
    first_oos = result.folds[0]["out_of_sample"][0]
    assert result.oos_equity[0][0] == first_oos
    times = [t for t, _ in result.oos_equity]
    assert times == sorted(times)
    second_start = result.folds[1]["out_of_sample"][0]
    i = times.index(second_start)
    assert math.isclose(result.oos_equity[i][1], result.oos_equity[i - 1][1], rel_tol=0.05)


@pytest.mark.slow  # starting a local Ray instance takes ~10 s on two busy cores
def test_the_ray_path_gives_the_local_results(tmp_path: Path, monkeypatch) -> None:
    # Ray's single-machine mode: every address on the loopback, not the host's IP.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray")
    settings = load_settings()
    cfg = BacktestConfig(sim_bars=120, symbols=("SIMA",), bar_interval="1h",
                         strategy="sma_cross", risk_off=True)  # fmt: skip
    points = choose_points([("fast", [5, 10])], None, 7, 100)
    context = ray.init(
        num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
    )  # fmt: skip
    try:
        address = context.address_info["gcs_address"]
        assert address.startswith("127.0.0.1:")
        on_ray = sweep(settings, cfg, points, "total_return", ray_runner(address))
    finally:
        ray.shutdown()
    local = sweep(settings, cfg, points, "total_return", local_runner(1))
    assert [(p, f["total_return"]) for p, f in on_ray.rows] == [
        (p, f["total_return"]) for p, f in local.rows
    ]
