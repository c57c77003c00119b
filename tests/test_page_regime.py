"""Regime page: empty state, the latest call per symbol, and rules against ML."""

from __future__ import annotations

import json
from pathlib import Path

from store.db import now_ms
from tests.cockpit_support import app, execute, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/regime.py"


def test_empty_database_shows_empty_state(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    assert any("No regime calls yet" in i.value for i in at.info)


def test_current_regime_per_symbol_equals_the_latest_call(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    latest = dict(
        query(
            filled_db,
            "SELECT symbol, regime FROM regimes r WHERE ts = (SELECT MAX(ts) FROM regimes"
            " WHERE symbol = r.symbol)",
        )
    )
    table = next(d.value for d in at.dataframe if "confidence" in d.value.columns)
    assert dict(zip(table["symbol"], table["regime"], strict=True)) == latest


def test_ml_calls_are_set_against_the_rules(filled_db: Path) -> None:
    symbol = query(filled_db, "SELECT MIN(symbol) FROM regimes")[0][0]
    for regime in ["trend_up", "range", "range"]:
        execute(
            filled_db,
            "INSERT INTO regimes (symbol, ts, regime, confidence, source, rules_regime, features)"
            " VALUES (?, ?, ?, 0.9, 'ml', 'range', ?)",
            (symbol, now_ms(), regime, json.dumps({"adx": 20})),
        )
    at = app(filled_db, PAGE)
    assert {m.label: m.value for m in at.metric}["ML calls agreeing with the rules"] == "2 / 3"
