"""Scenarios: a crash through the real engine on scripted bars (the stop is lost at the
gap, and the kill switch trips); a holiday and a blackout let no entry through; a
disconnect blocks entries and alerts."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.config import PaperSettings, RiskSettings
from engine.decide.strategy import StrategyInput
from engine.domain import Bar, Intent, Position, Purpose, Severity, Side, TradingState
from engine.execution.brokers.fills import slippage
from engine.market.calendar import MarketCalendar
from engine.process.runner import Engine
from engine.risk import RiskContext, RiskGate
from engine.risk.monitor import Monitor
from engine.risk.monitor_io import BlockEntries, MonitorInput, RaiseAlert
from tests.conftest import FakeClock, engine_settings

T0 = 1_767_225_600_000  # 2026-01-01 UTC, the tests' fake clock
MINUTE = 60_000


class ScriptedFeed:
    """One symbol's bars, one per cycle, exactly as written: a market that does what
    the scenario says and nothing else."""

    symbols = ("AAA",)

    def __init__(self, bars: list[tuple[float, float, float, float]]) -> None:
        self._bars = [
            Bar("AAA", T0 + (i + 1) * MINUTE, o, h, lo, c, 1e6)
            for i, (o, h, lo, c) in enumerate(bars)
        ]

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        calm = [(100.0, 100.25, 99.75, 100.0)] * n
        return {"AAA": [Bar("AAA", T0 - (n - i) * MINUTE, *p, 1e6) for i, p in enumerate(calm)]}

    def next_bars(self, now_ms: int) -> list[Bar]:
        return [self._bars.pop(0)] if self._bars else []

    def market_time(self, wall_ms: int) -> int | None:
        return None


class LongOnce:
    """Buys once, with a stop at 90 and a target at 130, then holds."""

    name = "long-once"

    def __init__(self) -> None:
        self.sent = False

    def decide(self, ctx: StrategyInput) -> list[Intent]:
        if self.sent or ctx.position is not None:
            return []
        self.sent = True
        return [Intent("AAA", Side.BUY, 1, Purpose.ENTRY, stop_loss=90.0, take_profit=130.0)]


# The crash: three bars sliding towards the stop, then a gap that opens far below it.
GAP_BAR = (80.0, 81.0, 78.0, 79.0)
CRASH = [(100.0, 100.25, 99.75, 100.0), (99.0, 99.5, 98.5, 99.0), (98.0, 98.5, 97.0, 97.5)]


def test_a_gap_through_the_stop_is_lost_at_the_gap_and_trips_the_kill_switch(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    # A gap this size is what a crash looks like; the bad-bar filter must let it through.
    settings = engine_settings(symbols=("AAA",), warmup_bars=60, max_jump=100.0)
    settings = settings.model_copy(
        update={
            "risk": settings.risk.model_copy(update={"daily_loss": 0.03, "trailing_stop": "off"})
        }
    )
    feed = ScriptedFeed([*CRASH, GAP_BAR, (79.0, 80.0, 78.5, 79.5)])
    eng = Engine(settings, tmp_path / "c.db", clock=clock, feed=feed, history=feed.warmup(60, 0, 0))
    trader = eng.open()
    trader.strategy = LongOnce()
    try:
        for _ in range(len(CRASH) + 1):
            clock.advance(1000)
            eng.step()
        conn = sqlite3.connect(tmp_path / "c.db")
        ((qty, entry, exit_price, pnl, reason),) = conn.execute(
            "SELECT qty, entry_price, exit_price, pnl, exit_reason FROM trades"
        ).fetchall()
        commission = conn.execute("SELECT TOTAL(commission) FROM fills").fetchone()[0]
        conn.close()
        gap = Bar("AAA", 0, *GAP_BAR, 1e6)
        paper = PaperSettings()
        at_the_gap = 80.0 - slippage(80.0, gap, paper)  # the open, not the stop at 90
        assert reason == "stop" and exit_price == pytest.approx(at_the_gap)
        assert pnl == pytest.approx((at_the_gap - entry) * qty - commission)
        assert -pnl >= 0.03 * 100_000  # the gap overshot the 3% daily limit...
        assert trader.state is TradingState.HALTED  # ...and the kill switch saw it
        assert trader.is_flat() and trader.oms.open_orders() == []
    finally:
        eng.close()


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
