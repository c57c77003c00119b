"""The failure policy at the cycle boundary: an exception inside a cycle is an
alert; repeated failures raise the severity and, past
`engine.failure_pause_after`, pause trading. A `BrokerFatal` or a corrupt
database halts."""

from __future__ import annotations

import sqlite3

from engine.alerts.alerts import Alerts
from engine.cycle.controls import Controls
from engine.domain import Severity, TradingState
from engine.execution.brokers.base import BrokerFatal


def is_fatal(exc: BaseException) -> bool:
    if isinstance(exc, BrokerFatal):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class FailurePolicy:
    def __init__(self, controls: Controls, alerts: Alerts, pause_after: int, actor: str) -> None:
        self.controls = controls
        self.alerts = alerts
        self.pause_after = pause_after
        self.actor = actor
        self.consecutive = 0

    def succeeded(self) -> None:
        self.consecutive = 0

    def failed(self, exc: BaseException, error: str) -> None:
        self.consecutive += 1
        n = self.consecutive
        if is_fatal(exc):
            self.alerts.raise_(Severity.CRITICAL, "cycle", "Fatal error: trading halted", error)
            self.controls.halt(f"fatal error: {error}", self.actor)
            return
        severity = Severity.WARNING if n < 3 else Severity.HIGH
        self.alerts.raise_(
            severity, "cycle", f"Cycle failed ({n} in a row)", error, dedupe_key="cycle-failure"
        )
        if n >= self.pause_after and self.controls.state is TradingState.ACTIVE:
            self.controls.set_state(
                TradingState.PAUSED, f"{n} consecutive cycle failures: {error}", self.actor
            )
            self.alerts.raise_(
                Severity.CRITICAL,
                "cycle",
                "Trading paused after repeated failures",
                f"{n} cycles failed in a row; last: {error}",
            )
