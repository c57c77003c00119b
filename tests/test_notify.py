"""Alert delivery against real receivers on 127.0.0.1: an HTTP server and aiosmtpd."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from engine.alerts.notify import AlertMessage, EmailChannel, Notifier, _Scrubber, redact_url
from engine.config import AlertSettings
from engine.domain import Severity
from tests.http_support import Receiver, receiving

FAST = {"timeout": 1.0, "attempts": 3, "backoff": 0.01, "group_seconds": 0.0}


def alert(
    id: int = 1, severity: Severity = Severity.CRITICAL, title: str = "Kill switch"
) -> AlertMessage:
    return AlertMessage(
        id=id,
        ts=1_700_000_000_000,
        severity=severity,
        source="risk",
        title=title,
        message="daily loss 6.2% > 6%",
        count=1,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving("/hook") as state:
        yield state


@dataclass
class Mailbox:
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        )
        return "250 OK"


def start_smtp(mailbox: Mailbox, **kwargs: Any) -> Controller:
    mailbox.port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = start_smtp(box)
    yield box
    controller.stop()


def smtp_settings(port: int, **kwargs: Any) -> AlertSettings:
    return AlertSettings(
        smtp_host="127.0.0.1", smtp_port=port, smtp_to=("operator@example.com",), **kwargs
    )


def test_critical_alert_reaches_webhook_as_json(receiver: Receiver) -> None:
    notifier = Notifier(AlertSettings(webhook_url=receiver.url), **FAST)
    notifier.submit(alert())
    assert notifier.close(2)
    (body,) = receiver.bodies
    assert {
        k: body[k] for k in ("id", "ts", "severity", "source", "title", "message", "count")
    } == {
        "id": 1,
        "ts": 1_700_000_000_000,
        "severity": "CRITICAL",
        "source": "risk",
        "title": "Kill switch",
        "message": "daily loss 6.2% > 6%",
        "count": 1,
    }
    assert notifier.stats().delivered == 1


def test_alert_below_min_severity_is_not_sent(receiver: Receiver) -> None:
    notifier = Notifier(AlertSettings(webhook_url=receiver.url, min_severity="HIGH"), **FAST)
    notifier.submit(alert(1, Severity.INFO))
    notifier.submit(alert(2, Severity.HIGH))
    assert notifier.close(2)
    assert [b["id"] for b in receiver.bodies] == [2]


def test_email_arrives_with_severity_and_title_in_subject(mailbox: Mailbox) -> None:
    notifier = Notifier(smtp_settings(mailbox.port), **FAST)
    notifier.submit(alert(title="Kill switch tripped"))
    assert notifier.close(2)
    (mail,) = mailbox.messages
    assert mail["Subject"] == "[CRITICAL] Kill switch tripped"
    assert "daily loss 6.2% > 6%" in mail.get_content()


def test_server_errors_are_retried_until_delivered_once(receiver: Receiver) -> None:
    receiver.replies = [(500, None), (500, None)]
    notifier = Notifier(AlertSettings(webhook_url=receiver.url), **FAST)
    notifier.submit(alert())
    assert notifier.close(2)
    assert len(receiver.bodies) == 3
    assert (notifier.stats().delivered, notifier.stats().failed) == (1, 0)


def test_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.replies = [(400, None)]
    notifier = Notifier(AlertSettings(webhook_url=receiver.url), **FAST)
    notifier.submit(alert())
    assert notifier.close(2)
    assert len(receiver.bodies) == 1
    assert notifier.stats().failed == 1


def test_submit_returns_at_once_while_the_receiver_hangs() -> None:
    # Accepts connections (kernel backlog) but never answers: a synchronous POST would wait.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/hook"
        notifier = Notifier(AlertSettings(webhook_url=url), timeout=1.0, attempts=1)
        started = time.perf_counter()
        notifier.submit(alert())
        elapsed = time.perf_counter() - started
        assert not notifier.close(0.05)
    notifier.close(2)  # the listener is gone: the request fails and the thread ends
    assert elapsed < 0.05


def test_down_receiver_is_counted_failed() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    notifier = Notifier(AlertSettings(webhook_url=url), **FAST)
    notifier.submit(alert())
    assert notifier.close(2)
    stats = notifier.stats()
    assert (stats.delivered, stats.failed, stats.pending) == (0, 1, 0)


def test_smtp_password_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    box = Mailbox()

    def refuse(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        box.logins.append((data.login, data.password))
        return AuthResult(success=False, handled=False)

    controller = start_smtp(box, authenticator=refuse, auth_require_tls=False)
    caplog.set_level(logging.DEBUG, logger="engine.alerts.notify")
    try:
        settings = smtp_settings(box.port, smtp_user="ops", smtp_password="hunter2-Secret")
        notifier = Notifier(settings, **FAST)
        notifier.submit(alert())
        assert notifier.close(2)
    finally:
        controller.stop()
    assert (b"ops", b"hunter2-Secret") in box.logins  # the login really happened
    assert "not delivered" in caplog.text
    assert "hunter2-Secret" not in caplog.text


def test_webhook_token_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    # requests puts the whole URL in a connection error's text; the log must not.
    url = f"http://user:pw-S3cret@127.0.0.1:{free_port()}/hooks/T0K3N-path?token=q-S3cret"
    caplog.set_level(logging.DEBUG, logger="engine.alerts.notify")
    notifier = Notifier(AlertSettings(webhook_url=url), **FAST)
    notifier.submit(alert())
    assert notifier.close(2)
    assert "not delivered" in caplog.text
    for secret in ("pw-S3cret", "T0K3N", "q-S3cret"):
        assert secret not in caplog.text


def test_full_queue_drops_the_oldest_of_the_lowest(receiver: Receiver) -> None:
    receiver.hold = threading.Event()
    settings = AlertSettings(webhook_url=receiver.url, min_severity="WARNING")
    notifier = Notifier(settings, queue_size=3, **FAST)
    notifier.submit(alert(1))
    assert receiver.arrived.wait(2)  # the thread is now busy with alert 1
    notifier.submit(alert(2, Severity.HIGH))
    notifier.submit(alert(3, Severity.WARNING))
    notifier.submit(alert(4, Severity.WARNING))
    notifier.submit(alert(5, Severity.CRITICAL))
    receiver.hold.set()
    assert notifier.close(2)
    assert [b["id"] for b in receiver.bodies] == [1, 2, 4, 5]
    assert notifier.stats().dropped == 1


def test_without_channels_no_thread_is_started() -> None:
    before = threading.active_count()
    notifier = Notifier.from_settings(AlertSettings())
    notifier.submit(alert())
    assert threading.active_count() == before
    assert not notifier.enabled
    assert notifier.close(0)


def test_title_line_breaks_cannot_inject_headers() -> None:
    channel = EmailChannel(
        host="127.0.0.1",
        port=25,
        sender="cockpit@localhost",
        recipients=("operator@example.com",),
        user=None,
        password=None,
        starttls=False,
        timeout=1.0,
        scrub=_Scrubber([]),
    )
    mail = channel.email(alert(title="Stop hit\r\nBcc: someone@example.com"))
    assert mail["Bcc"] is None
    assert mail["Subject"] == "[CRITICAL] Stop hit Bcc: someone@example.com"


def test_redact_url_keeps_only_scheme_host_and_port() -> None:
    url = "https://user:pw@hooks.example.com:8443/services/T/B/X?token=abc"
    assert redact_url(url) == "https://hooks.example.com:8443/..."
