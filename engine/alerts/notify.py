"""Alert delivery to the operator outside the cockpit: webhook, email and Telegram.

The engine's trading thread calls `Notifier.submit`, which only appends to bounded
in-memory queues, one per channel; each channel has its own daemon thread, so a slow
or dead receiver never delays a cycle, nor another channel. Per channel:

- each message is retried with exponential backoff (a Telegram 429 says how long);
- a burst is grouped: the first alert goes at once, what arrives within
  `alerts.group_seconds` of a send goes out as one message listing them all;
- a message that still fails is a dead letter: logged, counted, and handed to the
  engine (`take_deliveries`) to record in `alert_deliveries`; after a dead letter
  the channel cools down (doubling, capped) and groups what queues meanwhile.

Nothing here touches the database: `deliver_now` sends one message synchronously
from memory, for the CLI's test message and for conditions where nothing can be
written.

Exceptions (internal to the delivery threads, never seen by `submit`'s caller):

    Exception
     └── DeliveryError          one channel could not deliver one message
           .retryable           False for answers that a retry cannot change (4xx, bad login)
           .retry_after         seconds the receiver asked us to wait, if it said

Secrets: the SMTP password, the Telegram bot token and the webhook URL's path, query
and credentials (a Slack or Teams hook carries its token there) never reach a log
line, an outgoing alert or a delivery record. Log lines name a channel by
`redact_url` / host:port, and error texts are built here from exception types,
status codes and server replies, then scrubbed.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from engine.config import AlertSettings
from engine.domain import Severity
from store.db import now_ms

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = 0.5
DEFAULT_QUEUE_SIZE = 200
MAX_GROUP = 50  # alerts listed in one grouped message; the rest go in the next
MAX_COOLDOWN_SECONDS = 300.0
MAX_RETRY_AFTER_SECONDS = 60.0
OUTCOMES_KEPT = 1_000
DIGEST_SOURCE = "digest"
_SUBJECT_MAX = 200
_REPLY_MAX = 200
_TELEGRAM_MAX = 4096  # characters in one Telegram message


@dataclass(frozen=True, slots=True)
class AlertMessage:
    id: int
    ts: int  # epoch ms
    severity: Severity
    source: str
    title: str
    message: str
    count: int = 1
    items: tuple[AlertMessage, ...] = ()  # the alerts a grouped message stands for

    @property
    def alert_ids(self) -> tuple[int, ...]:
        return tuple(i.id for i in self.items) if self.items else (self.id,)


def group(messages: Sequence[AlertMessage]) -> AlertMessage:
    """One message standing for a burst: the worst severity, every alert listed."""
    if len(messages) == 1:
        return messages[0]
    worst = max(messages, key=lambda m: m.severity.rank).severity
    lines = []
    for m in messages:
        when = datetime.fromtimestamp(m.ts / 1000, tz=UTC).strftime("%H:%M:%S")
        repeat = f" (x{m.count})" if m.count > 1 else ""
        detail = f": {m.message}" if m.message else ""
        lines.append(f"{when} [{m.severity.value}] {m.source}: {m.title}{repeat}{detail}")
    return AlertMessage(
        id=messages[0].id,
        ts=messages[-1].ts,
        severity=worst,
        source="cockpit",
        title=f"{len(messages)} alerts, worst {worst.value}: {messages[0].title}",
        message="\n".join(lines),
        count=sum(m.count for m in messages),
        items=tuple(messages),
    )


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    DEAD = "dead"  # every attempt failed: a dead letter


@dataclass(frozen=True, slots=True)
class Delivery:
    """The final outcome of one message on one channel; every text in it is safe to store."""

    ts: int  # epoch ms
    channel: str  # webhook, email, telegram
    target: str  # the channel's safe name
    alert_ids: tuple[int, ...]
    title: str
    status: DeliveryStatus
    attempts: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """Counts since start. `delivered` and `failed` count one per alert per channel."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0  # pushed out of a full queue, submitted after close, or abandoned
    pending: int = 0


