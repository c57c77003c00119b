"""The daily digest: one message summing up the last 24 hours, sent on every channel.

It also carries the audit chain's head, so a copy of it lives outside the machine.

`digest_facts` reads a handful of indexed aggregates; `digest_message` turns them into
the message, whatever `alerts.min_severity` says, so a quiet day still reports that
the engine is alive and what it did.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from apscheduler.triggers.cron import CronTrigger

from engine.alerts import audit
from engine.alerts.notify import DIGEST_SOURCE, AlertMessage
from engine.config import AlertSettings
from engine.domain import Severity
from store import alerts as stored
from store import engine_row

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class DigestFacts:
    since: int
    until: int
    trading_state: str
    state_reason: str
    window: stored.WindowCounts  # equity, round trips, cycles and alerts in [since, until]
    dead_letters: int
    audit_head: audit.Head | None

    @property
    def equity_change(self) -> float | None:
        last, first = self.window.equity, self.window.first_equity
        return None if last is None or first is None else last - first


def digest_facts(conn: sqlite3.Connection, now: int) -> DigestFacts:
    since = now - DAY_MS
    state = engine_row.read_state(conn)
    return DigestFacts(
        since=since,
        until=now,
        trading_state=state[0] if state else "unknown",
        state_reason=state[1] if state else "",
        window=stored.window_counts(conn, since, now),
        dead_letters=stored.dead_since(conn, since),
        audit_head=audit.head(conn),
    )


def digest_message(facts: DigestFacts) -> AlertMessage:
    day = facts.window
    state = facts.trading_state + (f" ({facts.state_reason})" if facts.state_reason else "")
    lines = [f"trading state: {state}"]
    if day.equity is not None:
        change = f", {facts.equity_change:+,.2f} in 24 h" if facts.equity_change is not None else ""
        lines.append(f"equity: {day.equity:,.2f}{change}; drawdown {day.drawdown or 0:.2%}")
    lines.append(f"round trips closed: {day.trades} ({day.wins} won), P&L {day.trade_pnl:+,.2f}")
    lines.append(f"cycles: {day.cycles} run, {day.failed_cycles} failed")
    by_severity = ", ".join(
        f"{day.alerts.get(s.value, 0)} {s.value}" for s in sorted(Severity, key=lambda s: -s.rank)
    )
    lines.append(f"alerts raised: {by_severity}; {day.unacknowledged} unacknowledged")
    lines.append(f"alert deliveries failed: {facts.dead_letters}")
    # The head leaves the machine every day: an anchor a rewrite of the database cannot reach.
    top = facts.audit_head
    lines.append(f"audit head: #{top.id} {top.hash}" if top else "audit head: chain empty")
    worst_day = day.failed_cycles or facts.dead_letters or facts.trading_state != "ACTIVE"
    return AlertMessage(
        id=0,
        ts=facts.until,
        severity=Severity.WARNING if worst_day else Severity.INFO,
        source=DIGEST_SOURCE,
        title="Daily digest",
        message="\n".join(lines),
    )


def digest_trigger(settings: AlertSettings) -> CronTrigger | None:
    """The cron trigger of `alerts.digest_cron` (UTC, checked when the settings load);
    None when the digest is off."""
    if not settings.digest_cron.strip():
        return None
    return CronTrigger.from_crontab(settings.digest_cron, timezone="UTC")
