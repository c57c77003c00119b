"""Telegram, grouping, per-channel retries, dead letters, the digest and the test
message, against real receivers on 127.0.0.1 (an HTTP server for the Bot API and
webhooks, aiosmtpd for email)."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.__main__ import main
from engine.alerts.deliveries import record
from engine.alerts.notify import Delivery, DeliveryStatus, Notifier
from engine.config import AlertSettings, ConfigError, effective, load_settings
from engine.domain import Severity
from engine.process.runner import Engine
from store.commands import enqueue_command
from store.db import open_writer
from tests.conftest import FakeClock
from tests.http_support import Receiver, receiving
from tests.test_engine import query
from tests.test_notify import FAST, Mailbox, alert, free_port, mailbox, receiver

__all__ = ["mailbox", "receiver"]  # fixtures shared with the notifier's tests

TOKEN = "123456:AAH-T0k3n-PLANTED"


@pytest.fixture
def bot_api() -> Iterator[Receiver]:
    """The Telegram Bot API's sendMessage; its replies are {"ok": true} unless scripted."""
    with receiving("", otherwise=(200, {"ok": True})) as api:
        yield api


def telegram(api_url: str, **kwargs: Any) -> AlertSettings:
    return AlertSettings(
        telegram_token=TOKEN,  # type: ignore[arg-type]
        telegram_chat_id="4242",
        telegram_api_url=api_url,
        **kwargs,
    )


