"""Risk page: empty state, and the figures shown equal the database's."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cockpit import risk_views, ui
from engine.config import RiskSettings
from engine.risk import RiskContext
from engine.risk.usage import usage, write_usage
from store.db import now_ms, open_writer
from tests.cockpit_support import app, execute, query

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/risk.py"


def frame(at, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_empty_database_shows_empty_states(empty_db: Path) -> None:
    at = app(empty_db, PAGE)
    assert not at.exception
    texts = " ".join(i.value for i in at.info)
    assert "No limits in use yet" in texts and "denied nothing" in texts


def test_limits_shown_are_the_monitors_figures(filled_db: Path) -> None:
    db = open_writer(filled_db)
    ctx = RiskContext(now=now_ms(), equity=90_000.0, day_start_equity=100_000.0, trades_today=7)
    write_usage(db, usage(ctx, RiskSettings()), now_ms())
    db.conn.commit()
    db.conn.close()
    at = app(filled_db, PAGE)
    assert not at.exception
    shown = frame(at, "maximum").set_index("limit")
    stored = dict(query(filled_db, "SELECT name, value FROM risk_usage"))
    assert shown.loc["Daily loss", "value"] == stored["daily_loss"] == 10_000.0
    assert shown.loc["Trades today", "value"] == stored["trades_per_day"] == 7


def test_without_the_monitor_the_limits_are_computed_from_the_store(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    shown = frame(at, "maximum").set_index("limit")
    held = query(filled_db, "SELECT COUNT(*) FROM positions WHERE qty != 0")[0][0]
    assert shown.loc["Open positions", "value"] == held
    view = risk_views.limit_usage(str(filled_db), now_ms(), RiskSettings())
    assert view.source == "computed"


def test_denials_shown_are_the_stored_ones(filled_db: Path) -> None:
    execute(
        filled_db,
        "INSERT INTO signals (ts, symbol, side, qty, purpose, verdict, check_name, reason)"
        " VALUES (?, 'SIM-A', 'BUY', 10, 'ENTRY', 'denied', 'daily_loss', 'loss 6,100.00 exceeds')",
        (now_ms(),),
    )
    at = app(filled_db, PAGE)
    shown = frame(at, "check_name")
    stored = query(filled_db, "SELECT COUNT(*) FROM signals WHERE verdict = 'denied'")[0][0]
    assert len(shown) == stored
    assert "loss 6,100.00 exceeds" in shown["reason"].tolist()


def test_state_history_lists_the_kill_switch(filled_db: Path) -> None:
    payload = json.dumps(
        {"from": "ACTIVE", "to": "HALTED", "reason": "drawdown 15.2% reached the 15.00% limit"}
    )
    execute(
        filled_db,
        "INSERT INTO audit (ts, actor, action, payload) VALUES (?, 'engine', 'state_change', ?)",
        (now_ms(), payload),
    )
    at = app(filled_db, PAGE)
    history = frame(at, "event")
    assert history[["event", "to_state"]].values.tolist() == [["kill switch", "HALTED"]]
    assert [m.value for m in at.metric if m.label == "Kill switches"] == ["1"]


def test_a_configured_exchange_lists_its_next_sessions(
    filled_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COCKPIT_RISK__EXCHANGES", '{"AAPL": "XNYS"}')
    # cockpit/ui.py caches settings on an `_environment` argument, which Streamlit
    # leaves out of the cache key (leading underscore); start from a clean cache.
    ui._settings_cached.clear()
    at = app(filled_db, PAGE)
    ui._settings_cached.clear()
    assert not at.exception
    assert frame(at, "exchange")["exchange"].tolist() == ["XNYS"] * 3


def test_adopting_the_brokers_positions_needs_a_reason_and_a_confirmation(
    filled_db: Path,
) -> None:
    at = app(filled_db, PAGE)
    assert at.button(key="adopt_broker").disabled
    at.text_input(key="adopt_reason").input("TWS trade checked").run()
    at.checkbox(key="adopt_confirm").check().run()
    at.button(key="adopt_broker").click().run()
    assert query(filled_db, "SELECT kind, args FROM commands") == [
        ("adopt_broker", '{"reason": "TWS trade checked"}')
    ]


def test_reconcile_now_queues_a_reconcile_command(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    at.button(key="reconcile_now").click().run()
    assert query(filled_db, "SELECT kind FROM commands") == [("reconcile",)]
