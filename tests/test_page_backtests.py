"""Backtests page: runs listed with their figures, a run's report, and a launch
that queues one `backtest` command."""

from __future__ import annotations

import json
from pathlib import Path

from engine.__main__ import main
from tests.cockpit_support import app, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/backtests.py"


def test_no_runs_shows_the_empty_state(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No backtests yet" in i.value for i in at.info)


def test_a_finished_run_is_listed_and_its_report_shown(filled_db: Path, tmp_path, capsys) -> None:
    assert (
        main(
            [
                "backtest",
                "--sim",
                "--symbols",
                "SIMA",
                "--bars",
                "150",
                "--bar-interval",
                "1h",
                "--db",
                str(filled_db),
                "--out",
                str(tmp_path / "run"),
                "--json",
            ]
        )
        == 0
    )
    run_id = json.loads(capsys.readouterr().out)["run_id"]  # fmt: skip
    at = app(filled_db, PAGE)
    assert not at.exception
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    assert table["run"].tolist() == [run_id] and table["status"].tolist() == ["done"]
    assert at.selectbox(key="bt_report").value == run_id


def test_launch_queues_one_backtest_command(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    at.text_input(key="bt_argv").set_value("--sim --bars 100 --strategy sma_cross")
    at.button[0].click().run()
    rows = query(filled_db, "SELECT kind, args FROM commands WHERE kind = 'backtest'")
    assert [(k, json.loads(a)) for k, a in rows] == [
        ("backtest", {"argv": "--sim --bars 100 --strategy sma_cross", "verb": "backtest"})
    ]