def wait_for(condition: Any, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
    return value


def test_telegram_message_goes_to_the_bot_api_for_the_chat(bot_api: Receiver) -> None:
    notifier = Notifier(telegram(bot_api.url), **FAST)
    notifier.submit(alert(title="Kill switch tripped"))
    assert notifier.close(2)

    ((path, body, _),) = bot_api.requests
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body["chat_id"] == "4242"
    assert body["text"].startswith("[CRITICAL] Kill switch tripped\ndaily loss 6.2% > 6%")
    assert notifier.stats().delivered == 1


def test_telegram_rate_limit_waits_as_long_as_the_api_asks(bot_api: Receiver) -> None:
    bot_api.replies = [(429, {"ok": False, "parameters": {"retry_after": 0.3}})]
    notifier = Notifier(telegram(bot_api.url), **FAST)
    notifier.submit(alert())
    assert notifier.close(3)

    (_, _, first), (_, _, second) = bot_api.requests
    assert second - first >= 0.3  # FAST's own backoff is 0.01 s
    assert notifier.stats().delivered == 1


def test_the_configured_retry_wait_is_the_one_the_engine_uses(bot_api: Receiver) -> None:
    bot_api.replies = [(502, {"ok": False, "description": "Bad Gateway"})]
    notifier = Notifier.from_settings(telegram(bot_api.url, retry_seconds=0.4, group_seconds=0))
    notifier.submit(alert())
    assert notifier.close(5)

    (_, _, first), (_, _, second) = bot_api.requests
    assert second - first >= 0.4
    assert notifier.stats().delivered == 1


def test_a_refused_token_is_not_retried_and_never_logged(
    bot_api: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot_api.replies = [(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})]
    notifier = Notifier(telegram(bot_api.url), **FAST)
    notifier.submit(alert())
    assert notifier.close(2)

    assert len(bot_api.requests) == 1
    (dead,) = notifier.take_deliveries()
    assert (dead.status, dead.error) == (DeliveryStatus.DEAD, "HTTP 401 Unauthorized")
    assert "not delivered" in caplog.text
    assert TOKEN not in caplog.text and "T0k3n" not in caplog.text


def test_an_unreachable_bot_api_never_shows_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = Notifier(telegram(f"http://127.0.0.1:{free_port()}"), **FAST)
    notifier.submit(alert())
    assert notifier.close(2)

    (dead,) = notifier.take_deliveries()
    assert dead.attempts == 3 and "Connection" in dead.error
    for text in (caplog.text, dead.error, dead.target):
        assert "T0k3n" not in text


def test_a_burst_is_held_for_the_window_then_sent_as_one_message(receiver: Receiver) -> None:
    notifier = Notifier(AlertSettings(webhook_url=receiver.url), **{**FAST, "group_seconds": 30.0})
    notifier.submit(alert(1, Severity.HIGH))
    wait_for(lambda: notifier.stats().delivered == 1)  # the first alert goes at once
    for i in range(2, 7):
        notifier.submit(alert(i, Severity.CRITICAL if i == 4 else Severity.HIGH))
    time.sleep(0.3)
    assert len(receiver.bodies) == 1
    assert notifier.close(2)  # closing flushes what the window holds

    grouped = receiver.bodies[1]
    assert [a["id"] for a in grouped["alerts"]] == [2, 3, 4, 5, 6]
    assert grouped["severity"] == "CRITICAL"
    assert grouped["title"].startswith("5 alerts, worst CRITICAL")
    assert notifier.stats().delivered == 6


def test_a_failing_channel_does_not_hold_up_another(mailbox: Mailbox) -> None:
    settings = AlertSettings(
        webhook_url=f"http://127.0.0.1:{free_port()}/hook",
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_to=("operator@example.com",),
    )
    # The webhook's first retry is a minute away: it is still retrying (not failed)
    # when the e-mail has gone, however busy the machine.
    notifier = Notifier(settings, timeout=1.0, attempts=5, backoff=60, group_seconds=0)
    notifier.submit(alert())

    wait_for(lambda: notifier.channel_stats()["email"].delivered == 1, seconds=30)
    assert len(mailbox.messages) == 1
    assert notifier.channel_stats()["webhook"].failed == 0  # still retrying
    notifier.close(0.1)


def engine_with(db_file: Path, clock: FakeClock, **alerts: Any) -> Engine:
    """An engine whose failed sends are retried after 0.05 s, then 0.1 s (the default
    0.5 s would make each dead letter here wait 1.5 s, and a failing channel 4 s)."""
    settings = load_settings(
        engine={"cycle_seconds": 1.0, "symbols": 3, "seed": 11, "warmup_bars": 60},
        alerts={"retry_seconds": 0.05, **alerts},
    )
    eng = Engine(settings, db_file, clock=clock)
    eng.open()
    return eng


def test_a_dead_letter_is_recorded_without_the_secret(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    url = f"http://ops:pw-PLANTED@127.0.0.1:{free_port()}/hooks/PLANTED-path"
    eng = engine_with(db_file, clock, webhook_url=url, min_severity="INFO")
    open_engines.append(eng)
    assert eng.notifier is not None
    wait_for(lambda: eng.notifier and eng.notifier.stats().failed == 1)  # "Engine started"
    eng.heartbeat_job()

    ((channel, target, ids, status, attempts, error),) = query(
        db_file,
        "SELECT channel, target, alert_ids, status, attempts, error FROM alert_deliveries",
    )
    assert (channel, status, attempts, json.loads(ids)) == ("webhook", "dead", 3, [1])
    assert "PLANTED" not in f"{target} {error}"
    assert b"PLANTED" not in db_file.read_bytes()


def test_a_dead_letter_raises_one_alert_per_failing_channel(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    eng = engine_with(db_file, clock, webhook_url=url, group_seconds=0)  # rests 0.4 s, not 5
    open_engines.append(eng)
    eng.trader.alerts.raise_(Severity.HIGH, "risk", "Stop hit", "AAA")  # type: ignore[union-attr]
    wait_for(lambda: eng.notifier and eng.notifier.stats().failed == 1)
    eng.heartbeat_job()  # raises the channel alert, which fails on that channel too
    wait_for(lambda: eng.notifier and eng.notifier.stats().failed == 2)
    eng.heartbeat_job()

    rows = query(db_file, "SELECT severity, title, count FROM alerts WHERE source = 'notify'")
    assert rows == [("HIGH", "Alert channel webhook failing", 2)]
    assert eng.notifier is not None and eng.notifier.stats().pending == 0  # no loop


def test_a_dead_letter_at_shutdown_is_still_recorded(db_file: Path, clock: FakeClock) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    eng = engine_with(db_file, clock, webhook_url=url, min_severity="INFO")
    eng.close()  # waits for "Engine started" to fail on every attempt

    assert query(db_file, "SELECT status, alert_ids FROM alert_deliveries") == [("dead", "[1]")]


def test_the_daily_digest_sums_up_the_day_on_every_channel(
    receiver: Receiver, db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = engine_with(db_file, clock, webhook_url=receiver.url, min_severity="CRITICAL")
    open_engines.append(eng)
    enqueue_command("resume", {}, "cli:tester", db=db_file)  # an audited action
    for _ in range(30):
        clock.advance(1000)
        eng.step()
    eng.digest_job()
    assert eng.notifier is not None and eng.notifier.close(2)

    (body,) = receiver.bodies  # INFO, yet sent: the digest ignores the severity floor
    (cycles,) = query(db_file, "SELECT count(*) FROM cycles")[0]
    assert body["title"] == "Daily digest"
    assert "trading state: ACTIVE" in body["message"]
    assert f"cycles: {cycles} run, 0 failed" in body["message"]
    (head_id, head_hash) = query(db_file, "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")[0]
    assert f"audit head: #{head_id} {head_hash}" in body["message"]


def test_cli_test_message_reports_each_channel(
    receiver: Receiver,
    bot_api: Receiver,
    db_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COCKPIT_ALERTS__WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_CHAT_ID", "4242")
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_API_URL", bot_api.url)
    bot_api.replies = [(400, {"ok": False, "description": "Bad Request: chat not found"})]

    code = main(["alerts", "--db", str(db_file), "test"])
    out, err = capsys.readouterr()
    assert code == 1
    assert receiver.bodies[0]["title"] == "Test message from the cockpit"
    assert "webhook http://127.0.0.1" in out and "delivered (1 attempt)" in out
    assert "FAILED after 1 attempt: HTTP 400 Bad Request: chat not found" in err
    assert "T0k3n" not in out + err


def test_cli_test_message_on_one_channel_only(
    receiver: Receiver, bot_api: Receiver, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COCKPIT_ALERTS__WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_CHAT_ID", "4242")
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_API_URL", bot_api.url)

    assert main(["alerts", "--db", str(db_file), "test", "--channel", "telegram"]) == 0
    assert len(bot_api.requests) == 1
    assert receiver.bodies == []


def test_the_telegram_token_comes_from_the_secrets_store(
    bot_api: Receiver, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN + "\n"))
    assert main(["secrets", "--db", str(db_file), "set", "alerts.telegram_token"]) == 0
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_CHAT_ID", "4242")
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_API_URL", bot_api.url)

    assert main(["alerts", "--db", str(db_file), "test"]) == 0
    assert bot_api.requests[0][0] == f"/bot{TOKEN}/sendMessage"
    assert TOKEN.encode() not in db_file.read_bytes()


def test_a_bad_digest_schedule_stops_the_start_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.digest_cron = '0 7 \* \*'"):
        load_settings(alerts={"digest_cron": "0 7 * *"})


def test_config_output_masks_the_telegram_token() -> None:
    settings = load_settings(alerts={"telegram_token": TOKEN, "telegram_chat_id": "4242"})
    assert "T0k3n" not in json.dumps(effective(settings))


def test_cli_lists_dead_letters_only_when_asked(
    db_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = open_writer(db_file)
    outcome = {"ts": 1_767_225_600_000, "target": "telegram chat 4242", "attempts": 3}
    record(
        db,
        [
            Delivery(
                channel="telegram",
                alert_ids=(7, 8),
                title="2 alerts",
                status=DeliveryStatus.DEAD,
                error="HTTP 502",
                **outcome,
            ),
            Delivery(
                channel="email",
                alert_ids=(9,),
                title="Stop hit",
                status=DeliveryStatus.DELIVERED,
                **outcome,
            ),
        ],
    )
    db.conn.commit()
    db.conn.close()

    assert main(["alerts", "--db", str(db_file), "deliveries", "--dead"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "dead" in line and "alerts 7,8" in line and "HTTP 502" in line
