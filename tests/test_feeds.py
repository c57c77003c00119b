from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.domain import Bar, Regime
from engine.market.feeds import (
    BarValidator,
    CsvReplayFeed,
    FeedError,
    Rejection,
    SimulatedFeed,
    default_symbols,
    generate_history,
    parse_timestamp,
)

T0 = 1_700_000_000_000
MINUTE = 60_000


def live(feed: SimulatedFeed, n: int, start: int = T0) -> dict[str, list[Bar]]:
    out: dict[str, list[Bar]] = {s: [] for s in feed.symbols}
    for i in range(n):
        for bar in feed.next_bars(start + i * MINUTE):
            out[bar.symbol].append(bar)
    return out


def log_returns(df: pd.DataFrame) -> pd.Series:
    return np.log(df["close"] / df["open"])


@pytest.fixture(scope="module")
def long_run() -> pd.DataFrame:
    """20 symbols x 5000 bars, concatenated, each row tagged with its symbol."""
    history = generate_history(default_symbols(20), 5000, seed=11)
    return pd.concat([df.assign(symbol=s) for s, df in history.items()], ignore_index=True)


def flat_bar(ts: int, close: float = 100.0, half_range: float = 0.5, symbol: str = "X") -> Bar:
    return Bar(symbol, ts, close, close + half_range, close - half_range, close, 10.0)


def validator_with_history(n: int = 20, **kwargs: float) -> BarValidator:
    """Accepted bars closing at 100 with a true range of exactly 1.0 each."""
    validator = BarValidator(**kwargs)
    validator.seed(flat_bar(T0 + i * MINUTE) for i in range(n))
    return validator


# --- simulator ---------------------------------------------------------------------------


def test_same_seed_gives_the_same_bars() -> None:
    symbols = default_symbols(3)
    assert live(SimulatedFeed(symbols, seed=5), 300) == live(SimulatedFeed(symbols, seed=5), 300)


def test_another_seed_gives_other_bars() -> None:
    a = live(SimulatedFeed(["X"], seed=5), 50)["X"]
    b = live(SimulatedFeed(["X"], seed=6), 50)["X"]
    assert [x.close for x in a] != [x.close for x in b]


def test_adding_a_symbol_leaves_the_others_unchanged() -> None:
    alone = live(SimulatedFeed(["SIM-A", "SIM-B"], seed=5), 300)
    more = live(SimulatedFeed(["SIM-C", "SIM-A", "SIM-B"], seed=5), 300)
    assert alone["SIM-A"] == more["SIM-A"]
    assert alone["SIM-B"] == more["SIM-B"]


def test_history_is_the_same_market_as_the_live_feed() -> None:
    history = generate_history(["X"], 700, seed=3)["X"]
    feed = SimulatedFeed(["X"], seed=3)
    bars = feed.warmup(200, end_ts=T0, interval_ms=MINUTE)["X"] + live(feed, 500)["X"]
    assert np.allclose(history["close"], [b.close for b in bars], rtol=1e-12)
    assert list(history["true_regime"]) == [b.true_regime for b in bars]


def test_every_regime_appears_in_a_long_run(long_run: pd.DataFrame) -> None:
    assert set(long_run["true_regime"]) == {r.value for r in Regime}


def test_crashes_are_short_rare_and_present_within_a_few_thousand_bars(
    long_run: pd.DataFrame,
) -> None:
    crash = long_run["true_regime"] == Regime.CRASH
    new_run = (crash != crash.shift()) | (long_run["symbol"] != long_run["symbol"].shift())
    runs = new_run.cumsum()[crash]
    symbols_with_a_crash = long_run.loc[crash, "symbol"].nunique()
    assert symbols_with_a_crash >= 16  # of 20 symbols, 5000 bars each
    assert crash.mean() < 0.03
    assert runs.value_counts().mean() < 50


def test_high_vol_and_crash_bars_are_more_volatile_than_range(long_run: pd.DataFrame) -> None:
    std = log_returns(long_run).groupby(long_run["true_regime"]).std()
    assert std[Regime.HIGH_VOL] > 2.5 * std[Regime.RANGE]
    assert std[Regime.CRASH] > 4 * std[Regime.RANGE]


