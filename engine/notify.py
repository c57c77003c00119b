"""Alert delivery to the operator outside the cockpit: a webhook and/or email.

The engine's trading thread calls `Notifier.submit`, which only appends to a bounded
in-memory queue; one daemon thread drains it and talks to the network, so a slow or
dead receiver never delays a cycle. Each channel is retried a few times with
exponential backoff; what finally fails is logged and counted, never raised.

Exceptions (internal to the delivery thread, never seen by `submit`'s caller):

    Exception
     └── DeliveryError          one channel could not deliver one alert
           .retryable           False for answers that a retry cannot change (4xx, bad login)

Secrets: the SMTP password and the webhook URL's path, query and credentials (a
Slack or Teams hook carries its token there) never reach a log line or an outgoing
alert. Log lines name a channel by `redact_url` / host:port, and error texts are
built here from exception types, status codes and server replies, then scrubbed.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol
from urllib.parse import urlsplit

import requests

from engine.config import AlertSettings
from engine.domain import Severity

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = 0.5
DEFAULT_QUEUE_SIZE = 200
_SUBJECT_MAX = 200
_REPLY_MAX = 200


@dataclass(frozen=True, slots=True)
class AlertMessage:
    id: int
    ts: int  # epoch ms
    severity: Severity
    source: str
    title: str
    message: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """Counts since start. `delivered` and `failed` count one per alert per channel."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0  # pushed out of a full queue, submitted after close, or abandoned
    pending: int = 0


class DeliveryError(Exception):
    """One channel could not deliver one alert; the text is safe to log."""

    def __init__(self, text: str, *, retryable: bool) -> None:
        super().__init__(text)
        self.retryable = retryable


class Channel(Protocol):
    name: str  # safe to log: no secret

    def send(self, msg: AlertMessage) -> None:
        """Deliver or raise DeliveryError."""


def redact_url(url: str) -> str:
    """scheme://host[:port]/... : drops credentials, path and query, which may hold tokens."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme or '?'}://{host}{port}/..."


class _Scrubber:
    """Replaces known secret strings; a second line of defence behind building texts here."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Very short values would blank ordinary words and protect nothing.
        found = {s for s in secrets if s and len(s) >= 4}
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _url_secrets(url: str) -> list[str | None]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return [url]
    path_and_query = parts.path + ("?" + parts.query if parts.query else "")
    return [url, parts.query, path_and_query if len(parts.path) > 1 else None, password]


