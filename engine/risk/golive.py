"""The go-live policy: when a paper-trading marathon has earned real money.

A pure rule over the engine's own facts (how long it ran and how it behaved, on
the wall clock; how many sessions it traded and how, on market time): facts in,
a checklist out, each item with the fact behind it, its target and pass or fail.
The Marathon page gathers the facts (`cockpit.marathon_views`) and shows the
list; nothing here reads a database or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000


@dataclass(frozen=True)
class MarathonFacts:
    first_cycle_at: int | None
    last_cycle_at: int | None
    cycles: int
    failed: int
    missed: int
    gaps: int
    cycle_seconds: float | None
    engine_started_at: int | None
    engine_alive: bool
    halts: int  # transitions into HALTED in the lookback
    last_halt_at: int | None
    max_drawdown: float | None
    unacked_critical: int
    market_sessions: int = 0  # trading days the market clock has covered (strategy evidence)

    @property
    def days_run(self) -> float:
        """Days of wall time with cycles (operations: is the process dependable?)."""
        if self.first_cycle_at is None or self.last_cycle_at is None:
            return 0.0
        return (self.last_cycle_at - self.first_cycle_at) / DAY_MS

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.cycles if self.cycles else None

    @property
    def missed_rate(self) -> float | None:
        expected = self.cycles + self.missed
        return self.missed / expected if expected else None


@dataclass(frozen=True)
class ReadinessThresholds:
    min_days: float = 14.0
    min_sessions: int = 20  # trading days of market evidence (a month of sessions)
    no_halt_days: float = 7.0
    max_failure_rate: float = 0.005
    max_missed_rate: float = 0.01
    max_drawdown: float = 0.15  # the risk limit; pages pass risk.max_drawdown
    min_sharpe: float = 1.0
    p99_share_of_cycle: float = 0.5  # p99 cycle time as a share of the cycle interval


# Operations are judged on the wall clock (how long the process has run and
# behaved); the strategy on market time (how many sessions of trading it has seen).
WALL = "wall time"
MARKET = "market time"


@dataclass(frozen=True)
class CheckItem:
    name: str
    fact: str
    target: str
    passed: bool
    clock: str = WALL  # which clock the check counts on


def readiness(
    facts: MarathonFacts,
    sharpe: float | None,
    p99_ms: float | None,
    t: ReadinessThresholds,
) -> list[CheckItem]:
    """The go-live checklist: each item with the fact behind it and pass or fail."""
    return [
        *_operations(facts, t),
        *_evidence(facts, sharpe, t),
        _cycle_time(facts, p99_ms, t),
        CheckItem(
            "No unacknowledged CRITICAL alert",
            f"{facts.unacked_critical} open",
            "0",
            facts.unacked_critical == 0,
        ),
        CheckItem(
            "Engine alive",
            "heartbeat fresh" if facts.engine_alive else "no fresh heartbeat",
            "fresh",
            facts.engine_alive,
        ),
    ]


def _operations(facts: MarathonFacts, t: ReadinessThresholds) -> list[CheckItem]:
    """Is the process dependable: how long it ran, halted, failed and missed cycles."""
    fail_rate, missed_rate = facts.failure_rate, facts.missed_rate
    return [
        CheckItem(
            "Marathon length",
            f"{facts.days_run:.1f} days of cycles",
            f"≥ {t.min_days:g} days",
            facts.days_run >= t.min_days,
            WALL,
        ),
        CheckItem(
            "No HALT recently",
            f"{facts.halts} HALT(s) in the last {t.no_halt_days:g} days",
            "0",
            facts.halts == 0,
        ),
        CheckItem(
            "Failed cycles",
            f"{facts.failed} of {facts.cycles}"
            + (f" ({fail_rate:.3%})" if fail_rate is not None else ""),
            f"< {t.max_failure_rate:.2%}",
            fail_rate is not None and fail_rate < t.max_failure_rate,
        ),
        CheckItem(
            "Missed cycles",
            f"{facts.missed} missed in {facts.gaps} gap(s)"
            + (f" ({missed_rate:.3%})" if missed_rate is not None else ""),
            f"< {t.max_missed_rate:.2%}",
            missed_rate is not None and missed_rate < t.max_missed_rate,
        ),
    ]


def _evidence(
    facts: MarathonFacts, sharpe: float | None, t: ReadinessThresholds
) -> list[CheckItem]:
    """Has the strategy earned it, on market time: sessions, drawdown, Sharpe ratio."""
    return [
        CheckItem(
            "Market sessions traded",
            f"{facts.market_sessions} trading days",
            f"≥ {t.min_sessions}",
            facts.market_sessions >= t.min_sessions,
            MARKET,
        ),
        CheckItem(
            "Max drawdown",
            f"{facts.max_drawdown:.2%}" if facts.max_drawdown is not None else "no equity yet",
            f"< {t.max_drawdown:.0%} (risk limit)",
            facts.max_drawdown is not None and facts.max_drawdown < t.max_drawdown,
            MARKET,
        ),
        CheckItem(
            "Sharpe ratio (trading days, annualised)",
            f"{sharpe:.2f}" if sharpe is not None else "needs two days of P&L",
            f"≥ {t.min_sharpe:g}",
            sharpe is not None and sharpe >= t.min_sharpe,
            MARKET,
        ),
    ]


def _cycle_time(facts: MarathonFacts, p99_ms: float | None, t: ReadinessThresholds) -> CheckItem:
    cycle_ms = (facts.cycle_seconds or 1.0) * 1000
    return CheckItem(
        "Cycle time p99",
        f"{p99_ms:.0f} ms" if p99_ms is not None else "no cycles",
        f"< {t.p99_share_of_cycle:.0%} of {cycle_ms:.0f} ms",
        p99_ms is not None and p99_ms < t.p99_share_of_cycle * cycle_ms,
    )