def test_trends_drift_in_their_direction(long_run: pd.DataFrame) -> None:
    mean = log_returns(long_run).groupby(long_run["true_regime"]).mean()
    assert mean[Regime.TREND_UP] > 1e-4
    assert mean[Regime.TREND_DOWN] < -1e-4
    assert mean[Regime.CRASH] < -1e-3


def test_a_range_reverts_to_its_level(long_run: pd.DataFrame) -> None:
    shifted = long_run.shift()
    segment = (
        (long_run["true_regime"] != shifted["true_regime"])
        | (long_run["symbol"] != shifted["symbol"])
    ).cumsum()
    ranges = long_run[long_run["true_regime"] == Regime.RANGE].groupby(segment)
    moves = ranges.agg(first=("open", "first"), last=("close", "last"), n=("close", "size"))
    moves = moves[moves["n"] >= 200]
    # A random walk with the range's volatility would move ~0.8 of these units on average.
    rw_units = np.abs(np.log(moves["last"] / moves["first"])) / (0.0007 * np.sqrt(moves["n"]))
    assert len(moves) >= 10
    assert rw_units.mean() < 0.5


def test_volume_is_larger_in_high_vol_than_in_range(long_run: pd.DataFrame) -> None:
    relative = long_run["volume"] / long_run.groupby("symbol")["volume"].transform("median")
    median = relative.groupby(long_run["true_regime"]).median()
    assert median[Regime.HIGH_VOL] > 1.5 * median[Regime.RANGE]


def test_a_marathon_stays_within_a_plausible_band_of_the_start_price() -> None:
    history = generate_history(
        default_symbols(4), 200_000, seed=4, start_prices=dict.fromkeys(default_symbols(4), 100.0)
    )
    for df in history.values():
        assert df["close"].min() > 100 / 10
        assert df["close"].max() < 100 * 10


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), symbol=st.text(min_size=1, max_size=8))
def test_simulated_bars_are_consistent(seed: int, symbol: str) -> None:
    df = generate_history([symbol], 400, seed)[symbol]
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert (df[["open", "close"]].max(axis=1) <= df["high"]).all()
    assert (df["low"] > 0).all()
    assert (df["volume"] > 0).all()
    assert df["volume"].nunique() == len(df)
    assert (df["open"].iloc[1:].to_numpy() == df["close"].iloc[:-1].to_numpy()).all()


def test_a_long_simulated_stream_passes_the_validator() -> None:
    feed = SimulatedFeed(default_symbols(10), seed=1)
    validator = BarValidator()
    rejections = [validator.check(b) for bars in live(feed, 3000).values() for b in bars]
    assert [r for r in rejections if r is not None] == []


def test_live_bars_run_on_the_simulators_own_clock_one_interval_apart() -> None:
    feed = SimulatedFeed(["X"], seed=1)
    stamps = [feed.next_bars(wall)[0].ts for wall in (T0, T0 + 5, T0 + 5, T0 - 100, T0 + 50)]
    first = T0 - T0 % MINUTE  # a fresh market starts on the minute
    assert stamps == [first + i * MINUTE for i in range(5)]


def test_a_simulator_on_an_exchange_calendar_skips_the_closed_hours() -> None:
    feed = SimulatedFeed(["X"], seed=1, calendar="XNYS")
    friday_close = 1_720_209_600_000  # 2024-07-05 20:00 UTC
    warm = feed.warmup(2, end_ts=friday_close, interval_ms=MINUTE)["X"]
    monday_open = 1_720_445_400_000  # 2024-07-08 13:30 UTC
    assert [b.ts for b in warm] == [friday_close - 2 * MINUTE, friday_close - MINUTE]
    assert feed.next_bars(0)[0].ts == monday_open