def _os_reason(exc: BaseException) -> str:
    """The innermost OS error text ("[Errno 111] Connection refused") without any URL."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return f"[Errno {current.errno}] {current.strerror}"
        current = current.__cause__ or current.__context__
    return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


class WebhookChannel:
    """POSTs the alert as JSON; 2xx is success, 408/429/5xx and network errors are retried."""

    def __init__(self, url: str, *, timeout: float, scrub: _Scrubber) -> None:
        self._url = url
        self._timeout = timeout
        self._scrub = scrub
        self._session = requests.Session()  # used by the delivery thread only
        self.name = f"webhook {redact_url(url)}"

    def payload(self, msg: AlertMessage) -> dict[str, object]:
        title, message = self._scrub(msg.title), self._scrub(msg.message)
        return {
            "id": msg.id,
            "ts": msg.ts,
            "severity": msg.severity.value,
            "source": self._scrub(msg.source),
            "title": title,
            "message": message,
            "count": msg.count,
            # Slack, Mattermost and most chat hooks render `text` as is.
            "text": f"[{msg.severity.value}] {title}: {message}",
        }

    def send(self, msg: AlertMessage) -> None:
        try:
            # No redirects: a POST silently turned into a GET elsewhere is not a delivery.
            with self._session.post(
                self._url,
                json=self.payload(msg),
                timeout=self._timeout,
                allow_redirects=False,
                headers={"User-Agent": "cockpit-notify"},
            ) as response:
                status = response.status_code
        except requests.RequestException as exc:
            # str(exc) carries the full URL, so only the type and the OS reason are kept.
            reason = _os_reason(exc)
            text = type(exc).__name__ + (f" ({reason})" if reason else "")
            raise DeliveryError(self._scrub(text), retryable=True) from None
        if 200 <= status < 300:
            return
        retryable = status in (408, 429) or status >= 500
        raise DeliveryError(f"HTTP {status}", retryable=retryable)

    def close(self) -> None:
        self._session.close()


class EmailChannel:
    """One SMTP session per alert: STARTTLS and login when configured."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        user: str | None,
        password: str | None,
        starttls: bool,
        timeout: float,
        scrub: _Scrubber,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = tuple(recipients)
        self._user = user
        self._password = password
        self._starttls = starttls
        self._timeout = timeout
        self._scrub = scrub
        self.name = f"smtp {host}:{port}"

    def email(self, msg: AlertMessage) -> EmailMessage:
        title = _one_line(self._scrub(msg.title))
        repeat = f" (x{msg.count})" if msg.count > 1 else ""
        # Header values may not hold line breaks: `_one_line` keeps a title from injecting one.
        subject = f"[{msg.severity.value}] {title}{repeat}"
        if len(subject) > _SUBJECT_MAX:
            subject = subject[: _SUBJECT_MAX - 3] + "..."
        when = datetime.fromtimestamp(msg.ts / 1000, tz=UTC)
        email = EmailMessage()
        email["Subject"] = subject
        email["From"] = self._sender
        email["To"] = ", ".join(self._recipients)
        email["Date"] = format_datetime(when)
        email["Message-ID"] = f"<cockpit-alert-{msg.id}-{msg.ts}@cockpit>"
        email.set_content(
            f"{msg.severity.value}  {self._scrub(msg.title)}\n\n"
            f"source:  {self._scrub(msg.source)}\n"
            f"time:    {when.isoformat(timespec='seconds')}\n"
            f"count:   {msg.count}\n"
            f"alert:   #{msg.id}\n\n"
            f"{self._scrub(msg.message)}\n"
        )
        return email

    def send(self, msg: AlertMessage) -> None:
        email = self.email(msg)
        try:
            # gethostname(): the default EHLO name comes from getfqdn(), a DNS lookup
            # that can stall for seconds on a machine without a resolver.
            with smtplib.SMTP(
                self._host, self._port, timeout=self._timeout, local_hostname=socket.gethostname()
            ) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._user:
                    smtp.login(self._user, self._password or "")
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(
                f"recipients refused ({len(exc.recipients)})", retryable=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            # Covers a refused login (535): retrying a bad password only locks the account.
            raise DeliveryError(
                self._reply_text(exc.smtp_code, exc.smtp_error), retryable=exc.smtp_code < 500
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(
                self._scrub(f"not supported by the server: {exc}"), retryable=False
            ) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS: {type(exc).__name__}", retryable=False) from None
        except OSError as exc:  # SMTPServerDisconnected, refused, timed out
            reason = _os_reason(exc) or str(exc)
            raise DeliveryError(
                self._scrub(f"{type(exc).__name__}: {reason}"), retryable=True
            ) from None

    def _reply_text(self, code: int, reply: bytes | str) -> str:
        if isinstance(reply, bytes):
            reply = reply.decode("utf-8", "replace")
        return self._scrub(f"SMTP {code} {_one_line(reply)[:_REPLY_MAX]}")

    def close(self) -> None:
        """Nothing held between alerts."""


def channels_from(settings: AlertSettings, *, timeout: float) -> list[Channel]:
    """The channels the settings configure; none when alerts stay inside the cockpit."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    secrets: list[str | None] = [password]
    if settings.webhook_url:
        secrets += _url_secrets(settings.webhook_url)
    scrub = _Scrubber(secrets)
    channels: list[Channel] = []
    if settings.webhook_url:
        channels.append(WebhookChannel(settings.webhook_url, timeout=timeout, scrub=scrub))
    if settings.smtp_host and not settings.smtp_to:
        log.warning("alerts.smtp_host is set but alerts.smtp_to is empty: email alerts are off")
    elif settings.smtp_host:
        if settings.smtp_user and not settings.smtp_starttls and not _is_loopback(settings):
            log.warning(
                "alerts.smtp_user is set without alerts.smtp_starttls: "
                "the login to %s crosses the network unencrypted",
                settings.smtp_host,
            )
        channels.append(
            EmailChannel(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                recipients=settings.smtp_to,
                user=settings.smtp_user,
                password=password,
                starttls=settings.smtp_starttls,
                timeout=timeout,
                scrub=scrub,
            )
        )
    return channels


def _is_loopback(settings: AlertSettings) -> bool:
    return settings.smtp_host in ("localhost", "127.0.0.1", "::1")


class Notifier:
    """Delivers alerts at or above `settings.min_severity` from one daemon thread.

    `submit` never blocks on the network: a full queue drops its lowest-severity,
    oldest alert (possibly the new one) and counts it. Without a channel the notifier
    starts no thread and `submit` returns at once.
    """

    def __init__(
        self,
        settings: AlertSettings,
        *,
        channels: Sequence[Channel] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF_SECONDS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if attempts < 1 or queue_size < 1 or timeout <= 0 or backoff < 0:
            raise ValueError("attempts and queue_size must be >= 1, timeout > 0, backoff >= 0")
        self._min_rank = Severity(settings.min_severity).rank
        self._channels = tuple(
            channels if channels is not None else channels_from(settings, timeout=timeout)
        )
        self._attempts = attempts
        self._backoff = backoff
        self._queue_size = queue_size
        self._queue: deque[AlertMessage] = deque()
        self._cond = threading.Condition()
        self._abort = threading.Event()  # set when close() gives up: stop retrying
        self._closing = False
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._thread: threading.Thread | None = None
        if self._channels:
            self._thread = threading.Thread(target=self._run, name="cockpit-notify", daemon=True)
            self._thread.start()
            log.info(
                "alerts at or above %s go to %s",
                settings.min_severity,
                ", ".join(c.name for c in self._channels),
            )
        else:
            log.info("no alert channel configured: alerts stay in the cockpit")

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> Notifier:
        """The notifier the configuration asks for; a no-op one when no channel is set."""
        return cls(settings)

    @property
    def enabled(self) -> bool:
        return bool(self._channels)

    def submit(self, msg: AlertMessage) -> None:
        """Queue an alert for delivery; returns at once, never raises for delivery."""
        if not self._channels or msg.severity.rank < self._min_rank:
            return
        with self._cond:
            if self._closing:
                self._dropped += 1
                log.warning("alert %s submitted after close: not delivered", msg.id)
                return
            if len(self._queue) >= self._queue_size:
                victim = self._make_room(msg)
                self._dropped += 1
                log.warning(
                    "alert queue full (%d): dropped %s alert %s %r",
                    self._queue_size,
                    victim.severity.value,
                    victim.id,
                    victim.title,
                )
                if victim is msg:
                    return
            self._queue.append(msg)
            self._cond.notify()

    def _make_room(self, incoming: AlertMessage) -> AlertMessage:
        """Remove and return the lowest-severity, oldest alert; the incoming one counts too."""
        candidates = [*self._queue, incoming]
        index = min(range(len(candidates)), key=lambda i: (candidates[i].severity.rank, i))
        if index < len(self._queue):
            del self._queue[index]
        return candidates[index]

    def stats(self) -> NotifierStats:
        with self._cond:
            return NotifierStats(self._delivered, self._failed, self._dropped, len(self._queue))

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued, then stop; True when everything was handled in time.

        After `timeout` the thread is told to abandon retries and the rest of the queue
        (counted dropped); it is a daemon, so a request still in flight cannot hold the
        process.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                left = len(self._queue)
            log.warning(
                "alert delivery did not finish within %.1f s; %d alerts left", timeout, left
            )
            return False
        return True

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if self._abort.is_set():
                        self._dropped += len(self._queue)
                        self._queue.clear()
                    if not self._queue:
                        return
                    msg = self._queue.popleft()
                for channel in self._channels:
                    ok = self._deliver(channel, msg)
                    with self._cond:
                        if ok:
                            self._delivered += 1
                        else:
                            self._failed += 1
        finally:
            for channel in self._channels:
                closer = getattr(channel, "close", None)
                if callable(closer):
                    closer()

    def _deliver(self, channel: Channel, msg: AlertMessage) -> bool:
        for attempt in range(1, self._attempts + 1):
            try:
                channel.send(msg)
            except DeliveryError as exc:
                last = attempt == self._attempts or not exc.retryable or self._abort.is_set()
                if last:
                    log.error(
                        "alert %s not delivered to %s after %d attempt(s): %s",
                        msg.id,
                        channel.name,
                        attempt,
                        exc,
                    )
                    return False
                delay = self._backoff * 2 ** (attempt - 1)
                log.warning(
                    "alert %s to %s failed (%s); retry in %.2f s", msg.id, channel.name, exc, delay
                )
                if self._abort.wait(delay):
                    log.error("alert %s to %s abandoned at close", msg.id, channel.name)
                    return False
            except Exception as exc:
                # A bug in a channel must not kill the only delivery thread; the type
                # alone is logged because an unknown exception's text may hold a secret.
                log.error(
                    "alert %s to %s: unexpected %s",
                    msg.id,
                    channel.name,
                    type(exc).__name__,
                )
                return False
            else:
                log.debug("alert %s delivered to %s", msg.id, channel.name)
                return True
        return False
