"""The pure rules of the IB link: backoff, breaker, message budget, pacing, codes, windows."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from engine.execution.brokers.ib_link import (
    Backoff,
    CircuitBreaker,
    HistoricalPacing,
    IbEvent,
    TokenBucket,
    classify,
    in_maintenance,
    parse_window,
)

WINDOWS = ("23:40-01:05", "sun 00:00-03:00")


def new_york(text: str) -> int:
    moment = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("America/New_York"))
    return int(moment.timestamp() * 1000)


def test_backoff_grows_to_its_ceiling_and_stays_within_5_to_300_seconds() -> None:
    backoff = Backoff(5, 300, rng=random.Random(1))
    delays = [backoff.next() for _ in range(20)]
    assert all(5 <= d <= 300 for d in delays)
    assert delays[-1] >= 150  # at the ceiling, jittered into its upper half


def test_backoff_is_jittered_so_two_clients_do_not_retry_together() -> None:
    a, b = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [a.next() for _ in range(6)] != [b.next() for _ in range(6)]


def test_backoff_starts_over_after_a_reset() -> None:
    backoff = Backoff(5, 300, rng=random.Random(3))
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 5


def test_breaker_opens_at_the_threshold_and_one_success_closes_it() -> None:
    breaker = CircuitBreaker(3)
    assert [breaker.failure() for _ in range(3)] == [False, False, True]
    assert breaker.open
    assert breaker.success() and not breaker.open


def test_the_message_budget_lets_45_through_then_spaces_them() -> None:
    now = [0.0]
    bucket = TokenBucket(45.0, clock=lambda: now[0])
    delays = [bucket.delay() for _ in range(47)]
    assert delays[:45] == [0.0] * 45
    assert delays[45:] == pytest.approx([1 / 45, 2 / 45])


def test_pacing_holds_the_61st_request_until_the_first_leaves_the_ten_minutes() -> None:
    pacing = HistoricalPacing()
    for i in range(60):
        pacing.sent(f"req-{i}", now=float(i))
    assert pacing.wait("req-60", now=60.0) == pytest.approx(540.0)


def test_pacing_spaces_an_identical_request_by_15_seconds() -> None:
    pacing = HistoricalPacing()
    pacing.sent("AAPL 1 D 1 min", now=100.0)
    assert pacing.wait("AAPL 1 D 1 min", now=104.0) == pytest.approx(11.0)
    assert pacing.wait("MSFT 1 D 1 min", now=104.0) == 0.0


@pytest.mark.parametrize(
    ("code", "message", "event"),
    [
        (1100, "Connectivity between IB and TWS has been lost", IbEvent.CONNECTION_LOST),
        (1101, "Connectivity restored - data lost", IbEvent.RESTORED_DATA_LOST),
        (1102, "Connectivity restored - data maintained", IbEvent.RESTORED),
        (2110, "Connectivity between TWS and server is broken", IbEvent.SERVER_LINK),
        (2104, "Market data farm connection is OK:usfarm", IbEvent.FARM_OK),
        (2158, "Sec-def data farm connection is OK", IbEvent.FARM_OK),
        (2103, "Market data farm connection is broken:usfarm", IbEvent.FARM_LOST),
        (2105, "HMDS data farm connection is broken:ushmds", IbEvent.FARM_LOST),
        (201, "Order rejected - reason: no trading permissions", IbEvent.ORDER_REJECTED),
        (110, "The price does not conform to the minimum price variation", IbEvent.ORDER_REJECTED),
        (162, "Historical Market Data Service error message:API pacing violation", IbEvent.PACING),
        (
            162,
            "Historical Market Data Service error message:HMDS query returned no data",
            IbEvent.OTHER,
        ),
        (354, "Requested market data is not subscribed", IbEvent.NO_PERMISSION),
        (200, "No security definition has been found for the request", IbEvent.UNKNOWN_CONTRACT),
    ],
)
def test_ib_codes_are_classified(code: int, message: str, event: IbEvent) -> None:
    assert classify(code, message) is event


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-12-01T23:50", True),  # nightly reset, before midnight
        ("2026-12-02T00:30", True),  # nightly reset, after midnight
        ("2026-12-02T12:00", False),
        ("2026-12-06T02:00", True),  # Sunday: weekly re-login
        ("2026-12-07T02:00", False),  # Monday at the same hour
    ],
)
def test_maintenance_windows_are_read_in_new_york_time(when: str, expected: bool) -> None:
    assert in_maintenance(new_york(when), WINDOWS, "America/New_York") is expected


def test_a_malformed_window_says_how_to_write_it() -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_window("nightly")