def test_warmup_ends_at_end_ts_and_live_continues_from_its_last_close() -> None:
    feed = SimulatedFeed(["X"], seed=1)
    warm = feed.warmup(100, end_ts=T0, interval_ms=MINUTE)["X"]
    first_live = feed.next_bars(T0 + 1)[0]
    assert [b.ts for b in warm] == [T0 - (99 - i) * MINUTE for i in range(100)]
    assert first_live.open == warm[-1].close


def test_start_prices_set_the_first_open() -> None:
    feed = SimulatedFeed(["X", "Y"], seed=1, start_prices={"X": 123.45})
    assert feed.next_bars(T0)[0].open == 123.45


def test_resume_continues_from_the_last_close_without_a_rejection() -> None:
    symbols = default_symbols(5)
    first_run = live(SimulatedFeed(symbols, seed=2), 400)
    validator = BarValidator()
    validator.seed(b for bars in first_run.values() for b in bars)
    last = {s: bars[-1] for s, bars in first_run.items()}

    resumed = live(SimulatedFeed.resume(last, seed=2), 300, start=T0 + 400 * MINUTE)

    assert all(resumed[s][0].open == last[s].close for s in symbols)
    assert [validator.check(b) for bars in resumed.values() for b in bars] == [None] * 1500


def test_resume_keeps_the_previous_regime() -> None:
    last = {s: replace(flat_bar(T0, symbol=s), true_regime=Regime.CRASH) for s in "ABCDEFGH"}
    first = SimulatedFeed.resume(last, seed=2).next_bars(T0 + 1)
    assert sum(b.true_regime is Regime.CRASH for b in first) >= 6  # a crash may just end


def test_resume_without_a_known_regime_starts_in_range() -> None:
    first = SimulatedFeed.resume({"X": flat_bar(T0)}, seed=2).next_bars(T0 + 1)
    assert first[0].true_regime is Regime.RANGE


def test_resume_continues_the_market_one_interval_after_the_last_stored_bar() -> None:
    feed = SimulatedFeed.resume({"X": flat_bar(T0)}, seed=2)
    assert feed.next_bars(T0 + 86_400_000)[0].ts == T0 + MINUTE


def test_default_symbols_are_stable_readable_and_distinct() -> None:
    names = default_symbols(30)
    assert names[:3] == ("SIM-A", "SIM-B", "SIM-C")
    assert names[26:28] == ("SIM-AA", "SIM-AB")
    assert len(set(names)) == 30


def test_history_has_the_documented_columns_and_times() -> None:
    df = generate_history(["X"], 5, seed=1, bar_ms=MINUTE, end_ts=T0)["X"]
    assert list(df.columns) == ["ts", "open", "high", "low", "close", "volume", "true_regime"]
    assert df["ts"].tolist() == [T0 - (4 - i) * MINUTE for i in range(5)]
    assert Regime(df["true_regime"].iloc[0]) in Regime


# --- CSV replay --------------------------------------------------------------------------


def write_csv(folder: Path, symbol: str, body: str) -> Path:
    path = folder / f"{symbol}.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + body)
    return path


def test_csv_replay_yields_rows_in_file_order_one_per_call(tmp_path: Path) -> None:
    write_csv(tmp_path, "AAA", "1700000000,10,11,9,10.5,100\n1700000060,10.5,12,10,11,200\n")
    write_csv(tmp_path, "BBB", "1700000000,20,21,19,20.5,50\n")
    feed = CsvReplayFeed(tmp_path)

    calls = [feed.next_bars(0) for _ in range(3)]

    assert [[(b.symbol, b.ts) for b in bars] for bars in calls] == [
        [("AAA", 1_700_000_000_000), ("BBB", 1_700_000_000_000)],
        [("AAA", 1_700_000_060_000)],
        [],
    ]
    assert feed.exhausted


def test_csv_replay_does_not_reorder_rows(tmp_path: Path) -> None:
    write_csv(tmp_path, "AAA", "1700000060,10,11,9,10,1\n1700000000,10,11,9,10,1\n")
    validator = BarValidator()
    feed = CsvReplayFeed(tmp_path)
    results = [validator.check(feed.next_bars(0)[0]) for _ in range(2)]
    assert results[0] is None
    assert results[1] is not None
    assert "(out of order)" in results[1].reason


