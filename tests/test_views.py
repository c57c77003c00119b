"""The cockpit's read models (cockpit/*_views.py) against real SQLite files written
through the schema."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cockpit import (
    alerts_views,
    marathon_views,
    orders_views,
    overview_views,
    reader,
    regime_views,
    status_views,
    ui,
)
from engine.market.calendar import TradingDay
from engine.risk import limits, load_risk_facts
from store.db import open_writer
from store.status import read_status

DAY = reader.DAY_MS
T0 = int(datetime(2026, 3, 1, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with the schema and no rows, made once: the property tests below
    copy it for each example instead of building the schema every time."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    open_writer(path).conn.close()
    return path


def _copy_of(empty_store: Path, folder: Path) -> Path:
    path = folder / "c.db"
    shutil.copy(empty_store, path)
    return path


@pytest.fixture
def db(tmp_path: Path):
    path = tmp_path / "v.db"
    writer = open_writer(path)
    yield path, writer
    writer.conn.close()


def _equity(writer, marks: list[tuple[int, float]]) -> None:
    peak = 0.0
    rows = []
    for ts, eq in marks:
        peak = max(peak, eq)
        rows.append((ts, eq, eq, peak, 1 - eq / peak))
    writer.conn.executemany(
        "INSERT INTO equity (ts, cash, equity, peak, drawdown) VALUES (?, ?, ?, ?, ?)", rows
    )
    writer.conn.commit()


def _cycles(writer, starts: list[int], durations: list[float] | None = None, errors=()) -> None:
    durations = durations or [10.0] * len(starts)
    writer.conn.executemany(
        "INSERT INTO cycles (started_at, duration_ms, error) VALUES (?, ?, ?)",
        [
            (s, d, "boom" if i in errors else None)
            for i, (s, d) in enumerate(zip(starts, durations, strict=True))
        ],
    )
    writer.conn.commit()


def _engine(writer, heartbeat: int, cycle_seconds: float = 1.0, **extra) -> None:
    row = {
        "id": 1,
        "owner": "t",
        "pid": 1,
        "started_at": heartbeat - 1000,
        "heartbeat_at": heartbeat,
        "trading_state": "ACTIVE",
        "cycle_seconds": cycle_seconds,
        **extra,
    }
    writer.table("engine").upsert(row, pk="id")
    writer.conn.commit()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(min_value=1, max_value=3000),
    points=st.integers(min_value=2, max_value=200),
)
def test_equity_curve_is_thinned_to_stored_marks(
    tmp_path_factory, empty_store: Path, n: int, points: int
) -> None:
    path = _copy_of(empty_store, tmp_path_factory.mktemp("eq"))
    writer = open_writer(path)
    _equity(writer, [(T0 + i * 60_000, 100_000 + (i * 37 % 101)) for i in range(n)])
    writer.conn.close()
    curve = overview_views.equity_curve(path, points=points)
    stored = {T0 + i * 60_000: 100_000 + (i * 37 % 101) for i in range(n)}
    assert len(curve) <= points
    assert all(stored[int(t)] == e for t, e in zip(curve["ts"], curve["equity"], strict=True))
    assert int(curve["ts"].iloc[-1]) == T0 + (n - 1) * 60_000


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.integers(min_value=1, max_value=1500),
    after=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=4),
    window=st.sampled_from([None, 90, 600]),
    points=st.integers(min_value=2, max_value=120),
)
def test_an_equity_curve_extended_from_the_cache_equals_one_sampled_afresh(
    tmp_path_factory, empty_store: Path, *, before: int, after: list[int], window, points: int
) -> None:
    path = _copy_of(empty_store, tmp_path_factory.mktemp("eqc"))
    writer = open_writer(path)
    n = before
    _equity(writer, [(T0 + i * 60_000, 100_000 + (i * 37 % 101)) for i in range(n)])
    for more in after:
        since = None if window is None else T0 + (n - window) * 60_000
        overview_views.equity_curve(path, since, points)  # leaves its samples in the cache
        _equity(writer, [(T0 + i * 60_000, 100_000 + (i * 37 % 101)) for i in range(n, n + more)])
        n += more
        since = None if window is None else T0 + (n - window) * 60_000
        extended = overview_views.equity_curve(path, since, points)
        overview_views.CURVES.clear()
        afresh = overview_views.equity_curve(path, since, points)
        assert extended.equals(afresh)
        assert int(extended["ts"].iloc[-1]) == T0 + (n - 1) * 60_000
        assert len(extended) <= points
    writer.conn.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.floats(min_value=0.1, max_value=1e4), min_size=1, max_size=300))
def test_cycle_percentiles_are_nearest_rank(
    tmp_path_factory, empty_store: Path, durations: list[float]
) -> None:
    path = _copy_of(empty_store, tmp_path_factory.mktemp("cy"))
    writer = open_writer(path)
    _cycles(writer, [T0 + i * 1000 for i in range(len(durations))], durations)
    writer.conn.close()
    p50, p99 = marathon_views.cycle_percentiles(path, since=0)
    assert p50 == pytest.approx(np.percentile(durations, 50, method="inverted_cdf"))
    assert p99 == pytest.approx(np.percentile(durations, 99, method="inverted_cdf"))


def _nearest_rank(durations: list[float | None], q: float) -> float | None:
    """SQL's nearest rank: NULL durations sort first and count, but are never the answer."""
    known = sorted(d for d in durations if d is not None)
    blank = len(durations) - len(known)
    k = max(int(np.ceil(q * len(durations))), blank + 1)
    return known[k - blank - 1] if known else None


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10 * 3_600_000),
            st.one_of(st.none(), st.floats(min_value=0.1, max_value=1e4)),
            st.booleans(),
        ),
        min_size=1,
        max_size=200,
    )
)
def test_cycle_times_per_bucket_are_nearest_rank(tmp_path_factory, cycles) -> None:
    path = tmp_path_factory.mktemp("cb") / "c.db"
    writer = open_writer(path)
    writer.conn.executemany(
        "INSERT INTO cycles (started_at, duration_ms, error) VALUES (?, ?, ?)",
        [(T0 + t, d, "boom" if e else None) for t, d, e in cycles],
    )
    writer.conn.commit()
    writer.conn.close()
    times = marathon_views.cycle_times(path, since=T0, bucket_ms=3_600_000)
    for row in times.itertuples():
        inside = [(d, e) for t, d, e in cycles if (T0 + t) // 3_600_000 * 3_600_000 == row.bucket]
        known = sorted(d for d, _ in inside if d is not None)
        assert row.cycles == len(inside)
        assert row.errors == sum(e for _, e in inside)
        for q, got in ((0.5, row.p50_ms), (0.99, row.p99_ms)):
            want = _nearest_rank([d for d, _ in inside], q)
            assert (np.isnan(got) and want is None) or got == want
        assert (np.isnan(row.max_ms) and not known) or row.max_ms == max(known)
    assert int(times["cycles"].sum()) == len(cycles)


def test_gaps_beyond_one_and_a_half_cycles_count_as_missed(db) -> None:
    path, writer = db
    # one-second cycles; a 5 s gap misses 4 cycles, a 1.4 s gap misses none
    starts = [T0, T0 + 1000, T0 + 2400, T0 + 7400, T0 + 8400]
    _cycles(writer, starts, errors={1})
    _engine(writer, heartbeat=T0 + 8400, cycle_seconds=1.0)
    facts = marathon_views.marathon_facts(path, T0 + 8400, lookback_days=7)
    assert (facts.cycles, facts.gaps, facts.missed, facts.failed) == (5, 1, 4, 1)


def test_a_recent_halt_is_counted_from_the_audit(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0)
    writer.conn.executemany(
        "INSERT INTO audit (ts, actor, action, payload) VALUES (?, 'op', 'state_change', ?)",
        [
            (T0 - 10 * DAY, '{"from": "ACTIVE", "to": "HALTED"}'),
            (T0 - DAY, '{"from": "ACTIVE", "to": "HALTED"}'),
            (T0 - DAY + 5, '{"from": "HALTED", "to": "ACTIVE"}'),
        ],
    )
    writer.conn.commit()
    facts = marathon_views.marathon_facts(path, T0, lookback_days=7)
    assert (facts.halts, facts.last_halt_at) == (1, T0 - DAY)


def test_daily_pnl_adds_up_to_the_total_over_the_engines_trading_days(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0, trading_day="XNYS@00:00")
    marks = [(T0 + i * 3_600_000, 100_000 + 50 * i - (i % 7) * 30) for i in range(24 * 5)]
    _equity(writer, marks)
    daily = marathon_views.pnl_per_day(path)
    assert daily["pnl"].sum() == pytest.approx(marks[-1][1] - marks[0][1])
    # each trading day starts at the previous session's close: 21:00 UTC in March 2026
    assert {datetime.fromtimestamp(d / 1000, ZoneInfo("UTC")).hour for d in daily["day"]} == {21}


def test_the_overviews_day_pnl_equals_the_gates_daily_loss_on_the_same_marks(db) -> None:
    path, writer = db
    midnight = T0 + DAY  # 2026-03-02 00:00 UTC
    _equity(writer, [(midnight - 60_000, 100_000), (midnight + 1_800_000, 97_000)])
    _equity(writer, [(midnight + 14 * 3_600_000, 95_000)])
    _engine(writer, heartbeat=T0, market_time=midnight + 14 * 3_600_000, trading_day="24/7@00:00")
    market_now = midnight + 14 * 3_600_000
    gate = load_risk_facts(writer.conn, market_now, day=TradingDay.from_spec("24/7@00:00"))
    overview = overview_views.account_summary(path, market_now + 5 * DAY)  # wall clock days later
    assert limits.loss_today(gate.context(equity=95_000)) == 5_000
    assert overview.day_pnl == -5_000


def test_day_pnl_is_measured_from_the_last_mark_before_midnight(db) -> None:
    path, writer = db
    midnight = T0 + DAY // 2 - (T0 + DAY // 2) % DAY
    _equity(
        writer,
        [(midnight - 60_000, 100_000), (midnight + 60_000, 100_250), (midnight + 120_000, 100_400)],
    )
    s = overview_views.account_summary(path, midnight + 180_000)
    assert (s.equity, s.day_pnl, s.total_pnl) == (100_400, 400, 400)


def test_a_stopped_engine_is_stale_even_with_a_recent_heartbeat(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0, stopped_at=T0)
    assert status_views.engine_status(path, T0 + 500).stale


def test_an_old_heartbeat_is_stale_and_a_new_one_fresh(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0)
    assert not status_views.engine_status(path, T0 + 2_000).stale
    assert status_views.engine_status(path, T0 + 60_000).stale


def test_alert_counts_over_time_add_up_to_the_filtered_count(db) -> None:
    path, writer = db
    writer.conn.executemany(
        "INSERT INTO alerts (ts, severity, source, title) VALUES (?, ?, ?, 't')",
        [
            (T0 + i * 600_000, ["INFO", "HIGH"][i % 2], ["feed", "risk"][i % 3 == 0])
            for i in range(100)
        ],
    )
    writer.conn.commit()
    flt = alerts_views.AlertFilter(severities=("HIGH",), sources=("risk",))
    counts = alerts_views.alert_counts_over_time(path, flt)
    assert counts["alerts"].sum() == alerts_views.alerts_count(path, flt) > 0


def test_time_in_regime_lasts_until_the_next_call(db) -> None:
    path, writer = db
    writer.conn.executemany(
        "INSERT INTO regimes (symbol, ts, regime, source) VALUES ('A', ?, ?, 'rules')",
        [(T0, "range"), (T0 + 3_600_000, "trend_up"), (T0 + 3 * 3_600_000, "range")],
    )
    writer.conn.commit()
    spent = regime_views.time_in_regime(path, "A").set_index("regime")
    assert spent.loc["trend_up", "hours"] == 2.0
    assert spent["share"].sum() == pytest.approx(1.0)


def test_order_filter_and_csv_export_agree(db) -> None:
    path, writer = db
    writer.conn.executemany(
        "INSERT INTO orders (client_order_id, symbol, side, qty, type, status, created_at)"
        " VALUES (?, ?, 'BUY', 1, 'MARKET', ?, ?)",
        [(f"c{i}", "AB"[i % 2], ["FILLED", "CANCELED"][i % 3 == 0], T0 + i) for i in range(30)],
    )
    writer.conn.commit()
    flt = orders_views.OrderFilter(symbols=("A",), statuses=("FILLED",))
    csv_lines = orders_views.orders_csv(path, flt).strip().splitlines()
    assert (
        len(csv_lines) - 1
        == orders_views.orders_count(path, flt)
        == len(orders_views.orders(path, flt))
    )


def test_marathon_counts_market_sessions_on_the_engines_trading_day(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0, trading_day="XNYS@00:00")
    _cycles(writer, [T0])
    _equity(writer, [(T0 + i * 6 * 3_600_000, 100_000) for i in range(4 * 7)])  # a week
    assert marathon_views.marathon_facts(path, T0, lookback_days=7).market_sessions == 6


def test_sharpe_like_needs_variation() -> None:
    assert marathon_views.sharpe_like([0.01, 0.01, 0.01]) is None
    assert marathon_views.sharpe_like([0.01, -0.005, 0.02]) == pytest.approx(
        np.mean([0.01, -0.005, 0.02]) / np.std([0.01, -0.005, 0.02], ddof=1) * np.sqrt(252)
    )


def test_a_missing_database_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    assert overview_views.account_summary(path, T0).equity is None
    assert orders_views.orders(path, orders_views.OrderFilter()).empty
    assert not status_views.engine_status(path, T0).present
    assert not path.exists()


def test_missed_cycles_counted_incrementally_equal_a_full_count(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0 + 60_000, cycle_seconds=1.0)
    _cycles(writer, [T0 + i * 1000 for i in range(10)])
    marathon_views.marathon_facts(path, T0 + 60_000, lookback_days=7)  # tallies the first ten
    _cycles(writer, [T0 + 14_000 + i * 1000 for i in range(5)], errors={2})
    incremental = marathon_views.marathon_facts(path, T0 + 60_000, lookback_days=7)
    marathon_views.TALLIES.clear()
    full = marathon_views.marathon_facts(path, T0 + 60_000, lookback_days=7)
    assert (incremental.cycles, incremental.missed, incremental.failed) == (15, 4, 1)
    assert incremental == full


def test_two_hours_without_marks_are_a_gap_and_the_line_breaks_inside_it(db) -> None:
    path, writer = db
    before = [T0 + i * 60_000 for i in range(60)]
    after = [before[-1] + 2 * 3_600_000 + i * 60_000 for i in range(60)]
    _equity(writer, [(t, 100_000.0 + i) for i, t in enumerate(before + after)])
    curve = overview_views.equity_curve(path, points=500)
    gaps = ui.time_gaps(curve["ts"])
    assert gaps == [(before[-1], after[0])]
    broken = ui.broken_at(curve, "ts", gaps)
    inside = broken[(broken["ts"] > before[-1]) & (broken["ts"] < after[0])]
    assert len(inside) == 1 and inside["equity"].isna().all()


def test_evenly_spaced_marks_have_no_gap() -> None:
    assert ui.time_gaps([T0 + i * 60_000 for i in range(100)]) == []


def test_liveness_follows_the_engines_own_heartbeat_interval(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0)
    writer.conn.execute("UPDATE engine SET heartbeat_seconds = 10")
    writer.conn.commit()
    assert not status_views.engine_status(path, T0 + 30_000).stale, "three slow beats late is alive"
    assert status_views.engine_status(path, T0 + 60_000).stale


def test_the_cli_and_the_sidebar_agree_on_liveness(db) -> None:
    path, writer = db
    _engine(writer, heartbeat=T0)
    writer.conn.execute("UPDATE engine SET heartbeat_seconds = 2")
    writer.conn.commit()
    for age in (0, 9_000, 10_000, 10_001, 60_000):
        cli = read_status(path, T0 + age)
        assert cli is not None
        assert cli.running is not status_views.engine_status(path, T0 + age).stale, age


def test_the_tally_cache_keeps_only_its_most_recent_databases(db) -> None:
    cache = marathon_views.LruCache[tuple[str, float], marathon_views.CycleTally](size=2)
    tally = marathon_views.CycleTally(1, 1, T0, 1, 0, 0, 0)
    for name in ("a", "b", "a", "c"):  # "a" used again: "b" is the oldest
        cache.put((name, 1000.0), tally)
    assert len(cache) == 2
    assert cache.get(("b", 1000.0)) is None
    assert cache.get(("a", 1000.0)) == cache.get(("c", 1000.0)) == tally


def test_the_cycle_window_read_incrementally_equals_a_fresh_read(db) -> None:
    path, writer = db
    _cycles(writer, [T0 + i * 60_000 for i in range(100)], [float(i % 17) for i in range(100)])
    first = marathon_views.cycle_window(path, since=T0, bucket_ms=600_000)
    assert int(first.times["cycles"].sum()) == 100
    # more cycles, one failed, and a window that has moved on by 20 minutes
    _cycles(writer, [T0 + i * 60_000 for i in range(100, 130)], [50.0] * 30, errors={3})
    since = T0 + 20 * 60_000
    incremental = marathon_views.cycle_window(path, since=since, bucket_ms=600_000)
    marathon_views.WINDOWS.clear()
    fresh = marathon_views.cycle_window(path, since=since, bucket_ms=600_000)
    assert incremental.times.equals(fresh.times)
    inside = [float(i % 17) for i in range(20, 100)] + [50.0] * 30
    want = tuple(float(np.percentile(inside, q, method="inverted_cdf")) for q in (50, 99))
    assert (incremental.p50_ms, incremental.p99_ms) == (fresh.p50_ms, fresh.p99_ms) == want
    assert int(fresh.times["cycles"].sum()) == 110 and int(fresh.times["errors"].sum()) == 1
