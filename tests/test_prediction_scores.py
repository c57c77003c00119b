"""The Models page's live figures without reading a marathon's rows.

Live accuracy: each version's and role's scored predictions are summed as they are
scored (`prediction_scores`); the sums equal the scored rows, survive pruning, and an
older database gets its scored rows summed when it upgrades. The champion against the
challenger: their pairs summed the same way give the advice the pairs themselves
give. The latest drift check: its own rows, found by the `ts` index."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from cockpit.models_views import latest_drift, live_accuracy
from engine.ml.shadow import PairSums, PromotionAdvice, advice_from_sums, promotion_advice
from store.db import open_writer
from store.housekeeping import delete_before
from store.models import (
    RECENT,
    SCORE,
    insert_drift,
    insert_predictions,
    recent_accuracy,
    score,
    shadow_sums,
)
from store.schema import registered
from tests.test_schema import _old_database

HORIZON = 600_000
SUMS = (
    "SELECT model_version, role, COUNT(*), SUM((proba >= 0.5) = outcome),"
    " SUM((proba - outcome) * (proba - outcome)) FROM predictions"
    " WHERE scored_at IS NOT NULL GROUP BY model_version, role ORDER BY 1, 2"
)
KEPT = "SELECT model_version, role, scored, correct, brier_sum FROM prediction_scores ORDER BY 1, 2"


def _predict(conn: sqlite3.Connection, rng: random.Random, first_ts: int, n: int) -> None:
    rows = []
    for i in range(n):
        ts = first_ts + i * 60_000
        for version, role in (("v1", "champion"), ("v2", "challenger")):
            symbol = rng.choice(["A", "B"])
            ref = 100 + rng.uniform(-1, 1)
            rows.append(
                (ts, symbol, version, role, rng.random(), None, None, None, ref, ts + HORIZON)
            )
    insert_predictions(conn, rows)


def _score_all(conn: sqlite3.Connection, rng: random.Random, bars: int) -> None:
    """Score as the engine does, every 5 minutes per symbol, until every bar's horizon
    has passed."""
    for now in range(0, bars * 60_000 + HORIZON + 300_000, 300_000):
        for symbol in ("A", "B"):
            score(conn, symbol, 100 + rng.uniform(-1, 1), now)
    conn.commit()


def _before(path: Path, migration: str) -> sqlite3.Connection:
    """A connection on a database as it was before the ML migration `migration`."""
    _old_database(path, registered().index(("ml", migration)))
    return sqlite3.connect(path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Database]:
    """The engine's writer on a fresh database, closed after the test."""
    db = open_writer(tmp_path / "s.db")
    yield db
    db.conn.close()


def _same(kept: list[tuple[object, ...]], summed: list[tuple[object, ...]]) -> None:
    assert [k[:4] for k in kept] == [s[:4] for s in summed]
    assert [k[4] for k in kept] == pytest.approx([s[4] for s in summed])


def test_the_sums_follow_every_scoring_and_outlive_pruning(store: Database, tmp_path: Path) -> None:
    conn = store.conn
    rng = random.Random(3)
    _predict(conn, rng, 0, 200)
    _score_all(conn, rng, 200)
    summed = conn.execute(SUMS).fetchall()
    assert sum(int(s[2]) for s in summed) == 400  # every prediction scored once
    _same(conn.execute(KEPT).fetchall(), summed)

    delete_before(store, "predictions", 100 * 60_000, 50)
    assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] < 400
    _same(conn.execute(KEPT).fetchall(), summed)  # every prediction the versions made
    shown = live_accuracy(tmp_path / "s.db")
    v1 = shown[(shown["version"] == "v1") & (shown["role"] == "champion")].iloc[0]
    assert v1["scored"] == summed[0][2]
    assert v1["live_accuracy"] == pytest.approx(summed[0][3] / summed[0][2])
    assert v1["live_brier"] == pytest.approx(summed[0][4] / summed[0][2])


