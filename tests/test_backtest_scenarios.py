"""Stress scenarios: each transformation does what its name says, windows cut by
date, and `--scenarios all` prints one table row per scenario."""

from __future__ import annotations

import itertools
import json

import pytest

from engine.__main__ import main
from engine.backtest.scenarios import (
    HOUR_MS,
    ScenarioError,
    drought,
    flash,
    gap,
    scenario,
    strike_time,
    whipsaw,
)
from engine.domain import Bar

T0 = 1_767_225_600_000


def _bars(n: int, step_ms: int, price: float = 100.0) -> dict[str, list[Bar]]:
    rows = [
        Bar("AAA", T0 + i * step_ms, price, price * 1.001, price * 0.999, price, 1_000.0)
        for i in range(n)
    ]
    return {"AAA": rows}


def test_a_gap_lowers_every_price_from_the_strike_by_a_fifth() -> None:
    bars = _bars(10, 86_400_000)
    at = strike_time(bars)
    out = gap(bars, at)["AAA"]
    assert [b.close for b in out if b.ts < at] == [100.0] * 5
    assert [b.open for b in out if b.ts >= at] == pytest.approx([80.0] * 5)


def test_a_flash_crash_reaches_minus_ten_percent_and_is_back_within_the_hour() -> None:
    bars = _bars(240, 60_000)
    at = strike_time(bars)
    out = flash(bars, at)["AAA"]
    window = [b for b in out if at <= b.ts < at + HOUR_MS]
    assert min(b.low for b in window) == pytest.approx(100 * 0.999 * 0.9)
    assert window[-1].close == pytest.approx(100.0)
    assert [b.close for b in out if b.ts >= at + HOUR_MS] == [100.0] * (240 - 120 - 60)


def test_a_drought_cuts_volume_for_twenty_days_only() -> None:
    bars = _bars(60, 86_400_000)
    at = strike_time(bars)
    volumes = [b.volume for b in drought(bars, at)["AAA"]]
    assert volumes[30:50] == pytest.approx([50.0] * 20)
    assert volumes[:30] == [1_000.0] * 30 and volumes[50:] == [1_000.0] * 10


def test_a_whipsaw_alternates_four_percent_moves() -> None:
    bars = _bars(60, 3_600_000)
    at = strike_time(bars)
    closes = [b.close for b in whipsaw(bars, at)["AAA"] if b.ts >= at][:5]
    moves = [b / a - 1 for a, b in itertools.pairwise(closes)]
    assert moves == pytest.approx([-0.04, 0.04, -0.04, 0.04])


def test_a_history_window_is_a_date_range_and_an_unknown_name_is_refused() -> None:
    window = scenario("2008-09:2009-03")
    assert window.start == 1_220_227_200_000  # 2008-09-01 UTC
    assert window.end == 1_238_543_999_999  # 2009-03-31 23:59:59.999 UTC
    with pytest.raises(ScenarioError, match="unknown scenario 'meteor'"):
        scenario("meteor")


def test_scenarios_all_prints_one_row_per_scenario(tmp_path, capsys) -> None:
    code = main(
        ["backtest", "--sim", "--symbols", "SIMA", "--bars", "200", "--bar-interval", "1h",
         "--scenarios", "all", "--db", str(tmp_path / "c.db"), "--out", str(tmp_path / "s"),
         "--json"]
    )  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["scenario"] for r in rows] == [
        "baseline", "gap", "vol3", "flash", "drought", "whipsaw",
    ]  # fmt: skip
    assert all((tmp_path / "s" / r["scenario"] / "report.html").is_file() for r in rows)
    assert rows[1]["stress"]["max drawdown"].endswith("%")
