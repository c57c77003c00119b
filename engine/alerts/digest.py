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
    equity: float | None
    equity_change: float | None
    drawdown: float | None
    trades: int
    trade_pnl: float
    wins: int
    cycles: int
    failed_cycles: int
    alerts: dict[str, int]  # raised in the window, repeats included, by severity
    unacknowledged: int
    dead_letters: int
    audit_head: audit.Head | None


def digest_facts(conn: sqlite3.Connection, now: int) -> DigestFacts:
    since = now - DAY_MS
    state = engine_row.read_state(conn)
    counts = stored.window_counts(conn, since, now)
    last, first = counts.equity, counts.first_equity
    return DigestFacts(
        since=since,
        until=now,
        trading_state=state[0] if state else "unknown",
        state_reason=state[1] if state else "",
        equity=last,
        equity_change=(last - first) if last is not None and first is not None else None,
        drawdown=counts.drawdown,
        trades=counts.trades,
        trade_pnl=counts.trade_pnl,
        wins=counts.wins,
        cycles=counts.cycles,
        failed_cycles=counts.failed_cycles,
        alerts=counts.alerts,
        unacknowledged=counts.unacknowledged,
        dead_letters=stored.dead_since(conn, since),
        audit_head=audit.head(conn),
    )


def digest_message(facts: DigestFacts) -> AlertMessage:
    state = facts.trading_state + (f" ({facts.state_reason})" if facts.state_reason else "")
    lines = [f"trading state: {state}"]
    if facts.equity is not None:
        change = f", {facts.equity_change:+,.2f} in 24 h" if facts.equity_change is not None else ""
        lines.append(f"equity: {facts.equity:,.2f}{change}; drawdown {facts.drawdown or 0:.2%}")
    lines.append(
        f"round trips closed: {facts.trades} ({facts.wins} won), P&L {facts.trade_pnl:+,.2f}"
    )
    lines.append(f"cycles: {facts.cycles} run, {facts.failed_cycles} failed")
    by_severity = ", ".join(
        f"{facts.alerts.get(s.value, 0)} {s.value}" for s in sorted(Severity, key=lambda s: -s.rank)
    )
    lines.append(f"alerts raised: {by_severity}; {facts.unacknowledged} unacknowledged")
    lines.append(f"alert deliveries failed: {facts.dead_letters}")
    # The head leaves the machine every day: an anchor a rewrite of the database cannot reach.
    top = facts.audit_head
    lines.append(f"audit head: #{top.id} {top.hash}" if top else "audit head: chain empty")
    worst_day = facts.failed_cycles or facts.dead_letters or facts.trading_state != "ACTIVE"
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