def test_an_older_database_has_its_scored_predictions_summed_when_it_upgrades(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = _before(path, "m002_prediction_scores")
    rng = random.Random(4)
    _predict(conn, rng, 0, 50)
    score(conn, "A", 100.5, 50 * 60_000 + HORIZON)
    conn.commit()
    summed = conn.execute(SUMS).fetchall()
    conn.close()
    assert summed  # some were scored before the upgrade

    db = open_writer(path)
    try:
        _same(db.conn.execute(KEPT).fetchall(), summed)
        score(db.conn, "B", 99.5, 50 * 60_000 + HORIZON)  # and the trigger counts from here
        db.conn.commit()
        _same(db.conn.execute(KEPT).fetchall(), db.conn.execute(SUMS).fetchall())
    finally:
        db.conn.close()


def test_the_latest_drift_check_is_its_own_rows_worst_first(tmp_path: Path) -> None:
    db = open_writer(tmp_path / "d.db")
    older = [(1_000, "v1", "feature_psi", f"f{i}", 0.5, 0.25, "alert", 100, "") for i in range(3)]
    latest = [
        (2_000, "v1", "feature_psi", "f0", 0.01, 0.25, None, 100, ""),
        (2_000, "v1", "feature_psi", "f1", 0.20, 0.25, None, 100, ""),
        (2_000, "v1", "prediction_psi", "proba_up", 0.10, 0.25, None, 100, ""),
    ]
    insert_drift(db.conn, older + latest)
    db.conn.commit()
    db.conn.close()
    shown = latest_drift(tmp_path / "d.db")
    assert shown["ts"].tolist() == [2_000] * 3
    assert shown["name"].tolist() == ["f1", "proba_up", "f0"]  # by value / threshold
    assert shown["ratio"].tolist() == pytest.approx([0.8, 0.4, 0.04])


PAIRS = (
    "SELECT a.proba, b.proba, b.outcome FROM predictions a JOIN predictions b"
    " ON a.symbol = b.symbol AND a.ts = b.ts WHERE a.role = 'champion'"
    " AND b.role = 'challenger' AND b.scored_at IS NOT NULL ORDER BY a.ts"
)


def _paired(conn: sqlite3.Connection, rng: random.Random, first_ts: int, n: int) -> None:
    """The champion's and the challenger's predictions on the same bars, the
    challenger's stored a little later (it predicts on the shadow thread)."""
    bars = [(first_ts + i * 60_000, rng.choice("AB"), 100 + rng.uniform(-1, 1)) for i in range(n)]
    for version, role in (("v1", "champion"), ("v2", "challenger")):
        insert_predictions(
            conn,
            [
                (t, s, version, role, rng.random(), None, None, None, r, t + HORIZON)
                for t, s, r in bars
            ],
        )


def _advice_both_ways(conn: sqlite3.Connection) -> tuple[PromotionAdvice, PromotionAdvice]:
    pairs = conn.execute(PAIRS).fetchall()
    p0, p1, y = (list(c) for c in zip(*pairs, strict=True))
    from_rows = promotion_advice("v1", "v2", p0, p1, y, min_samples=50, horizon_bars=10)
    sums = PairSums(*shadow_sums(conn, "v1", "v2"))
    return from_rows, advice_from_sums("v1", "v2", sums, min_samples=50, horizon_bars=10)


def _same_advice(a: PromotionAdvice, b: PromotionAdvice) -> None:
    assert (a.n, a.promote, a.message[:20]) == (b.n, b.promote, b.message[:20])
    for field in ("champion_accuracy", "challenger_accuracy", "brier_gain", "ci_low", "ci_high"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9, abs=1e-12)


def test_the_shadow_sums_give_the_advice_the_pairs_give(store: Database) -> None:
    rng = random.Random(8)
    _paired(store.conn, rng, 0, 300)
    _score_all(store.conn, rng, 300)
    from_rows, from_sums = _advice_both_ways(store.conn)
    assert from_rows.n == 300
    _same_advice(from_rows, from_sums)


def test_an_older_database_has_its_scored_pairs_summed_when_it_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "old-pairs.db"
    conn = _before(path, "m003_shadow_scores")
    rng = random.Random(9)
    _paired(conn, rng, 0, 80)
    score(conn, "A", 100.5, 80 * 60_000 + HORIZON)
    score(conn, "B", 99.5, 80 * 60_000 + HORIZON)
    conn.commit()
    conn.close()

    db = open_writer(path)
    try:
        from_rows, from_sums = _advice_both_ways(db.conn)
        assert from_rows.n == 80
        _same_advice(from_rows, from_sums)
    finally:
        db.conn.close()


def test_the_latest_scored_predictions_are_read_off_an_index_unsorted(store: Database) -> None:
    # The engine asks every minute, on the trading thread: its cost must not grow with
    # the version's history (no sort of every scored row to keep the last `window`).
    conn = store.conn
    rng = random.Random(5)
    _predict(conn, rng, 0, 300)
    _score_all(conn, rng, 300)
    plan = " ".join(
        str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {RECENT}", ("v1", "champion", 50))
    )
    assert "predictions_scored" in plan and "TEMP B-TREE" not in plan
    latest = conn.execute(
        "SELECT proba, outcome FROM predictions WHERE model_version = 'v1'"
        " AND role = 'champion' AND scored_at IS NOT NULL ORDER BY ts DESC LIMIT 50"
    ).fetchall()
    accuracy, n = recent_accuracy(conn, "v1", "champion", 50)
    assert n == 50
    assert accuracy == pytest.approx(sum((p >= 0.5) == y for p, y in latest) / 50)


def test_scoring_a_symbol_reads_only_that_symbols_due_predictions(store: Database) -> None:
    # The monitor scores every symbol every second on the trading thread: with the
    # due index keyed on horizon alone, each symbol's update walked every symbol's
    # due rows, symbols x due rows a step.
    conn = store.conn
    rng = random.Random(3)
    _predict(conn, rng, 0, 200)
    plan = " ".join(
        str(row[3])
        for row in conn.execute(f"EXPLAIN QUERY PLAN {SCORE}", (101.0, 101.0, 1, "A", 1))
    )
    assert "predictions_due (symbol=? AND horizon_ts<?)" in plan, plan
    now = 100 * 60_000 + HORIZON
    due_a = conn.execute(
        "SELECT COUNT(*) FROM predictions WHERE symbol = 'A' AND horizon_ts <= ?", (now,)
    ).fetchone()[0]
    assert due_a > 0 and score(conn, "A", 101.0, now) == due_a
    scored = conn.execute(
        "SELECT symbol, COUNT(*) FROM predictions WHERE scored_at IS NOT NULL GROUP BY symbol"
    ).fetchall()
    assert scored == [("A", due_a)]
