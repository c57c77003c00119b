"""The engine end to end on the embedded default: paper broker, simulated market."""

from __future__ import annotations

import math
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_settings
from engine.domain import Bar, TradingState
from engine.market.feeds import SimulatedFeed
from engine.process.lease import LeaseHeld
from engine.process.runner import SWITCH_INTERVAL_SECONDS, Engine
from store.commands import CommandStatus, enqueue_command, get_command
from tests.conftest import FakeClock, engine_settings


def start(db_file: Path, clock: FakeClock, opened: list[Any], **engine: Any) -> Engine:
    eng = Engine(engine_settings(**engine), db_file, clock=clock)
    eng.open()
    opened.append(eng)
    return eng


def run(eng: Engine, clock: FakeClock, cycles: int) -> None:
    for _ in range(cycles):
        clock.advance(1000)
        eng.step()


def query(db_file: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_file)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def until_position(eng: Engine, clock: FakeClock, limit: int = 600) -> None:
    assert eng.trader is not None
    for _ in range(limit):
        run(eng, clock, 1)
        if eng.trader.portfolio.positions:
            return
    pytest.fail(f"no position opened in {limit} cycles")


def test_hundreds_of_cycles_trade_and_keep_the_books_consistent(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    run(eng, clock, 400)

    assert query(db_file, "SELECT count(*) FROM cycles WHERE error IS NOT NULL") == [(0,)]
    (round_trips,) = query(db_file, "SELECT count(*) FROM trades")[0]
    assert round_trips >= 3, "the default strategy should trade regularly on the simulator"
    signed: dict[str, float] = defaultdict(float)
    for symbol, side, qty in query(db_file, "SELECT symbol, side, qty FROM fills"):
        signed[symbol] += qty if side == "BUY" else -qty
    held = dict(query(db_file, "SELECT symbol, qty FROM positions"))
    for symbol, qty in signed.items():
        assert math.isclose(held.get(symbol, 0.0), qty, abs_tol=1e-9), symbol
    cash, equity = query(db_file, "SELECT cash, equity FROM equity ORDER BY ts DESC LIMIT 1")[0]
    marked = query(db_file, "SELECT coalesce(sum(qty * last_price), 0) FROM positions")[0][0]
    assert math.isclose(equity, cash + marked, rel_tol=1e-12)


def test_stop_exits_are_booked_at_or_beyond_their_stop_never_at_a_better_close(
    db_file, clock, open_engines
):
    eng = start(db_file, clock, open_engines)
    run(eng, clock, 400)

    stops = query(
        db_file,
        "SELECT side, exit_price, stop FROM trades WHERE exit_reason IN ('stop', 'trailing')",
    )
    assert stops, "the simulator should stop some positions out in 400 bars"
    for side, exit_price, stop in stops:
        if side == "BUY":  # a long: sold at the stop or below it
            assert exit_price <= stop + 1e-9
        else:
            assert exit_price >= stop - 1e-9


def test_every_order_starts_new_and_every_fill_belongs_to_an_order(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    run(eng, clock, 300)

    first_events = query(
        db_file,
        "SELECT e.status FROM order_events e WHERE e.id IN"
        " (SELECT min(id) FROM order_events GROUP BY client_order_id)",
    )
    assert first_events and {s for (s,) in first_events} == {"NEW"}
    orphans = query(
        db_file,
        "SELECT count(*) FROM fills f LEFT JOIN orders o USING (client_order_id)"
        " WHERE o.id IS NULL",
    )
    assert orphans == [(0,)]


def test_a_restart_continues_without_duplicate_orders_or_bar_jumps(db_file, clock, open_engines):
    first = start(db_file, clock, open_engines)
    run(first, clock, 200)
    orders_before = query(db_file, "SELECT client_order_id FROM orders")
    first.close()
    open_engines.remove(first)

    second = start(db_file, clock, open_engines)
    run(second, clock, 200)

    rejected = query(db_file, "SELECT count(*) FROM alerts WHERE source = 'feed'")
    assert rejected == [(0,)], "the resumed simulator continues from the stored closes"
    orders_after = {c for (c,) in query(db_file, "SELECT client_order_id FROM orders")}
    assert {c for (c,) in orders_before} <= orders_after
    per_signal = query(
        db_file,
        "SELECT count(*) FROM signals WHERE client_order_id IS NOT NULL"
        " GROUP BY client_order_id HAVING count(*) > 1",
    )
    assert per_signal == []
    duplicates = query(
        db_file, "SELECT symbol, ts, count(*) FROM bars GROUP BY symbol, ts HAVING count(*) > 1"
    )
    assert duplicates == []


def test_emergency_stop_flattens_and_halted_survives_a_restart(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    until_position(eng, clock)

    enqueue_command("emergency_stop", {"reason": "test"}, "cli:tester", db=db_file)
    run(eng, clock, 1)

    assert eng.trader is not None and eng.trader.is_flat()
    assert query(db_file, "SELECT count(*) FROM positions") == [(0,)]
    assert query(db_file, "SELECT trading_state FROM engine") == [("HALTED",)]
    assert query(db_file, "SELECT count(*) FROM alerts WHERE severity = 'CRITICAL'")[0][0] >= 1
    halted_at = query(db_file, "SELECT state_changed_at FROM engine")[0][0]
    eng.close()
    open_engines.remove(eng)

    again = start(db_file, clock, open_engines)
    run(again, clock, 100)
    assert query(db_file, "SELECT trading_state FROM engine") == [("HALTED",)]
    entries = query(
        db_file, "SELECT count(*) FROM orders WHERE purpose = 'ENTRY' AND created_at > ?", halted_at
    )
    assert entries == [(0,)]


def test_resume_from_halted_needs_confirmation_and_a_reason(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    enqueue_command("emergency_stop", {}, "cli:tester", db=db_file)
    run(eng, clock, 1)

    refused = enqueue_command("resume", {}, "cli:tester", db=db_file)
    run(eng, clock, 1)
    accepted = enqueue_command(
        "resume", {"confirm": True, "reason": "checked"}, "cli:t", db=db_file
    )
    run(eng, clock, 1)

    assert get_command(refused, db=db_file).status is CommandStatus.FAILED
    assert get_command(accepted, db=db_file).status is CommandStatus.DONE
    assert query(db_file, "SELECT trading_state, state_reason FROM engine") == [
        ("ACTIVE", "checked")
    ]
    actions = [a for (a,) in query(db_file, "SELECT action FROM audit ORDER BY id")]
    assert actions.count("state_change") == 2


def test_flatten_closes_positions_and_leaves_the_engine_paused(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines)
    until_position(eng, clock)

    enqueue_command("flatten", {}, "cli:tester", db=db_file)
    run(eng, clock, 1)

    assert eng.trader is not None and eng.trader.is_flat()
    assert eng.trader.state is TradingState.PAUSED
    run(eng, clock, 50)
    assert not eng.trader.portfolio.positions, "PAUSED opens nothing new"


class _Sabotaged:
    """The simulator, with one symbol's bars broken on chosen cycles."""

    def __init__(self, inner: SimulatedFeed, breakages: dict[int, str]) -> None:
        self.inner, self.breakages, self.calls = inner, breakages, 0
        self.symbols = inner.symbols
        self.last_good: Bar | None = None

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        return self.inner.warmup(n, end_ts, interval_ms)

    def market_time(self, wall_ms: int) -> int | None:
        return None

    def next_bars(self, now_ms: int) -> list[Bar]:
        self.calls += 1
        bars = self.inner.next_bars(now_ms)
        kind = self.breakages.get(self.calls)
        out = []
        for bar in bars:
            if bar.symbol == self.symbols[0] and kind:
                out.append(_broken(bar, kind, self.last_good))
                continue
            if bar.symbol == self.symbols[0]:
                self.last_good = bar
            out.append(bar)
        return out


def _broken(bar: Bar, kind: str, last: Bar | None) -> Bar:
    from dataclasses import replace

    if kind == "nan":
        return replace(bar, close=float("nan"))
    if kind == "negative":
        return replace(bar, low=-1.0)
    if kind == "duplicate" and last is not None:
        return replace(bar, ts=last.ts)
    return replace(bar, close=bar.close * 5, high=bar.close * 5)  # absurd jump


def test_bad_bars_are_rejected_with_an_alert_and_never_traded(db_file, clock, open_engines):
    settings = engine_settings()
    symbols = ("BAD", "GOOD-A", "GOOD-B")
    inner = SimulatedFeed(symbols, seed=3)
    history = inner.warmup(120, clock() - 60_000, 60_000)
    live_from = clock() - 60_000  # market time: live bars follow the warm-up, a minute apart
    feed = _Sabotaged(inner, {5: "nan", 6: "negative", 7: "duplicate", 8: "jump"})
    eng = Engine(settings, db_file, clock=clock, feed=feed, history=history)
    eng.open()
    open_engines.append(eng)
    run(eng, clock, 10)

    messages = [m for (m,) in query(db_file, "SELECT message FROM alerts WHERE source = 'feed'")]
    assert len(messages) == 1, "one deduplicated alert for the symbol"
    (count,) = query(db_file, "SELECT count FROM alerts WHERE source = 'feed'")[0]
    assert count == 4
    assert "BAD" in messages[0] and "jump" in messages[0]
    stored = query(db_file, "SELECT count(*) FROM bars WHERE symbol = 'BAD' AND ts > ?", live_from)
    assert stored == [(6,)], "ten cycles minus four rejected bars"
    for symbol in symbols[1:]:
        good = query(
            db_file, "SELECT count(*) FROM bars WHERE symbol = ? AND ts > ?", symbol, live_from
        )
        assert good == [(10,)]
    bad_bar_orders = query(
        db_file,
        "SELECT count(*) FROM signals WHERE symbol = 'BAD' AND ts BETWEEN ? AND ?",
        live_from + 5 * 60_000,
        live_from + 8 * 60_000,
    )
    assert bad_bar_orders == [(0,)]


def test_a_second_engine_on_the_same_database_is_refused(db_file, clock, open_engines):
    start(db_file, clock, open_engines)
    with pytest.raises(LeaseHeld, match="another engine"):
        Engine(engine_settings(), db_file, clock=clock).open()


def test_failing_cycles_are_recorded_and_pause_trading_past_the_limit(db_file, clock, open_engines):
    eng = start(db_file, clock, open_engines, failure_pause_after=3)
    assert eng.trader is not None

    def broken(now_ms: int) -> list[Bar]:
        raise RuntimeError("feed exploded")

    eng.trader.feed.next_bars = broken  # type: ignore[method-assign]
    run(eng, clock, 3)

    errors = query(db_file, "SELECT error FROM cycles WHERE error IS NOT NULL")
    assert len(errors) == 3 and "feed exploded" in errors[0][0]
    assert query(db_file, "SELECT trading_state FROM engine") == [("PAUSED",)]
    severities = {s for (s,) in query(db_file, "SELECT severity FROM alerts WHERE source='cycle'")}
    assert "CRITICAL" in severities


def test_the_real_scheduler_runs_cycles_and_answers_commands(db_file):
    settings = engine_settings(cycle_seconds=0.05, warmup_bars=60)
    eng = Engine(settings, db_file)
    eng.open()
    before = sys.getswitchinterval()
    runner = threading.Thread(target=eng.run, kwargs={"for_seconds": 120, "install_signals": False})
    runner.start()

    def cycles() -> int:
        return query(db_file, "SELECT count(*) FROM cycles")[0][0]

    try:
        wait_until(lambda: cycles() >= 8, "the scheduler runs cycles")
        running = sys.getswitchinterval()  # the trading thread waits less for the GIL
        command_id = enqueue_command("pause", {}, "cli:tester", db=db_file)
        wait_until(
            lambda: get_command(command_id, db=db_file).status is not CommandStatus.PENDING,
            "the command job answers the command",
        )
    finally:
        eng.request_stop()
        runner.join(timeout=60)

    assert not runner.is_alive()
    assert running == pytest.approx(SWITCH_INTERVAL_SECONDS)
    assert before != pytest.approx(SWITCH_INTERVAL_SECONDS)
    assert sys.getswitchinterval() == before
    assert get_command(command_id, db=db_file).status is CommandStatus.DONE
    assert query(db_file, "SELECT trading_state FROM engine") == [("PAUSED",)]
    assert query(db_file, "SELECT stopped_at IS NOT NULL FROM engine") == [(1,)]


def wait_until(condition, what: str, seconds: float = 60) -> None:
    """Wait for a condition with a deadline: a busy machine is slow, not wrong."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.02)


def test_a_daily_limit_denial_is_stored_once_not_every_cycle(db_file, clock, open_engines):
    eng = Engine(
        load_settings(
            engine={"cycle_seconds": 1.0, "symbols": 4, "seed": 11, "warmup_bars": 120},
            risk={"max_trades_per_day": 1},
        ),
        db_file,
        clock=clock,
    )
    eng.open()
    open_engines.append(eng)
    run(eng, clock, 400)

    entries = query(db_file, "SELECT count(*) FROM orders WHERE purpose = 'ENTRY'")
    denials = query(db_file, "SELECT count(*) FROM signals WHERE check_name = 'trades_per_day'")
    assert entries == [(1,)]
    assert denials == [(1,)], "entries are not proposed again until the next day"


def test_a_restart_after_losing_past_the_daily_limit_trips_the_kill_switch(
    db_file, clock, open_engines
):
    """Earlier today the account stood at 110,000; it restarts at 100,000 (-9%), past
    the 6% daily loss limit: the monitor's kill switch halts at its first look."""
    from store.db import open_writer

    db = open_writer(db_file)
    day_start = clock() - clock() % 86_400_000
    db.conn.execute(
        "INSERT INTO equity (ts, cash, equity, realized, unrealized, peak, drawdown)"
        " VALUES (?, 110000, 110000, 0, 0, 110000, 0)",
        (day_start - 1000,),
    )
    db.conn.commit()
    db.conn.close()

    eng = start(db_file, clock, open_engines)
    run(eng, clock, 1)

    assert eng.trader is not None and eng.trader.state is TradingState.HALTED
    assert eng.trader.is_flat()
    reason, actor = query(
        db_file,
        "SELECT json_extract(payload, '$.reason'), actor FROM audit"
        " WHERE action = 'state_change' ORDER BY id DESC LIMIT 1",
    )[0]
    assert actor == "monitor" and reason.startswith("kill switch: daily loss")
    assert query(db_file, "SELECT count(*) FROM alerts WHERE severity = 'CRITICAL'")[0][0] >= 1


@pytest.mark.parametrize("method", ["volatility", "kelly"])
def test_entries_are_sized_by_the_configured_method_and_say_so(
    db_file, clock, open_engines, method
):
    eng = Engine(
        load_settings(
            engine={"cycle_seconds": 1.0, "symbols": 4, "seed": 11, "warmup_bars": 120},
            risk={"sizing": method},
        ),
        db_file,
        clock=clock,
    )
    eng.open()
    open_engines.append(eng)
    run(eng, clock, 300)

    methods = query(
        db_file,
        "SELECT DISTINCT json_extract(sizing, '$.method') FROM orders WHERE purpose = 'ENTRY'",
    )
    assert methods == [(method,)]


def test_the_heartbeat_says_whether_any_market_is_open(db_file, clock, open_engines):
    christmas = 1_798_200_000_000  # 2026-12-25 ~ 16:00 UTC, XNYS closed all day
    clock.now = christmas
    eng = Engine(
        load_settings(
            engine={"cycle_seconds": 1.0, "symbols": ("AAPL", "MSFT"), "warmup_bars": 60},
            risk={"exchanges": {"AAPL": "XNYS", "MSFT": "XNYS"}},
        ),
        db_file,
        clock=clock,
    )
    eng.open()
    open_engines.append(eng)
    run(eng, clock, 1)
    assert query(db_file, "SELECT market_open FROM engine") == [(0,)]
    assert query(db_file, "SELECT count(*) FROM orders WHERE purpose = 'ENTRY'") == [(0,)]