def test_csv_warmup_returns_the_first_rows_and_replay_continues_after(tmp_path: Path) -> None:
    rows = "".join(f"{1700000000 + 60 * i},10,11,9,10,1\n" for i in range(5))
    write_csv(tmp_path, "AAA", rows)
    feed = CsvReplayFeed(tmp_path)
    warm = feed.warmup(3, end_ts=0, interval_ms=MINUTE)["AAA"]
    assert [b.ts // 1000 - 1700000000 for b in warm] == [0, 60, 120]
    assert feed.next_bars(0)[0].ts == 1_700_000_180_000


def test_csv_only_the_named_symbols_are_replayed(tmp_path: Path) -> None:
    write_csv(tmp_path, "AAA", "1700000000,10,11,9,10,1\n")
    write_csv(tmp_path, "BBB", "1700000000,10,11,9,10,1\n")
    assert CsvReplayFeed(tmp_path, ["BBB"]).symbols == ("BBB",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T23:13:20+01:00", T0),
        ("2023-11-14 22:13:20", T0),  # naive means UTC
        ("1700000000", T0),  # epoch seconds
        ("1700000000.5", T0 + 500),
        ("1700000000000", T0),  # epoch milliseconds
        ("yesterday", None),
        ("", None),
        ("nan", None),
    ],
)
def test_timestamps_parse_from_iso_and_epoch(text: str, expected: int | None) -> None:
    assert parse_timestamp(text) == expected


def test_a_naive_timestamp_is_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_timestamp("2023-11-14 22:13:20") == T0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_bad_csv_row_is_rejected_and_the_next_row_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(
        tmp_path,
        "AAA",
        "1700000000,10,11,9,10,1\n1700000060,10,abc,9,10,1\n1700000120,10,11,9,10.2,1\n",
    )
    feed = CsvReplayFeed(tmp_path)
    validator = BarValidator()

    with caplog.at_level(logging.WARNING):
        results = [validator.check(feed.next_bars(0)[0]) for _ in range(3)]

    assert results[0] is None
    assert results[1] is not None
    assert results[1].reason == "high=nan is not finite"
    assert results[2] is None
    assert "AAA.csv line 3: unreadable high 'abc'" in caplog.text


def test_a_csv_row_with_a_bad_timestamp_is_rejected(tmp_path: Path) -> None:
    write_csv(tmp_path, "AAA", "soon,10,11,9,10,1\n")
    rejection = BarValidator().check(CsvReplayFeed(tmp_path).next_bars(0)[0])
    assert rejection is not None
    assert rejection.reason == "ts=0 is not a valid epoch ms"


def test_a_short_csv_row_is_rejected_not_dropped(tmp_path: Path) -> None:
    write_csv(tmp_path, "AAA", "1700000000,10,11\n")
    rejection = BarValidator().check(CsvReplayFeed(tmp_path).next_bars(0)[0])
    assert rejection is not None
    assert rejection.reason == "low=nan, close=nan, volume=nan are not finite"


def test_a_missing_data_dir_raises_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="nowhere does not exist"):
        CsvReplayFeed(tmp_path / "nowhere")


def test_a_data_dir_without_csv_files_raises_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match=r"has no SYMBOL\.csv files"):
        CsvReplayFeed(tmp_path)


def test_a_missing_symbol_file_raises_feed_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match=r"ZZZ\.csv: no such file for symbol ZZZ"):
        CsvReplayFeed(tmp_path, ["ZZZ"])


def test_a_missing_column_raises_feed_error_naming_file_and_column(tmp_path: Path) -> None:
    (tmp_path / "AAA.csv").write_text("timestamp,open,high,low,close\n1700000000,1,1,1,1\n")
    with pytest.raises(FeedError, match=r"AAA\.csv: missing column\(s\) volume"):
        CsvReplayFeed(tmp_path)


