"""The go-live policy (engine.risk.golive): pure facts in, a checklist out."""

from __future__ import annotations

from engine.risk import golive

DAY = golive.DAY_MS


def _facts(**kw) -> golive.MarathonFacts:
    base = dict(
        first_cycle_at=0,
        last_cycle_at=20 * DAY,
        cycles=1_000_000,
        failed=10,
        missed=5,
        gaps=2,
        cycle_seconds=1.0,
        engine_started_at=0,
        engine_alive=True,
        halts=0,
        last_halt_at=None,
        max_drawdown=0.05,
        unacked_critical=0,
        market_sessions=25,
    )
    return golive.MarathonFacts(**{**base, **kw})


def test_readiness_passes_a_clean_marathon() -> None:
    items = golive.readiness(_facts(), sharpe=1.5, p99_ms=40.0, t=golive.ReadinessThresholds())
    assert all(i.passed for i in items)


def test_readiness_fails_a_drawdown_beyond_the_limit() -> None:
    items = golive.readiness(
        _facts(max_drawdown=0.2), 1.5, 40.0, golive.ReadinessThresholds(max_drawdown=0.15)
    )
    assert [i.name for i in items if not i.passed] == ["Max drawdown"]


def test_readiness_counts_operations_on_the_wall_and_evidence_in_market_sessions() -> None:
    # Twenty wall days of a 60x simulation: plenty of operations, and of sessions too;
    # a two-day replay of a year of history: sessions but not operations.
    replay = _facts(last_cycle_at=2 * DAY, market_sessions=250)
    items = {i.name: i for i in golive.readiness(replay, 1.5, 40.0, golive.ReadinessThresholds())}
    assert items["Marathon length"].clock == golive.WALL and not items["Marathon length"].passed
    assert items["Market sessions traded"].clock == golive.MARKET
    assert items["Market sessions traded"].passed


def test_every_failing_fact_fails_its_own_check_only() -> None:
    t = golive.ReadinessThresholds()
    cases = {
        "Marathon length": _facts(last_cycle_at=DAY),
        "Market sessions traded": _facts(market_sessions=3),
        "No HALT recently": _facts(halts=1),
        "Failed cycles": _facts(failed=10_000),
        "Missed cycles": _facts(missed=20_000),
        "No unacknowledged CRITICAL alert": _facts(unacked_critical=1),
        "Engine alive": _facts(engine_alive=False),
    }
    for name, facts in cases.items():
        failed = [i.name for i in golive.readiness(facts, 1.5, 40.0, t) if not i.passed]
        assert failed == [name]
    assert [i.name for i in golive.readiness(_facts(), 0.5, 40.0, t) if not i.passed] == [
        "Sharpe ratio (trading days, annualised)"
    ]
    assert [i.name for i in golive.readiness(_facts(), 1.5, 600.0, t) if not i.passed] == [
        "Cycle time p99"
    ]


def test_no_cycles_and_no_equity_fail_instead_of_passing_on_missing_facts() -> None:
    facts = _facts(cycles=0, failed=0, missed=0, max_drawdown=None)
    items = golive.readiness(facts, None, None, golive.ReadinessThresholds())
    failed = {i.name for i in items if not i.passed}
    assert {"Failed cycles", "Missed cycles", "Max drawdown", "Cycle time p99"} <= failed
