"""The IB adapter over days unattended, through the fake of ib_async's API:
rejections with IB's reason, disconnects mid-order, the circuit breaker, and
connectivity codes as events for the operator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.config import IbSettings
from engine.domain import OrderStatus as Status
from engine.domain import Severity, Side
from engine.execution.brokers.base import BrokerUnavailable
from engine.execution.brokers.ib import IbBroker
from engine.market.feeds import SimulatedFeed
from engine.process.runner import Engine
from tests.conftest import FakeClock, engine_settings
from tests.test_ib_broker import SETTINGS, FakeIB, drain, order, trade_of, wait_for

Make = Callable[..., IbBroker]


@pytest.fixture
def fake() -> FakeIB:
    return FakeIB()


@pytest.fixture
def make(fake: FakeIB) -> Iterator[Make]:
    """Adapters on the fake with test-sized backoff, closed after the test."""
    adapters: list[IbBroker] = []

    def build(settings: IbSettings = SETTINGS, clock: int = 1_000) -> IbBroker:
        adapter = IbBroker(
            settings,
            ib_factory=lambda: fake,
            clock=lambda: clock,
            backoff_seconds=(0.01, 0.05),
            poll_seconds=0.01,
            commission_grace_seconds=0.05,
        )
        adapters.append(adapter)
        return adapter

    yield build
    for adapter in adapters:
        adapter.close()


def events_until(adapter: IbBroker, title: str) -> list[tuple[Severity, str, str]]:
    seen: list[tuple[Severity, str, str]] = []
    wait_for(lambda: bool(seen.extend(adapter.drain_events())) or any(e[1] == title for e in seen))
    return seen


def test_an_order_ib_refuses_is_rejected_with_ibs_reason(make: Make, fake: FakeIB) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    fake.gateway_reject(trade_of(fake, "c-1"), 201, "Order rejected - reason: no permissions")
    [report] = drain(adapter)
    assert report.status is Status.REJECTED
    assert report.detail.startswith("IB 201:") and "no permissions" in report.detail


def test_a_price_off_the_tick_grid_is_rejected(make: Make, fake: FakeIB) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    fake.gateway_reject(trade_of(fake, "c-1"), 110, "The price does not conform to the tick")
    [report] = drain(adapter)
    assert report.status is Status.REJECTED and "IB 110" in report.detail


def test_a_cancel_the_engine_asked_for_stays_canceled_despite_code_202(
    make: Make, fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    trade = trade_of(fake, "c-1")
    fake.gateway_status(trade, "Submitted")
    adapter.cancel("c-1", now=6)
    fake.gateway_reject(trade, 202, "Order Canceled - reason:")
    assert [r.status for r in drain(adapter)] == [Status.ACCEPTED, Status.CANCELED]


def test_a_partly_filled_order_ib_then_refuses_ends_canceled_with_its_fill(
    make: Make, fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1", qty=100), now=5)
    trade = trade_of(fake, "c-1")
    fake.gateway_fill(trade, 40, 10.0, commission=1.0)
    fake.gateway_reject(trade, 201, "Order rejected - reason: margin")
    reports = drain(adapter)
    assert [r.status for r in reports] == [Status.PARTIALLY_FILLED, Status.CANCELED]
    assert reports[0].fill is not None and reports[0].fill.qty == 40


def test_an_order_filled_while_the_link_was_down_is_found_after_reconnecting(
    make: Make, fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1", Side.SELL, qty=50), now=5)
    fake.gateway_drop()
    try:
        adapter.lookup("c-1")
        raise AssertionError("lookup must not answer while disconnected")
    except BrokerUnavailable:
        pass
    fake.gateway_fill(trade_of(fake, "c-1"), 50, 99.5, commission=1.0)
    fake.reachable = True
    assert wait_for(lambda: adapter.connected)
    state = adapter.lookup("c-1")
    assert state is not None and (state.status, state.filled_qty) == (Status.FILLED, 50)


def test_the_breaker_opens_after_repeated_failed_connects_and_closes_on_success(
    make: Make, fake: FakeIB
) -> None:
    fake.reachable = False
    adapter = make(settings=IbSettings(timeout_seconds=0.3, breaker_failures=3))
    opened = events_until(adapter, "IB circuit breaker open: entries blocked")
    assert adapter.breaker_open and not adapter.connected
    assert (Severity.HIGH, "IB circuit breaker open: entries blocked") in [e[:2] for e in opened]
    fake.reachable = True
    closed = events_until(adapter, "IB circuit breaker closed")
    assert any(e[1] == "IB circuit breaker closed" for e in closed)
    assert not adapter.breaker_open and adapter.connected


def test_connectivity_lost_outside_maintenance_is_high(make: Make, fake: FakeIB) -> None:
    adapter = make()
    fake.gateway_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
    [event] = events_until(adapter, "IB lost its connection to IB")
    assert event[0] is Severity.HIGH


def test_the_nightly_reset_is_an_expected_info_event(make: Make, fake: FakeIB) -> None:
    # 1_000 ms after the epoch is 19:00 in New York: inside this window.
    nightly = IbSettings(timeout_seconds=0.3, maintenance_windows=("18:55-19:30",))
    adapter = make(settings=nightly)
    fake.gateway_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
    [event] = events_until(adapter, "IB maintenance")
    assert event[0] is Severity.INFO and "expected" in event[2]


def test_restored_with_data_lost_asks_for_a_resubscription(make: Make, fake: FakeIB) -> None:
    adapter = make()
    fake.gateway_error(1101, "Connectivity restored - data lost.")
    [event] = events_until(adapter, "IB connectivity restored, data lost")
    assert event[0] is Severity.WARNING and "resubscribed" in event[2]


def test_broker_events_become_alerts_on_the_engines_trading_thread(
    make: Make, fake: FakeIB, db_file: Path, clock: FakeClock, open_engines: list[Engine]
) -> None:
    adapter = make()
    settings = engine_settings(broker="ib")
    feed = SimulatedFeed(("AAPL",), seed=1)
    eng = Engine(settings, db_file, clock=clock, broker=adapter, feed=feed, history={})
    eng.open()
    open_engines.append(eng)
    fake.gateway_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
    assert wait_for(lambda: not adapter._events.empty())
    eng.step()
    rows = eng.db.conn.execute(  # type: ignore[union-attr]
        "SELECT severity, source, title FROM alerts WHERE source = 'broker'"
    ).fetchall()
    assert rows == [("HIGH", "broker", "IB lost its connection to IB")]


def test_an_order_ib_refuses_with_10147_is_rejected_with_ibs_reason(
    make: Make, fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    fake.gateway_reject(
        trade_of(fake, "c-1"), 10147, "OrderId 1 that needs to be cancelled is not found."
    )
    [report] = drain(adapter)
    assert report.status is Status.REJECTED and report.detail.startswith("IB 10147:")


def test_no_gateway_on_the_brokers_port_stops_the_start_with_one_line(
    db_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.__main__ import main
    from tests.test_notify import free_port

    port = free_port()
    monkeypatch.setenv("COCKPIT_ENGINE__BROKER", "ib")
    monkeypatch.setenv("COCKPIT_IB__PORT", str(port))
    monkeypatch.setenv("COCKPIT_IB__TIMEOUT_SECONDS", "2")
    code = main(["run", "--db", str(db_file), "--for", "1"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert line.startswith(f"engine not started: no IB API at 127.0.0.1:{port} for orders")
    assert "check ib.port (4002 paper gateway" in line


def test_a_disconnect_in_the_weekly_relogin_window_is_an_expected_info_event(
    make: Make, fake: FakeIB
) -> None:
    # 1_000 ms after the epoch is Wednesday 19:00 in New York: inside this window.
    relogin = IbSettings(timeout_seconds=0.3, maintenance_windows=("wed 18:55-19:30",))
    adapter = make(settings=relogin)
    fake.gateway_drop()
    [event] = events_until(adapter, "IB maintenance")
    assert event[0] is Severity.INFO and "re-login" in event[2]


@pytest.mark.parametrize(
    ("code", "title", "severity"),
    [
        (1102, "IB connectivity restored", Severity.INFO),
        (2110, "IB gateway lost the IB servers", Severity.WARNING),
    ],
)
def test_connectivity_codes_become_events(
    make: Make, fake: FakeIB, code: int, title: str, severity: Severity
) -> None:
    adapter = make()
    fake.gateway_error(code, "Connectivity between TWS and server is broken/restored.")
    [event] = events_until(adapter, title)
    assert event[0] is severity and event[2].startswith(f"IB {code}:")


def test_calls_that_keep_timing_out_open_the_breaker(make: Make, fake: FakeIB) -> None:
    adapter = make(settings=IbSettings(timeout_seconds=0.3, breaker_failures=2))
    assert wait_for(lambda: adapter.connected)
    fake.hang_requests = True
    for _ in range(2):
        with pytest.raises(BrokerUnavailable, match="did not answer"):
            adapter.lookup("elsewhere")
    opened = events_until(adapter, "IB circuit breaker open: entries blocked")
    assert any(e[1] == "IB circuit breaker open: entries blocked" for e in opened)
    assert adapter.breaker_open and not adapter.connected
