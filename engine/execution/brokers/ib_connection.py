"""The broker's link to the IB gateway: connecting, reconnecting, and what to tell.

A supervisor task on the IB thread connects, watches `ib.isConnected()`, and
reconnects with exponential backoff and jitter (`ib_link.Backoff`). After
`ib.breaker_failures` failed connects or timed-out calls in a row the circuit
breaker opens: the broker reads as disconnected (so the monitor blocks entries)
and one HIGH event says so; the next successful connect closes it.

Events for the operator (connectivity codes 1100/1101/1102/2110, the breaker, a
disconnect) queue up for the broker's `drain_events`. A disconnect or 1100
inside `ib.maintenance_windows` (the gateway's nightly reset, its weekly
re-login) is an expected INFO event.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from engine.config import IbSettings
from engine.domain import Severity
from engine.execution.brokers.ib_link import (
    Backoff,
    CircuitBreaker,
    IbEvent,
    classify,
    in_maintenance,
)

logger = logging.getLogger(__name__)

BrokerEvent = tuple[Severity, str, str]  # severity, title, message


class IbConnection:
    def __init__(
        self,
        settings: IbSettings,
        clock: Callable[[], int],
        backoff: Backoff,
        *,
        poll_seconds: float,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._timeout = settings.timeout_seconds
        self._poll = poll_seconds
        self.backoff = backoff
        self.breaker = CircuitBreaker(settings.breaker_failures)
        self.events: queue.SimpleQueue[BrokerEvent] = queue.SimpleQueue()
        self.first_attempt = threading.Event()
        self._ever_connected = False
        self.reconnects = 0
        self.connect_error: str | None = None  # why the last connect failed

    async def supervise(self, ib: Any, every_poll: Callable[[], None]) -> None:
        """Keep `ib` connected, for ever; `every_poll` runs between checks while up."""
        while True:
            if not ib.isConnected():
                try:
                    await self._connect(ib)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.connect_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    self.first_attempt.set()
                    delay = self.backoff.next()
                    self.failed(f"connect failed ({type(exc).__name__})")
                    logger.warning("IB connection failed (%s); next attempt in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
            self.first_attempt.set()
            every_poll()
            await asyncio.sleep(self._poll)

    async def _connect(self, ib: Any) -> None:
        s = self._settings
        await asyncio.wait_for(
            ib.connectAsync(
                host=s.host,
                port=s.port,
                clientId=s.client_id,
                timeout=self._timeout,
                account=s.account,
            ),
            self._timeout,
        )
        logger.info("connected to IB at %s:%d as client %d", s.host, s.port, s.client_id)
        self.connect_error = None
        self._connected_again()

    def failed(self, what: str) -> None:
        """One more failure in a row (a connect, a timed-out call)."""
        if self.breaker.failure():
            self._event(
                Severity.HIGH,
                "IB circuit breaker open: entries blocked",
                f"{self.breaker.threshold} failures in a row, the last: {what}; probing with"
                f" backoff up to {self.backoff.high:g} s",
            )

    def _connected_again(self) -> None:
        if self._ever_connected:
            self.reconnects += 1  # the engine reconciles after each one
        self._ever_connected = True
        self.backoff.reset()
        if self.breaker.success():
            self._event(
                Severity.INFO,
                "IB circuit breaker closed",
                "a connect succeeded; entries may resume",
            )

    def on_disconnected(self) -> None:
        logger.warning("disconnected from IB; reconnecting")
        if self._expected():
            self._event(
                Severity.INFO,
                "IB maintenance",
                "disconnected in the gateway's reset or re-login window; reconnecting",
            )
        else:
            self._event(
                Severity.WARNING,
                "IB disconnected",
                "the connection to the gateway dropped; reconnecting with backoff",
            )

    def on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        kind = classify(code, message)
        if kind is IbEvent.CONNECTION_LOST:
            if self._expected():
                self._event(
                    Severity.INFO,
                    "IB maintenance",
                    f"IB {code}: {message} (expected: nightly reset or weekly re-login)",
                )
            else:
                self._event(Severity.HIGH, "IB lost its connection to IB", f"IB {code}: {message}")
        elif kind is IbEvent.RESTORED_DATA_LOST:
            self._event(
                Severity.WARNING,
                "IB connectivity restored, data lost",
                f"IB {code}: {message}; market data is resubscribed",
            )
        elif kind is IbEvent.RESTORED:
            self._event(Severity.INFO, "IB connectivity restored", f"IB {code}: {message}")
        elif kind is IbEvent.SERVER_LINK:
            severity = Severity.INFO if self._expected() else Severity.WARNING
            self._event(severity, "IB gateway lost the IB servers", f"IB {code}: {message}")

    def _expected(self) -> bool:
        s = self._settings
        return in_maintenance(self._clock(), s.maintenance_windows, s.maintenance_timezone)

    def _event(self, severity: Severity, title: str, message: str) -> None:
        self.events.put((severity, title, message))