class DeliveryError(Exception):
    """One channel could not deliver one alert; the text is safe to log."""

    def __init__(self, text: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(text)
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    kind: str  # webhook, email, telegram
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

    kind = "webhook"

    def __init__(self, url: str, *, timeout: float, scrub: _Scrubber) -> None:
        self._url = url
        self._timeout = timeout
        self._scrub = scrub
        self._session = _session()  # used by the delivery thread only
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
            **({"alerts": [self.payload(i) for i in msg.items]} if msg.items else {}),
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
        except _request_errors() as exc:
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

    kind = "email"

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


class TelegramChannel:
    """The Bot API's sendMessage, as plain text; the token lives only in the request URL."""

    kind = "telegram"

    def __init__(
        self, token: str, chat_id: str, *, api_url: str, timeout: float, scrub: _Scrubber
    ) -> None:
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._chat_id = chat_id
        self._timeout = timeout
        self._scrub = scrub
        self._session = _session()  # used by the delivery thread only
        self.name = f"telegram chat {chat_id} via {redact_url(api_url)}"

    def text(self, msg: AlertMessage) -> str:
        repeat = f" (x{msg.count})" if msg.count > 1 and not msg.items else ""
        body = f"[{msg.severity.value}] {msg.title}{repeat}\n{msg.message}".rstrip()
        body = self._scrub(body)
        if len(body) > _TELEGRAM_MAX:
            body = body[: _TELEGRAM_MAX - 3] + "..."
        return body

    def send(self, msg: AlertMessage) -> None:
        try:
            with self._session.post(
                self._url,
                json={
                    "chat_id": self._chat_id,
                    "text": self.text(msg),
                    "disable_web_page_preview": True,
                },
                timeout=self._timeout,
                allow_redirects=False,
                headers={"User-Agent": "cockpit-notify"},
            ) as response:
                status = response.status_code
                answer = _json_or_empty(response)
        except _request_errors() as exc:
            # str(exc) carries the URL and with it the bot token.
            reason = _os_reason(exc)
            text = type(exc).__name__ + (f" ({reason})" if reason else "")
            raise DeliveryError(self._scrub(text), retryable=True) from None
        if 200 <= status < 300 and answer.get("ok") is True:
            return
        description = str(answer.get("description") or "")[:_REPLY_MAX]
        text = self._scrub(_one_line(f"HTTP {status} {description}"))
        if status == 429:
            parameters = answer.get("parameters")
            after = parameters.get("retry_after") if isinstance(parameters, dict) else None
            wait = float(after) if isinstance(after, int | float) else None
            raise DeliveryError(text, retryable=True, retry_after=wait)
        raise DeliveryError(text, retryable=status >= 500 or status == 408)

    def close(self) -> None:
        self._session.close()


def _session() -> requests.Session:
    import requests  # only with a webhook or Telegram channel: ~0.1 s off every engine start

    return requests.Session()


def _request_errors() -> type[requests.RequestException]:
    import requests

    return requests.RequestException


def _json_or_empty(response: requests.Response) -> dict[str, object]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def channels_from(settings: AlertSettings, *, timeout: float) -> list[Channel]:
    """The channels the settings configure; none when alerts stay inside the cockpit."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    token = settings.telegram_token.get_secret_value() if settings.telegram_token else None
    secrets: list[str | None] = [password, token]
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
    if token and not settings.telegram_chat_id:
        log.warning(
            "alerts.telegram_token is set but alerts.telegram_chat_id is empty: no Telegram"
        )
    elif token and settings.telegram_chat_id:
        channels.append(
            TelegramChannel(
                token,
                settings.telegram_chat_id,
                api_url=settings.telegram_api_url,
                timeout=timeout,
                scrub=scrub,
            )
        )
    return channels


def _is_loopback(settings: AlertSettings) -> bool:
    return settings.smtp_host in ("localhost", "127.0.0.1", "::1")


def _ids(msg: AlertMessage) -> str:
    ids = msg.alert_ids
    return f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}..{ids[-1]} ({len(ids)} alerts)"


def _attempt(
    channel: Channel, msg: AlertMessage, *, attempts: int, backoff: float, abort: threading.Event
) -> tuple[bool, int, str]:
    """Send with retries and exponential backoff: (delivered, attempts made, last error)."""
    for attempt in range(1, attempts + 1):
        try:
            channel.send(msg)
        except DeliveryError as exc:
            last = attempt == attempts or not exc.retryable or abort.is_set()
            if last:
                log.error(
                    "alert %s not delivered to %s after %d attempt(s): %s",
                    _ids(msg),
                    channel.name,
                    attempt,
                    exc,
                )
                return False, attempt, str(exc)
            delay = backoff * 2 ** (attempt - 1)
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER_SECONDS))
            log.warning(
                "alert %s to %s failed (%s); retry in %.2f s", _ids(msg), channel.name, exc, delay
            )
            if abort.wait(delay):
                log.error("alert %s to %s abandoned at close", _ids(msg), channel.name)
                return False, attempt, f"{exc}; abandoned at close"
        except Exception as exc:
            # A bug in a channel must not kill its delivery thread; the type alone is
            # logged because an unknown exception's text may hold a secret.
            log.error("alert %s to %s: unexpected %s", _ids(msg), channel.name, type(exc).__name__)
            return False, attempt, f"unexpected {type(exc).__name__}"
        else:
            log.debug("alert %s delivered to %s", _ids(msg), channel.name)
            return True, attempt, ""
    return False, attempts, ""


def _outcome(
    channel: Channel, msg: AlertMessage, ok: bool, attempts: int, *, error: str, now: int
) -> Delivery:
    return Delivery(
        ts=now,
        channel=channel.kind,
        target=channel.name,
        alert_ids=msg.alert_ids,
        title=msg.title,
        status=DeliveryStatus.DELIVERED if ok else DeliveryStatus.DEAD,
        attempts=attempts,
        error=error,
    )


def deliver_now(
    channels: Sequence[Channel],
    msg: AlertMessage,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = DEFAULT_BACKOFF_SECONDS,
    clock: Callable[[], int] = now_ms,
) -> list[Delivery]:
    """Send one message on every channel from this thread, retries included; no queue,
    no thread, no database. For the CLI's test message and for when nothing can be written."""
    never = threading.Event()
    out = []
    for channel in channels:
        ok, made, error = _attempt(channel, msg, attempts=attempts, backoff=backoff, abort=never)
        out.append(_outcome(channel, msg, ok, made, error=error, now=clock()))
    return out


class _ChannelWorker:
    """One channel's queue and thread: its retries, grouping and cool-down delay no other."""

    def __init__(
        self,
        channel: Channel,
        *,
        attempts: int,
        backoff: float,
        queue_size: int,
        group_seconds: float,
        on_outcome: Callable[[Delivery], None],
        clock: Callable[[], int],
    ) -> None:
        self.channel = channel
        self._attempts = attempts
        self._backoff = backoff
        self._queue_size = queue_size
        self._group_seconds = group_seconds
        # After a dead letter the channel rests; while it does, alerts queue and group.
        self._cooldown = max(group_seconds, backoff * 2**attempts)
        self._on_outcome = on_outcome
        self._clock = clock
        self._queue: deque[AlertMessage] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._ready_at = 0.0  # time.monotonic(): nothing is sent before this
        self._dead_in_row = 0
        self.abort = threading.Event()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.thread = threading.Thread(
            target=self._run, name=f"cockpit-notify-{channel.kind}", daemon=True
        )

    def put(self, msg: AlertMessage) -> None:
        with self._cond:
            if len(self._queue) >= self._queue_size:
                victim = self._make_room(msg)
                self.dropped += 1
                log.warning(
                    "alert queue of %s full (%d): dropped %s alert %s %r",
                    self.channel.name,
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

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def stats(self) -> NotifierStats:
        with self._cond:
            return NotifierStats(self.delivered, self.failed, self.dropped, len(self._queue))

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _next(self) -> list[AlertMessage] | None:
        with self._cond:
            while True:
                if self.abort.is_set():
                    self.dropped += len(self._queue)
                    self._queue.clear()
                    return None
                if not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                rest = self._ready_at - time.monotonic()
                if rest > 0 and not self._closing:
                    self._cond.wait(rest)
                    continue
                break
            if self._group_seconds <= 0 or self._queue[0].source == DIGEST_SOURCE:
                return [self._queue.popleft()]
            batch: list[AlertMessage] = []
            # A digest is its own message: the alerts before it group, it goes next.
            while self._queue and len(batch) < MAX_GROUP:
                if self._queue[0].source == DIGEST_SOURCE:
                    break
                batch.append(self._queue.popleft())
            return batch

    def _run(self) -> None:
        try:
            while (batch := self._next()) is not None:
                msg = group(batch)
                ok, made, error = _attempt(
                    self.channel,
                    msg,
                    attempts=self._attempts,
                    backoff=self._backoff,
                    abort=self.abort,
                )
                with self._cond:
                    if ok:
                        self.delivered += len(batch)
                        self._dead_in_row = 0
                        self._ready_at = time.monotonic() + self._group_seconds
                    else:
                        self.failed += len(batch)
                        self._dead_in_row += 1
                        rest = min(
                            self._cooldown * 2 ** (self._dead_in_row - 1), MAX_COOLDOWN_SECONDS
                        )
                        self._ready_at = time.monotonic() + rest
                self._on_outcome(
                    _outcome(self.channel, msg, ok, made, error=error, now=self._clock())
                )
        finally:
            closer = getattr(self.channel, "close", None)
            if callable(closer):
                closer()


class Notifier:
    """Delivers alerts at or above `settings.min_severity`, one daemon thread per channel.

    `submit` never blocks on the network: a full channel queue drops its
    lowest-severity, oldest alert (possibly the new one) and counts it. Without a
    channel the notifier starts no thread and `submit` returns at once. The final
    outcome of every message on every channel waits in memory for `take_deliveries`.
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
        group_seconds: float | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if attempts < 1 or queue_size < 1 or timeout <= 0 or backoff < 0:
            raise ValueError("attempts and queue_size must be >= 1, timeout > 0, backoff >= 0")
        self._min_rank = Severity(settings.min_severity).rank
        chosen = channels if channels is not None else channels_from(settings, timeout=timeout)
        self._lock = threading.Lock()
        self._closing = False
        self._dropped_after_close = 0
        self._outcomes: deque[Delivery] = deque(maxlen=OUTCOMES_KEPT)
        window = settings.group_seconds if group_seconds is None else group_seconds
        self._workers = tuple(
            _ChannelWorker(
                channel,
                attempts=attempts,
                backoff=backoff,
                queue_size=queue_size,
                group_seconds=window,
                on_outcome=self._record,
                clock=clock,
            )
            for channel in chosen
        )
        for worker in self._workers:
            worker.thread.start()
        if self._workers:
            log.info(
                "alerts at or above %s go to %s",
                settings.min_severity,
                ", ".join(w.channel.name for w in self._workers),
            )
        else:
            log.info("no alert channel configured: alerts stay in the cockpit")

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> Notifier:
        """The notifier the configuration asks for; a no-op one when no channel is set."""
        return cls(settings, backoff=settings.retry_seconds)

    @property
    def enabled(self) -> bool:
        return bool(self._workers)

    @property
    def channels(self) -> tuple[Channel, ...]:
        return tuple(w.channel for w in self._workers)

    def submit(self, msg: AlertMessage, *, always: bool = False) -> None:
        """Queue a message on every channel; returns at once, never raises for delivery.
        `always` skips the severity floor (the daily digest)."""
        if not self._workers or (msg.severity.rank < self._min_rank and not always):
            return
        with self._lock:
            if self._closing:
                self._dropped_after_close += 1
                log.warning("alert %s submitted after close: not delivered", msg.id)
                return
        for worker in self._workers:
            worker.put(msg)

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self._outcomes.append(delivery)

    def take_deliveries(self) -> list[Delivery]:
        """The outcomes since the last call, oldest first, for the engine to record."""
        with self._lock:
            out = list(self._outcomes)
            self._outcomes.clear()
        return out

    def stats(self) -> NotifierStats:
        per = self.channel_stats().values()
        with self._lock:
            after_close = self._dropped_after_close
        return NotifierStats(
            sum(s.delivered for s in per),
            sum(s.failed for s in per),
            sum(s.dropped for s in per) + after_close,
            sum(s.pending for s in per),
        )

    def channel_stats(self) -> dict[str, NotifierStats]:
        """Per channel kind; `delivered` and `failed` count alerts, a group counting each."""
        return {w.channel.kind: w.stats() for w in self._workers}

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued, then stop; True when everything was handled in time.

        After `timeout` the threads are told to abandon retries and the rest of their
        queues (counted dropped); they are daemons, so a request still in flight cannot
        hold the process.
        """
        with self._lock:
            self._closing = True
        for worker in self._workers:
            worker.close()
        deadline = time.monotonic() + timeout
        done = True
        for worker in self._workers:
            worker.thread.join(max(deadline - time.monotonic(), 0))
            if worker.thread.is_alive():
                worker.abort.set()
                log.warning(
                    "alert delivery to %s did not finish within %.1f s; %d alerts left",
                    worker.channel.name,
                    timeout,
                    worker.pending(),
                )
                done = False
        return done