def test_an_empty_csv_file_raises_feed_error(tmp_path: Path) -> None:
    (tmp_path / "AAA.csv").write_text("")
    with pytest.raises(FeedError, match=r"AAA\.csv: the file is empty"):
        CsvReplayFeed(tmp_path)


def test_a_binary_csv_file_raises_feed_error(tmp_path: Path) -> None:
    (tmp_path / "AAA.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    with pytest.raises(FeedError, match=r"AAA\.csv: not a readable UTF-8 CSV"):
        CsvReplayFeed(tmp_path)


def test_csv_symbols_listed_twice_raise_feed_error(tmp_path: Path) -> None:
    write_csv(tmp_path, "AAA", "1700000000,10,11,9,10,1\n")
    with pytest.raises(FeedError, match="AAA are listed more than once"):
        CsvReplayFeed(tmp_path, ["AAA", "AAA"])


def test_csv_row_problems_are_logged_up_to_a_limit_then_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(tmp_path, "AAA", "1700000000,x,11,9,10,1\n" * 25)
    with caplog.at_level(logging.WARNING):
        CsvReplayFeed(tmp_path)
    assert len(caplog.records) == 11
    assert "AAA.csv: 25 unreadable rows in all" in caplog.records[-1].getMessage()


def test_csv_header_case_and_extra_columns_do_not_matter(tmp_path: Path) -> None:
    (tmp_path / "AAA.csv").write_text(
        "Volume,Close,Low,High,Open,Timestamp,Note\n5,10.5,9,11,10,1700000000,x\n"
    )
    bar = CsvReplayFeed(tmp_path).next_bars(0)[0]
    assert bar == Bar("AAA", T0, 10.0, 11.0, 9.0, 10.5, 5.0)


# --- validator ---------------------------------------------------------------------------


GOOD = Bar("X", T0, 10.0, 11.0, 9.0, 10.5, 100.0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"close": math.nan}, "close=nan is not finite"),
        ({"open": math.inf}, "open=inf is not finite"),
        ({"volume": math.nan}, "volume=nan is not finite"),
        ({"high": math.nan, "low": -math.inf}, "high=nan, low=-inf are not finite"),
        ({"low": 0.0}, "low=0.0 is not positive"),
        ({"low": -1.0, "open": -0.5}, "open=-0.5, low=-1.0 are not positive"),
        ({"volume": -1.0}, "volume=-1.0 is negative"),
        ({"high": 8.0}, "high=8.0 is below low=9.0"),
        ({"open": 11.5}, "open=11.5 is outside [low=9.0, high=11.0]"),
        ({"close": 8.99}, "close=8.99 is outside [low=9.0, high=11.0]"),
        ({"ts": 0}, "ts=0 is not a valid epoch ms"),
    ],
)
def test_a_malformed_bar_is_rejected_with_its_reason(
    changes: dict[str, float], reason: str
) -> None:
    bar = replace(GOOD, **changes)
    assert BarValidator().check(bar) == Rejection(bar.symbol, bar.ts, reason)


@pytest.mark.parametrize(
    "changes",
    [
        {"volume": 0.0},
        {"open": 11.0, "close": 9.0},
        {"open": 10.0, "high": 10.0, "low": 10.0, "close": 10.0},
    ],
)
def test_boundary_bars_are_accepted(changes: dict[str, float]) -> None:
    assert BarValidator().check(replace(GOOD, **changes)) is None


_PRICES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 9.0, 10.0, 11.0, math.inf, -math.inf, math.nan]),
)


@settings(max_examples=400, deadline=None)
@given(ts=st.sampled_from([-1, 0, 1, T0]), values=st.tuples(*[_PRICES] * 5))
def test_the_quick_test_of_a_bar_passes_exactly_the_bars_with_nothing_wrong(
    ts: int, values: tuple[float, float, float, float, float]
) -> None:
    from engine.market.feeds import _bar_problem_found, bar_problem

    bar = Bar("GOOG", ts, *values)
    assert bar_problem(bar) == _bar_problem_found(bar)


def test_a_duplicate_bar_is_rejected() -> None:
    validator = BarValidator()
    validator.check(GOOD)
    rejection = validator.check(GOOD)
    assert rejection is not None
    assert rejection.reason == f"ts {T0} is not after the last bar {T0} (duplicate)"


