"""Market hours on exchange calendars, and event blackouts from the operator's file."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.config import RiskSettings
from engine.domain import Intent, Purpose, Side
from engine.market.calendar import (
    DEFAULT_EVENTS_FILE,
    EVENTS_RECHECK_SECONDS,
    Blackout,
    EventsFileError,
    MarketCalendar,
    parse_events,
)
from engine.risk import RiskContext, RiskGate


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


XNYS = MarketCalendar({"AAPL": "XNYS"})
HEADER = "start,name,kind,symbols,before_minutes,after_minutes\n"


def test_christmas_is_not_a_session() -> None:
    reason = XNYS.closed_reason("AAPL", ms("2026-12-25T15:00"))
    assert reason is not None and "no session on 2026-12-25" in reason


def test_the_exchange_is_open_during_a_regular_session() -> None:
    assert XNYS.is_open("AAPL", ms("2026-12-23T15:00"))


def test_the_exchange_is_closed_after_the_early_close_on_christmas_eve() -> None:
    assert not XNYS.is_open("AAPL", ms("2026-12-24T19:00"))


def test_a_symbol_without_an_exchange_trades_around_the_clock() -> None:
    assert XNYS.is_open("SIM", ms("2026-12-25T15:00"))


def test_the_gate_denies_entries_on_a_holiday() -> None:
    now = ms("2026-12-25T15:00")
    ctx = RiskContext(now=now, equity=100_000, last_prices={"AAPL": 100.0}, atr_pct={"AAPL": 0.01})
    intent = Intent("AAPL", Side.BUY, 10, Purpose.ENTRY, stop_loss=95, take_profit=120)
    verdict = RiskGate(RiskSettings(), XNYS).check(intent, ctx)
    assert (verdict.allowed, verdict.check) == (False, "market_hours")


def test_next_sessions_skip_the_holiday() -> None:
    sessions = XNYS.next_sessions(ms("2026-12-24T20:00"), per_exchange=2)
    opens = [datetime.fromtimestamp(s.open / 1000, UTC).date().isoformat() for s in sessions]
    assert opens == ["2026-12-28", "2026-12-29"]


def test_an_event_with_a_time_gets_its_windows() -> None:
    (b,) = parse_events(HEADER + "2026-12-16T19:00Z,FOMC,central_bank,*,30,60\n")
    assert (b.start, b.end, b.symbols) == (
        ms("2026-12-16T18:30"),
        ms("2026-12-16T20:00"),
        frozenset(),
    )


def test_a_date_alone_blacks_out_the_whole_day() -> None:
    (b,) = parse_events(HEADER + "2026-12-16,AAPL earnings,earnings,AAPL;MSFT,,\n")
    assert (b.start, b.end, b.symbols) == (
        ms("2026-12-16T00:00"),
        ms("2026-12-17T00:00"),
        frozenset({"AAPL", "MSFT"}),
    )


def test_an_offset_is_honoured() -> None:
    (b,) = parse_events(HEADER + "2026-12-16T14:00-05:00,FOMC,central_bank,,0,0\n")
    assert b.event_at == ms("2026-12-16T19:00")


def test_a_bad_row_names_its_line() -> None:
    with pytest.raises(EventsFileError, match=r"events.csv:3: start = 'tomorrow'"):
        parse_events("# comment\n" + HEADER + "tomorrow,FOMC,central_bank,*,0,0\n")


def test_the_shipped_events_file_parses() -> None:
    parse_events(DEFAULT_EVENTS_FILE.read_text())


def test_next_blackouts_are_the_ones_not_over_soonest_first() -> None:
    cal = MarketCalendar(
        blackouts=[Blackout("late", 300, 400), Blackout("over", 0, 100), Blackout("now", 50, 200)]
    )
    assert [b.name for b in cal.next_blackouts(100)] == ["now", "late"]


def test_an_edited_file_is_read_again_within_the_recheck_interval(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER)
    clock = [100.0]
    cal = MarketCalendar(events_file=path, monotonic=lambda: clock[0])
    assert cal.blackouts() == ()
    path.write_text(HEADER + "2026-12-16,CPI,macro,*,0,0\n")
    os.utime(path, (1, 1))  # a distinct mtime even on coarse file systems
    clock[0] += EVENTS_RECHECK_SECONDS / 2
    assert cal.blackouts() == ()  # not looked at again yet: no stat on every order
    clock[0] += EVENTS_RECHECK_SECONDS / 2
    assert [b.name for b in cal.blackouts()] == ["CPI"]


def test_a_broken_edit_keeps_the_last_good_list(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "2026-12-16,CPI,macro,*,0,0\n")
    clock = [100.0]
    cal = MarketCalendar(events_file=path, monotonic=lambda: clock[0])
    cal.blackouts()
    path.write_text(HEADER + "soon,CPI,macro,*,0,0\n")
    os.utime(path, (2, 2))
    clock[0] += EVENTS_RECHECK_SECONDS
    assert [b.name for b in cal.blackouts()] == ["CPI"]


def test_a_blackout_window_denies_entries_until_its_end(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "2026-12-16T19:00Z,FOMC,central_bank,*,30,60\n")
    gate = RiskGate(RiskSettings(), MarketCalendar(events_file=path))
    intent = Intent("SIM", Side.BUY, 10, Purpose.ENTRY, stop_loss=95, take_profit=120)
    base = {"equity": 100_000, "last_prices": {"SIM": 100.0}, "atr_pct": {"SIM": 0.01}}
    during = gate.check(intent, RiskContext(now=ms("2026-12-16T18:45"), **base))  # type: ignore[arg-type]
    after = gate.check(intent, RiskContext(now=ms("2026-12-16T20:00"), **base))  # type: ignore[arg-type]
    assert (during.check, during.until, after.allowed) == ("blackout", ms("2026-12-16T20:00"), True)


def test_a_gate_from_settings_refuses_a_broken_events_file(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "soon,CPI,macro,*,0,0\n")
    with pytest.raises(EventsFileError, match=":2:"):
        RiskGate.from_settings(RiskSettings(events_file=path))
