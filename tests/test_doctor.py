"""`python -m engine doctor`: one line per check, exit 1 when any is not OK."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.__main__ import main
from engine.config import load_settings
from engine.process.doctor import (
    Check,
    check_broker,
    check_ccxt,
    check_database,
    check_ib_feed,
    within,
)
from tests import ccxt_support
from tests.ccxt_support import LocalExchange
from tests.test_ib_broker import FakeIB
from tests.test_notify import Receiver, free_port, receiver  # noqa: F401 - fixture


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalExchange]:
    for exchange in ccxt_support.serve():
        monkeypatch.setattr(
            "engine.market.ccxt_feed.make_exchange", lambda n, t, e=exchange: e.exchange()
        )
        yield exchange


def doctor(capsys: pytest.CaptureFixture[str], db: Path, *extra: str) -> tuple[int, list[str]]:
    code = main(["doctor", "--db", str(db), *extra])
    return code, capsys.readouterr().out.splitlines()


def test_the_default_configuration_is_ready(
    capsys: pytest.CaptureFixture[str], db_file: Path
) -> None:
    code, lines = doctor(capsys, db_file)
    assert code == 0
    assert [line.split()[0] for line in lines[:-1]] == ["OK"] * 4
    assert lines[-1] == "ready: 4 checks OK"


def test_each_ccxt_market_gets_a_line_with_its_last_candle(local: LocalExchange) -> None:
    settings = load_settings(engine={"feed": "ccxt", "symbols": ("BTC/USDT", "ETH/USDT")})
    checks = check_ccxt(settings, now=lambda: (local.now + 30_000) / 1000)
    by_name = {c.name: c for c in checks}
    assert by_name["feed BTC/USDT"].ok
    assert "last candle 2024-03-01 00:10 UTC (30 s ago)" in by_name["feed BTC/USDT"].detail
    assert not by_name["feed ETH/USDT"].ok and "no candles" in by_name["feed ETH/USDT"].detail


def test_a_ccxt_market_whose_candles_stopped_fails(local: LocalExchange) -> None:
    settings = load_settings(engine={"feed": "ccxt", "symbols": ("BTC/USDT",)})
    checks = check_ccxt(settings, now=lambda: (local.now + 3_600_000) / 1000)
    assert not checks[-1].ok and checks[-1].detail.endswith("data stopped")


def test_an_unknown_ccxt_market_fails_with_its_name(
    capsys: pytest.CaptureFixture[str],
    db_file: Path,
    local: LocalExchange,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COCKPIT_ENGINE__FEED", "ccxt")
    monkeypatch.setenv("COCKPIT_ENGINE__SYMBOLS", '["DOGE/EUR"]')
    code, lines = doctor(capsys, db_file)
    [feed] = [line for line in lines if line.split()[1] == "feed"]
    assert code == 1 and feed.startswith("FAIL") and "no market DOGE/EUR" in feed


def test_no_ib_gateway_on_the_port_says_what_to_start(
    capsys: pytest.CaptureFixture[str], db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COCKPIT_ENGINE__BROKER", "ib")
    monkeypatch.setenv("COCKPIT_IB__PORT", str(free_port()))
    code, lines = doctor(capsys, db_file)
    [broker] = [line for line in lines if line.split()[1] == "broker"]
    assert code == 1 and broker.startswith("FAIL") and "start IB Gateway" in broker


def test_ib_login_currency_and_cash_are_reported() -> None:
    settings = load_settings(engine={"broker": "ib"}, ib={"account": "DU123"})
    checks = check_broker(settings, FakeIB)
    assert all(c.ok for c in checks)
    assert [c.detail for c in checks[1:]] == [
        "logged in, account DU123",
        "currency USD, cash 25,000.00",
    ]


def test_an_ib_gateway_that_is_not_logged_in_fails_the_login_check() -> None:
    def gateway() -> FakeIB:
        fake = FakeIB()
        fake.accounts = []
        return fake

    checks = check_broker(load_settings(engine={"broker": "ib"}), gateway)
    assert [(c.name, c.ok) for c in checks] == [("broker", True), ("broker login", False)]


def test_a_check_that_does_not_answer_in_time_fails() -> None:
    never = threading.Event()
    [check] = within("feed", lambda: [Check("feed", never.wait(5), "")], limit=0.1)
    never.set()
    assert (check.ok, check.detail) == (False, "no answer within 0.1 s")


def test_a_damaged_database_fails_with_what_to_do(tmp_path: Path) -> None:
    damaged = tmp_path / "cockpit.db"
    damaged.write_bytes(b"not a database at all" * 100)
    [check] = check_database(damaged)
    assert not check.ok and "restore the latest backup" in check.detail


def test_test_alert_reaches_the_webhook(
    capsys: pytest.CaptureFixture[str],
    db_file: Path,
    receiver: Receiver,  # noqa: F811 - fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COCKPIT_ALERTS__WEBHOOK_URL", receiver.url)
    code, lines = doctor(capsys, db_file, "--test-alert")
    assert code == 0 and any("test message delivered" in line for line in lines)
    assert receiver.bodies[0]["title"] == "Cockpit test alert"


def test_test_alert_to_a_dead_webhook_fails(
    capsys: pytest.CaptureFixture[str], db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COCKPIT_ALERTS__WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hook")
    code, lines = doctor(capsys, db_file, "--test-alert")
    [alert] = [line for line in lines if "alerts" in line]
    assert code == 1 and alert.startswith("FAIL") and "not delivered" in alert


def test_ib_market_data_is_checked_per_symbol() -> None:
    from tests.test_ib_feed import FakeGateway

    gateway = FakeGateway()
    gateway.unpermitted.add("MSFT")
    settings = load_settings(engine={"feed": "ib", "symbols": ("AAPL", "MSFT", "ZZZZ")})
    by_name = {c.name: c for c in check_ib_feed(settings, lambda: gateway)}
    assert by_name["feed AAPL"].ok and "market data permitted" in by_name["feed AAPL"].detail
    assert not by_name["feed MSFT"].ok and "IB 354" in by_name["feed MSFT"].detail
    assert "subscription" in by_name["feed MSFT"].detail
    assert not by_name["feed ZZZZ"].ok and "unknown to IB" in by_name["feed ZZZZ"].detail
