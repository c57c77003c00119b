"""The gate: the trading-state rule, exits past entry-only checks, order and first denial."""

from __future__ import annotations

import pytest

from engine.config import RiskSettings
from engine.domain import Intent, Position, Purpose, Side, TradingState, Verdict
from engine.market.calendar import Blackout, MarketCalendar
from engine.risk import CHECK_NAMES, RiskContext, RiskGate
from engine.risk.gate import ALWAYS, ENTRY_ONLY, Check

NOW = 1_700_000_000_000
GATE = RiskGate(RiskSettings())


def ctx(**kw: object) -> RiskContext:
    base: dict[str, object] = {
        "now": NOW,
        "equity": 100_000.0,
        "last_prices": {"A": 100.0, "B": 50.0},
        "atr_pct": {"A": 0.01, "B": 0.01},
        "positions": {"A": Position("A", 100, 100.0)},
    }
    base.update(kw)
    return RiskContext(**base)  # type: ignore[arg-type]


def entry(symbol: str = "B", qty: float = 100, side: Side = Side.BUY) -> Intent:
    sign = side.sign
    return Intent(symbol, side, qty, Purpose.ENTRY, stop_loss=50 - sign, take_profit=50 + 3 * sign)


def exit_a(qty: float = 100, purpose: Purpose = Purpose.EXIT) -> Intent:
    return Intent("A", Side.SELL, qty, purpose)


def test_a_sound_entry_passes_every_check() -> None:
    assert GATE.check(entry(), ctx()).allowed


def test_evaluate_returns_one_verdict_per_check_in_a_stable_order() -> None:
    names = [v.check for v in GATE.evaluate(entry(qty=10**9), ctx())]
    assert names == list(CHECK_NAMES)


def test_check_returns_the_first_denial() -> None:
    verdicts = GATE.evaluate(entry(qty=5_000), ctx())
    first = next(v for v in verdicts if not v.allowed)
    assert GATE.check(entry(qty=5_000), ctx()) == first


@pytest.mark.parametrize("state", [TradingState.PAUSED, TradingState.HALTED])
def test_paused_and_halted_deny_entries(state: TradingState) -> None:
    verdict = GATE.check(entry(), ctx(trading_state=state))
    assert (verdict.allowed, verdict.check) == (False, "trading_state")


def test_paused_allows_an_exit() -> None:
    assert GATE.check(exit_a(), ctx(trading_state=TradingState.PAUSED)).allowed


def test_halted_denies_an_exit_that_is_not_a_flatten() -> None:
    verdict = GATE.check(exit_a(), ctx(trading_state=TradingState.HALTED))
    assert not verdict.allowed


def test_halted_allows_a_flatten() -> None:
    assert GATE.check(
        exit_a(purpose=Purpose.FLATTEN), ctx(trading_state=TradingState.HALTED)
    ).allowed


def test_an_exit_passes_the_daily_loss_limit_an_entry_cannot() -> None:
    losing = ctx(day_start_equity=120_000.0)
    assert not GATE.check(entry(), losing).allowed
    assert GATE.check(exit_a(), losing).allowed


def test_an_exit_beyond_flat_is_denied() -> None:
    verdict = GATE.check(exit_a(qty=101), ctx())
    assert (verdict.allowed, verdict.check) == (False, "exit_size")


def test_an_exit_without_a_position_is_denied() -> None:
    verdict = GATE.check(Intent("B", Side.SELL, 1, Purpose.EXIT), ctx())
    assert (verdict.allowed, verdict.check) == (False, "exit_size")


def test_an_exit_with_a_nan_quantity_is_denied() -> None:
    verdict = GATE.check(exit_a(qty=float("nan")), ctx())
    assert (verdict.allowed, verdict.check) == (False, "quantity")


def test_the_gate_asks_its_calendar_for_blackouts() -> None:
    cal = MarketCalendar(blackouts=[Blackout("FOMC", NOW - 1, NOW + 1000)])
    verdict = RiskGate(RiskSettings(), cal).check(entry(), ctx())
    assert (verdict.check, verdict.until) == ("blackout", NOW + 1000)


def test_a_context_that_says_the_market_is_open_overrides_the_calendar() -> None:
    cal = MarketCalendar(blackouts=[Blackout("FOMC", NOW - 1, NOW + 1000)])
    assert RiskGate(RiskSettings(), cal).check(entry(), ctx(blackouts=())).allowed


def test_a_check_that_raises_denies_instead_of_crashing_the_cycle() -> None:
    broken = ctx(returns={"B": 5, "A": [0.1] * 40})  # not a sequence: correlation raises
    verdict = GATE.check(entry(), broken)
    assert (verdict.allowed, verdict.check) == (False, "correlated_exposure")
    assert verdict.reason.startswith("check failed: TypeError")


