"""`python -m engine backtest`: the live Trader stepped over history, its outputs,
its record in the state store, and one clear message for bad input."""

from __future__ import annotations

import csv
import gc
import json
import sqlite3
from pathlib import Path

import pytest

from cockpit.backtests_views import list_runs
from engine.__main__ import main
from engine.backtest.run import BacktestConfig, BacktestError, collector_paused, run_backtest
from engine.config import load_settings
from engine.market.feeds import generate_history

SIM = ["--sim", "--symbols", "SIMA", "--bars", "300", "--bar-interval", "1h"]


def _csv_folder(folder: Path, symbols: tuple[str, ...] = ("AAA",), n: int = 200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frames = generate_history(symbols, n, seed=5, bar_ms=86_400_000)
    for symbol, frame in frames.items():
        columns = frame.rename(columns={"ts": "timestamp"})
        columns[["timestamp", "open", "high", "low", "close", "volume"]].to_csv(
            folder / f"{symbol}.csv", index=False
        )
    return folder


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["backtest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_backtest_writes_every_output_and_records_the_run(tmp_path, capsys) -> None:
    db = tmp_path / "cockpit.db"
    code, out, _ = _run(
        capsys, *SIM, "--strategy", "sma_cross", "--risk-off", "--db", str(db),
        "--out", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert code == 0
    summary = json.loads(out)
    folder = Path(summary["out"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "equity.csv", "metrics.json", "orders.csv", "report.html", "run.json", "trades.csv",
    ]  # fmt: skip
    with (folder / "trades.csv").open() as f:
        trades = list(csv.DictReader(f))
    assert trades and trades[0]["entry_ts"].endswith("Z") and trades[0]["exit_reason"]
    run = json.loads((folder / "run.json").read_text())
    assert run["seed"] == 7 and run["code_version"] and run["config"]["strategy"] == "sma_cross"
    [row] = list_runs(db)
    assert (row.run_id, row.status) == (summary["run_id"], "done")
    assert row.metrics["trades"] == summary["metrics"]["trades"] == len(trades)


def test_the_same_inputs_give_the_same_trades(tmp_path) -> None:
    cfg = BacktestConfig(sim_bars=300, symbols=("SIMA", "SIMB"), bar_interval="1h")
    first = run_backtest(load_settings(), cfg)
    second = run_backtest(load_settings(), cfg)
    assert first.trades, "the regime strategy should trade on 300 simulated hours"
    assert first.trades == second.trades
    assert first.equity == second.equity


def test_csv_data_records_file_digests_and_a_date_range_cuts_the_bars(tmp_path) -> None:
    data = _csv_folder(tmp_path / "data", ("AAA", "BBB"), n=120)
    with (data / "AAA.csv").open() as f:
        start = int(list(csv.DictReader(f))[60]["timestamp"])
    cfg = BacktestConfig(data_dir=data, start=start, strategy="sma_cross", risk_off=True)
    result = run_backtest(load_settings(), cfg)
    assert set(result.data_sha256) == {"AAA.csv", "BBB.csv"}
    assert all(len(d) == 64 for d in result.data_sha256.values())
    assert min(e["ts"] for e in result.equity) == start


def test_risk_off_lets_an_entry_without_a_stop_through(tmp_path) -> None:
    cfg = BacktestConfig(sim_bars=200, symbols=("SIMA",), bar_interval="1h", strategy="sma_cross")
    on = run_backtest(load_settings(), cfg)
    off = run_backtest(load_settings(), BacktestConfig(**{**cfg.__dict__, "risk_off": True}))
    assert on.trades == [] and on.metrics["denied"].get("stop_loss", 0) > 0
    assert off.trades and "stop_loss" not in off.metrics["denied"]


def test_commission_in_bps_with_a_minimum_is_charged_on_every_fill(tmp_path) -> None:
    base = {"sim_bars": 200, "symbols": ("SIMA",), "bar_interval": "1h",
            "strategy": "sma_cross", "risk_off": True, "slippage": "none"}  # fmt: skip
    free = run_backtest(load_settings(), BacktestConfig(**base, commission="none"))
    paid = run_backtest(load_settings(), BacktestConfig(**base, commission="bps:10:5"))
    assert [t["entry_ts"] for t in free.trades] == [t["entry_ts"] for t in paid.trades]
    for t in paid.trades:
        fees = [
            max(5.0, t["qty"] * price * 10 / 10_000)
            for price in (t["entry_price"], t["exit_price"])
        ]
        sign = 1 if t["side"] == "BUY" else -1
        assert t["commission"] == pytest.approx(sum(fees))
        gross = sign * t["qty"] * (t["exit_price"] - t["entry_price"])
        assert t["pnl"] == pytest.approx(gross - sum(fees))
    assert paid.metrics["final_equity"] < free.metrics["final_equity"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--data", "no/such/folder"], "does not exist"),
        (["--data", "{data}", "--symbols", "ZZZ"], "unknown symbol(s) ZZZ"),
        (["--data", "{empty}"], "no rows after the header"),
        (["--data", "{data}", "--from", "2040-01-01"], "no bars between"),
        ([*SIM, "--strategy", "sma_cross", "--param", "speed=3"], "unknown parameter(s) speed"),
        ([*SIM, "--commission", "bps:x"], "is not a number"),
    ],
)
def test_bad_input_is_one_message_a_nonzero_exit_and_nothing_written(
    tmp_path, capsys, argv, says
) -> None:
    data = _csv_folder(tmp_path / "data")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "AAA.csv").write_text("timestamp,open,high,low,close,volume\n")
    db, out = tmp_path / "cockpit.db", tmp_path / "out"
    argv = [a.format(data=data, empty=empty) for a in argv]
    code, stdout, err = _run(capsys, *argv, "--db", str(db), "--out", str(out))
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1
    assert stdout == "" and not out.exists()
    assert not db.exists() or _runs(db) == 0


def _runs(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM backtest_runs").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_a_cycle_failure_stops_the_backtest_with_its_reason(tmp_path) -> None:
    strategy = tmp_path / "boom.py"
    strategy.write_text(
        "class Boom:\n    name = 'boom'\n\n    def decide(self, ctx):\n        return 1 / 0\n"
    )
    cfg = BacktestConfig(sim_bars=100, symbols=("SIMA",), strategy=f"{strategy}:Boom")
    with pytest.raises(BacktestError, match=rf"{strategy}:5: ZeroDivisionError"):
        run_backtest(load_settings(), cfg)


def test_every_stop_exit_is_booked_at_or_beyond_its_stop(tmp_path) -> None:
    cfg = BacktestConfig(
        sim_bars=600,
        symbols=("SIMA", "SIMB"),
        bar_interval="1h",
        strategy="sma_cross",
        params={"stop_pct": 0.01, "target_pct": 0.03},
    )
    trades = run_backtest(load_settings(), cfg).trades
    stops = [t for t in trades if t["exit_reason"] in ("stop", "trailing")]
    assert stops, "a 1% stop should be hit on 600 simulated hours"
    for t in stops:
        if t["side"] == "BUY":  # a long sells at its stop or below
            assert t["exit_price"] <= t["stop"] + 1e-9
        else:
            assert t["exit_price"] >= t["stop"] - 1e-9


def test_the_collector_is_off_during_a_run_and_back_on_after_it_even_when_it_fails(
    tmp_path,
) -> None:
    strategy = tmp_path / "watch.py"
    strategy.write_text(
        "import gc\n\n\nclass Watch:\n    name = 'watch'\n\n"
        "    def decide(self, ctx):\n"
        "        raise RuntimeError(f'collector on: {gc.isenabled()}')\n"
    )
    cfg = BacktestConfig(sim_bars=100, symbols=("SIMA",), strategy=f"{strategy}:Watch")
    assert gc.isenabled()
    with pytest.raises(BacktestError, match="collector on: False"):
        run_backtest(load_settings(), cfg)
    assert gc.isenabled()


def test_a_pause_of_the_collector_inside_another_leaves_it_off_until_the_outer_ends() -> None:
    assert gc.isenabled()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