def test_an_earlier_bar_is_rejected_as_out_of_order() -> None:
    validator = BarValidator()
    validator.check(replace(GOOD, ts=1_700_000_060_000))
    rejection = validator.check(GOOD)
    assert rejection is not None
    assert rejection.reason == (
        "ts 1700000000000 is not after the last bar 1700000060000 (out of order)"
    )


def test_a_jump_exactly_at_the_limit_is_accepted() -> None:
    bar = Bar("X", T0 + 20 * MINUTE, 105.0, 110.0, 105.0, 110.0, 1.0)
    assert validator_with_history().check(bar) is None


def test_a_jump_just_above_the_limit_is_rejected() -> None:
    bar = Bar("X", T0 + 20 * MINUTE, 105.0, 110.001, 105.0, 110.001, 1.0)
    rejection = validator_with_history().check(bar)
    assert rejection is not None
    assert rejection.reason == "jump |110.001-100.0|=10.001 exceeds 10 x mean range 1"


def test_a_jump_reason_reads_like_the_spec() -> None:
    validator = BarValidator()
    validator.seed(flat_bar(T0 + i * MINUTE, close=50.0, half_range=0.4) for i in range(20))
    rejection = validator.check(flat_bar(T0 + 20 * MINUTE, close=105.0))
    assert rejection is not None
    assert rejection.reason == "jump |105.0-50.0|=55.0 exceeds 10 x mean range 0.8"


def test_the_jump_limit_follows_max_jump() -> None:
    bar = Bar("X", T0 + 20 * MINUTE, 100.0, 103.5, 100.0, 103.5, 1.0)
    assert validator_with_history(max_jump=3.0).check(bar) is not None


def test_no_jump_check_before_a_few_bars() -> None:
    validator = validator_with_history(n=4)
    assert validator.check(flat_bar(T0 + 4 * MINUTE, close=1000.0)) is None


def test_the_jump_check_uses_only_the_recent_window() -> None:
    validator = BarValidator(window=5)
    validator.seed(flat_bar(T0 + i * MINUTE, half_range=50.0) for i in range(20))
    validator.seed(flat_bar(T0 + (20 + i) * MINUTE) for i in range(5))
    assert validator.check(flat_bar(T0 + 25 * MINUTE, close=111.0)) is not None


def test_a_rejected_jump_does_not_move_the_reference() -> None:
    validator = validator_with_history()
    validator.check(flat_bar(T0 + 20 * MINUTE, close=500.0))
    assert validator.check(flat_bar(T0 + 21 * MINUTE, close=100.5)) is None


def test_a_gap_the_next_bars_confirm_is_a_real_move_and_trading_data_resumes() -> None:
    validator = validator_with_history()  # closes at 100, mean range 1
    crashed = [flat_bar(T0 + (20 + i) * MINUTE, close=80.0 - 0.2 * i) for i in range(6)]
    verdicts = [validator.check(bar) for bar in crashed]
    assert [v is None for v in verdicts] == [False, False, True, True, True, True]
    last = validator.last_accepted("X")
    assert last is not None and last.close == crashed[-1].close


def test_a_lone_spike_is_still_rejected_and_the_level_unchanged() -> None:
    validator = validator_with_history()
    assert validator.check(flat_bar(T0 + 20 * MINUTE, close=500.0)) is not None
    assert validator.check(flat_bar(T0 + 21 * MINUTE, close=60.0)) is not None
    assert validator.check(flat_bar(T0 + 22 * MINUTE, close=100.4)) is None


def test_a_rejected_bar_does_not_advance_the_clock() -> None:
    validator = validator_with_history()
    validator.check(flat_bar(T0 + 30 * MINUTE, close=math.nan))
    assert validator.check(flat_bar(T0 + 20 * MINUTE)) is None


def test_symbols_are_validated_independently() -> None:
    validator = validator_with_history()
    assert validator.check(flat_bar(T0, close=5000.0, symbol="Y")) is None


