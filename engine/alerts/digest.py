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
from engine.alerts.deliveries import dead_since
from engine.alerts.notify import DIGEST_SOURCE, AlertMessage
from engine.config import AlertSettings
from engine.domain import Severity

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
    state = conn.execute("SELECT trading_state, state_reason FROM engine WHERE id = 1").fetchone()
    last = conn.execute("SELECT equity, drawdown FROM equity ORDER BY ts DESC LIMIT 1").fetchone()
    first = conn.execute(
        "SELECT equity FROM equity WHERE ts >= ? ORDER BY ts LIMIT 1", (since,)
    ).fetchone()
    trades = conn.execute(
        "SELECT count(*), coalesce(sum(pnl), 0), coalesce(sum(pnl > 0), 0) FROM trades"
        " WHERE exit_ts >= ? AND exit_ts <= ?",
        (since, now),
    ).fetchone()
    cycles = conn.execute(
        "SELECT count(*), coalesce(sum(error IS NOT NULL), 0) FROM cycles"
        " WHERE started_at >= ? AND started_at <= ?",
        (since, now),
    ).fetchone()
    alerts = dict(
        conn.execute(
            "SELECT severity, sum(count) FROM alerts WHERE ts >= ? AND ts <= ? GROUP BY severity",
            (since, now),
        ).fetchall()
    )
    unacked = conn.execute("SELECT count(*) FROM alerts WHERE acked_at IS NULL").fetchone()[0]
    return DigestFacts(
        since=since,
        until=now,
        trading_state=state[0] if state else "unknown",
        state_reason=(state[1] or "") if state else "",
        equity=last[0] if last else None,
        equity_change=(last[0] - first[0]) if last and first else None,
        drawdown=last[1] if last else None,
        trades=int(trades[0]),
        trade_pnl=float(trades[1]),
        wins=int(trades[2]),
        cycles=int(cycles[0]),
        failed_cycles=int(cycles[1]),
        alerts={str(k): int(v) for k, v in alerts.items()},
        unacknowledged=int(unacked),
        dead_letters=dead_since(conn, since),
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
