"""Scenarios on simulated data: a crash trips the kill switch in time; a holiday and a
blackout let no entry through; a disconnect blocks entries and alerts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.calendar import MarketCalendar
from engine.config import RiskSettings
from engine.domain import Bar, Intent, Position, Purpose, Severity, Side, TradingState
from engine.feeds import generate_history
from engine.monitor import BlockEntries, KillSwitch, Monitor, MonitorInput, RaiseAlert
from engine.risk import RiskContext, RiskGate

CRASH_START = 2_700  # seed 7: AAA falls about 9.5% in a crash from bar 2,742


@pytest.mark.parametrize(
    "limits",
    [
        RiskSettings(max_drawdown=0.05, daily_loss=1.0, trailing_stop="off", max_position_loss=1.0),
        RiskSettings(max_drawdown=1.0, daily_loss=0.05, trailing_stop="off", max_position_loss=1.0),
    ],
    ids=["drawdown", "daily_loss"],
)
def test_a_crash_trips_the_kill_switch_and_the_book_is_flat_within_one_bar(
    limits: RiskSettings,
) -> None:
    df = generate_history(["AAA", "BBB", "CCC"], 3_000, seed=7)["AAA"]
    ts, op, hi, lo, cl = (df[c].to_numpy() for c in ("ts", "open", "high", "low", "close"))
    start_equity = 100_000.0
    qty = start_equity / cl[CRASH_START]  # fully invested, long into the crash
    cash, peak = start_equity - qty * cl[CRASH_START], start_equity
    limit = min(limits.max_drawdown, limits.daily_loss)
    monitor = Monitor(limits)
    for t in range(CRASH_START + 1, len(df) - 1):
        equity = cash + qty * cl[t]
        peak = max(peak, equity)
        ctx = RiskContext(
            now=int(ts[t]) + 1,
            equity=equity,
            day_start_equity=start_equity,
            peak_equity=peak,
            positions={
                "AAA": Position("AAA", qty, cl[CRASH_START], opened_at=int(ts[CRASH_START]))
            },
            last_prices={"AAA": cl[t]},
        )
        bar = Bar("AAA", int(ts[t]), op[t], hi[t], lo[t], cl[t], 1.0)
        if any(
            isinstance(a, KillSwitch)
            for a in monitor.evaluate(MonitorInput(ctx, bars={"AAA": bar}))
        ):
            break
        base = peak if limits.max_drawdown < 1 else start_equity
        assert 1 - equity / base < limit  # it would have fired earlier
    else:
        pytest.fail("the crash never reached the limit")
    # The runner's emergency stop: flatten at the next price.
    cash += qty * op[t + 1]
    qty = 0.0
    base = peak if limits.max_drawdown < 1 else start_equity
    loss_at_flat = 1 - cash / base
    one_bar = abs(op[t + 1] - cl[t - 1]) * (start_equity / cl[CRASH_START]) / base
    assert qty == 0
    assert loss_at_flat <= limit + one_bar


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_a_holiday_and_a_blackout_let_no_entry_through(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "start,name,kind,symbols,before_minutes,after_minutes\n"
        "2026-12-23T17:00Z,US GDP,macro,*,30,60\n"
    )
    gate = RiskGate(RiskSettings(), MarketCalendar({"AAPL": "XNYS"}, events))
    intent = Intent("AAPL", Side.BUY, 10, Purpose.ENTRY, stop_loss=95.0, take_profit=120.0)
    allowed: list[int] = []
    for now in range(ms("2026-12-23T00:00"), ms("2026-12-27T00:00"), 15 * 60_000):
        ctx = RiskContext(
            now=now, equity=100_000.0, last_prices={"AAPL": 100.0}, atr_pct={"AAPL": 0.01}
        )
        if gate.check(intent, ctx).allowed:
            allowed.append(now)
    days = {datetime.fromtimestamp(t / 1000, UTC).date().isoformat() for t in allowed}
    assert "2026-12-25" not in days and "2026-12-26" not in days
    assert not [t for t in allowed if ms("2026-12-23T16:30") <= t < ms("2026-12-23T18:00")]
    assert ms("2026-12-23T15:00") in allowed  # the session itself trades


def test_a_disconnect_blocks_entries_and_alerts_but_exits_go_through() -> None:
    now = 1_700_000_000_000
    position = {"A": Position("A", 10, 100.0, opened_at=now - 60_000)}
    down = RiskContext(
        now=now,
        equity=100_000.0,
        last_prices={"A": 100.0, "B": 50.0},
        atr_pct={"A": 0.01, "B": 0.01},
        positions=position,
        broker_connected=False,
    )
    actions = Monitor(RiskSettings()).evaluate(MonitorInput(down))
    blocks = [a for a in actions if isinstance(a, BlockEntries)]
    alerts = [a for a in actions if isinstance(a, RaiseAlert)]
    assert blocks and [a.severity for a in alerts] == [Severity.HIGH]
    # The runner hands the block to the next cycle's context.
    blocked = dataclasses.replace(down, broker_connected=True, entries_blocked=blocks[0].reason)
    gate = RiskGate(RiskSettings())
    entry = Intent("B", Side.BUY, 10, Purpose.ENTRY, stop_loss=48.0, take_profit=60.0)
    assert gate.check(entry, blocked).check == "health"
    assert gate.check(Intent("A", Side.SELL, 10, Purpose.EXIT), blocked).allowed
    assert blocked.trading_state is TradingState.ACTIVE