def test_seed_restores_the_last_bar_from_unsorted_history() -> None:
    validator = BarValidator()
    validator.seed([flat_bar(T0 + MINUTE), flat_bar(T0)])
    assert validator.last_accepted("X") == flat_bar(T0 + MINUTE)


def test_reset_forgets_a_symbol_after_a_real_level_change() -> None:
    validator = validator_with_history()
    validator.reset("X")
    assert validator.check(flat_bar(T0 + 20 * MINUTE, close=500.0)) is None


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(o=finite_or_not, h=finite_or_not, lo=finite_or_not, c=finite_or_not, v=finite_or_not)
def test_an_accepted_bar_is_always_sane(o: float, h: float, lo: float, c: float, v: float) -> None:
    if BarValidator().check(Bar("X", T0, o, h, lo, c, v)) is None:
        assert all(math.isfinite(x) for x in (o, h, lo, c, v))
        assert 0 < lo <= min(o, c) <= max(o, c) <= h
        assert v >= 0


def test_a_bar_closer_than_the_interval_is_rejected_as_mixed_intervals() -> None:
    validator = BarValidator(bar_ms=5 * MINUTE)
    assert validator.check(flat_bar(T0)) is None
    rejection = validator.check(flat_bar(T0 + MINUTE))
    assert rejection is not None and "1m after the last bar" in rejection.reason


def test_a_gap_longer_than_the_interval_passes_the_validator() -> None:
    validator = BarValidator(bar_ms=MINUTE)
    assert validator.check(flat_bar(T0)) is None
    assert validator.check(flat_bar(T0 + 65 * MINUTE)) is None


def test_a_csv_whose_spacing_disagrees_with_the_bar_interval_names_file_and_row(
    tmp_path: Path,
) -> None:
    rows = "".join(f"2024-01-0{d},10,11,9,10,100\n" for d in range(1, 6))
    (tmp_path / "GOOG.csv").write_text("timestamp,open,high,low,close,volume\n" + rows)
    with pytest.raises(FeedError, match=r"GOOG\.csv row 3: bars are 1d apart.*bar_interval is 1m"):
        CsvReplayFeed(tmp_path, bar_ms=MINUTE)


def test_csv_replay_emits_symbols_in_market_time_across_a_gap(tmp_path: Path) -> None:
    header = "timestamp,open,high,low,close,volume\n"
    (tmp_path / "A.csv").write_text(header + "60,1,1,1,1,1\n120,1,1,1,1,1\n180,1,1,1,1,1\n")
    (tmp_path / "B.csv").write_text(header + "60,1,1,1,1,1\n180,1,1,1,1,1\n")
    feed = CsvReplayFeed(tmp_path)
    calls = [sorted((b.symbol, b.ts) for b in feed.next_bars(0)) for _ in range(3)]
    assert calls == [
        [("A", 60_000), ("B", 60_000)],
        [("A", 120_000)],
        [("A", 180_000), ("B", 180_000)],
    ]


def test_a_gap_inside_a_session_rejects_the_bar_after_it_and_the_series_goes_on() -> None:
    validator = BarValidator(bar_ms=MINUTE, exchanges={"X": "XNYS"})
    open_ = 1_720_445_400_000  # 2024-07-08 13:30 UTC, a Monday session
    stamps = [open_, open_ + MINUTE, open_ + 5 * MINUTE, open_ + 6 * MINUTE]
    results = [validator.check(flat_bar(ts)) for ts in stamps]
    assert [r is None for r in results] == [True, True, False, True]
    assert results[2] is not None and "3 bar(s) of 1m missing" in results[2].reason


def test_the_night_between_two_sessions_is_not_a_gap() -> None:
    validator = BarValidator(bar_ms=MINUTE, exchanges={"X": "XNYS"})
    friday_last = 1_720_209_540_000  # 2024-07-05 19:59 UTC
    monday_open = 1_720_445_400_000
    assert validator.check(flat_bar(friday_last)) is None
    assert validator.check(flat_bar(monday_open)) is None