def test_check_runs_nothing_after_the_first_denial(caplog: pytest.LogCaptureFixture) -> None:
    broken = ctx(returns={"B": 5, "A": [0.1] * 40})  # correlation, the last check, raises
    verdict = GATE.check(entry(qty=5_000), broken)
    assert not verdict.allowed and verdict.check != "correlated_exposure"
    assert "correlated_exposure failed" not in caplog.text


def test_an_exit_is_not_run_through_the_entry_only_checks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = ctx(returns={"B": 5, "A": [0.1] * 40})
    assert GATE.check(exit_a(), broken) == Verdict.ok("all")
    assert "failed" not in caplog.text
    assert [v.reason for v in GATE.evaluate(exit_a(), broken)][-1] == "reduces exposure"


def test_a_flatten_larger_than_a_lowered_quantity_limit_goes_through() -> None:
    big = ctx(positions={"A": Position("A", 5_000, 100.0)}, trading_state=TradingState.HALTED)
    gate = RiskGate(RiskSettings(max_position_qty=1_000))
    assert gate.check(Intent("A", Side.SELL, 5_000, Purpose.FLATTEN), big).allowed


NAN, INF = float("nan"), float("inf")
ENTRY_CHECKS = [pytest.param(fn, id=name) for name, fn in ENTRY_ONLY]


@pytest.mark.parametrize("check", ENTRY_CHECKS)
@pytest.mark.parametrize(
    "broken",
    [
        {"equity": NAN},
        {"day_start_equity": NAN},
        {"peak_equity": NAN},
        {"cash": INF},
        {"last_prices": {"A": 100.0, "B": NAN}},
        {"positions": {"A": Position("A", 100, NAN)}},
    ],
    ids=["equity", "day_start", "peak", "cash", "last_price", "avg_price"],
)
def test_every_entry_check_denies_on_a_non_finite_input(
    check: Check, broken: dict[str, object]
) -> None:
    verdict = check(entry(), ctx(**broken), RiskSettings())
    assert not verdict.allowed and "not a finite number" in verdict.reason


@pytest.mark.parametrize("name", ["quantity", "price", "exit_size"])
def test_the_sanity_checks_deny_a_non_finite_intent(name: str) -> None:
    check = dict(ALWAYS)[name]
    verdict = check(Intent("A", Side.SELL, INF, Purpose.EXIT), ctx(), RiskSettings())
    assert not verdict.allowed


def test_a_broken_equity_still_lets_a_position_be_closed() -> None:
    assert GATE.check(exit_a(purpose=Purpose.FLATTEN), ctx(equity=NAN)).allowed


def test_a_context_adjusted_for_the_calendar_keeps_its_figures_and_only_those() -> None:
    """The gate adds the calendar's view for each intent to one context: the figures
    worked out on it (exposure, working entries) carry over, and a change to anything
    they read is refused rather than carried over stale."""
    base = ctx()
    exposure = base.gross_exposure()
    adjusted = base.adjusted(market_open={"B": False}, trading_state=TradingState.PAUSED)
    assert adjusted.gross_exposure() == exposure == ctx().gross_exposure()
    assert adjusted.market_open == {"B": False}
    assert (
        adjusted.trading_state is TradingState.PAUSED
        and base.trading_state is not adjusted.trading_state
    )
    with pytest.raises(ValueError, match="positions"):
        base.adjusted(positions={})


def test_entries_gated_against_one_calendar_adjusted_context_see_the_same_verdicts() -> None:
    """The same entries on one context, one after another, as the router gates a
    cycle's denials, against each on a context of its own."""
    calendar = MarketCalendar(blackouts=[Blackout("CPI", NOW + 60_000, NOW + 120_000)])
    gate = RiskGate(RiskSettings(), calendar)
    shared = ctx(positions={"A": Position("A", 900, 100.0)})
    intents = [entry(qty=q) for q in (10, 100, 500, 2_000, 50)]
    together = [gate.check(i, shared) for i in intents]
    alone = [gate.check(i, ctx(positions={"A": Position("A", 900, 100.0)})) for i in intents]
    assert together == alone
    assert {v.allowed for v in together} == {True, False}  # some pass, some are denied


def test_an_allowed_verdict_is_shared_and_equal_to_a_new_one() -> None:
    assert Verdict.ok("quantity") is Verdict.ok("quantity")
    assert Verdict.ok("quantity") == Verdict(True, "quantity", "", None)
    assert Verdict.ok("price") == Verdict(True, "price") != Verdict.ok("quantity")
