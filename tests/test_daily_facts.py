"""The gate's daily facts in memory (engine.risk.daily) agree with the store: after
random sequences of orders, fills, round trips, marks, cash movements, state
changes and trading-day rollovers, they equal `load_risk_facts` on the same file."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from engine.cycle import Trader
from engine.domain import Intent, OrderType, Purpose, Side, TradingState
from engine.process.runner import Engine
from engine.risk import RiskContext, RiskFacts, load_risk_facts
from tests.conftest import FakeClock, engine_settings

HOUR = 3_600_000


def start(db_file: Path, clock: FakeClock, opened: list[Any]) -> Trader:
    eng = Engine(engine_settings(symbols=3, warmup_bars=30), db_file, clock=clock)
    trader = eng.open()
    opened.append(eng)
    return trader


def stored(trader: Trader) -> RiskFacts:
    return load_risk_facts(trader.db.conn, trader.market_now, day=trader.trading_day)


def same(memory: RiskFacts, store: RiskFacts) -> None:
    floats = ("realized_today", "day_start_equity", "peak_equity")
    for f in dataclasses.fields(RiskFacts):
        mine, theirs = getattr(memory, f.name), getattr(store, f.name)
        if f.name in floats and theirs is not None:
            assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-6), f.name
        else:
            assert mine == theirs, f.name


def built_at_once(trader: Trader) -> None:
    """The context made straight from memory equals the one made from its facts."""
    now = trader.market_now
    live: dict[str, Any] = {
        "equity": 123_456.0,
        "cash": 100_000.0,
        "positions": dict(trader.portfolio.positions),
        "last_prices": {s: b.close for s, b in trader.last_bar.items()},
        "open_orders": tuple(trader.oms.open_orders()),
        "atr_pct": {"A": 0.01},
        "returns": {"A": (0.1, -0.1)},
        "broker_connected": False,
        "trading_state": TradingState.PAUSED,
        "stale_symbols": frozenset({"A"}),
        "entries_blocked": "test",
    }
    direct = trader.daily.context(now, **live)
    usual = trader.daily.facts(now).context(now=now, **live)
    assert type(direct) is RiskContext and direct == usual
    for f in dataclasses.fields(RiskContext):  # _memo too, which == does not compare
        assert getattr(direct, f.name) == getattr(usual, f.name), f.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        direct.equity = 0.0  # type: ignore[misc]
    assert direct.last_exit_at == stored(trader).last_exit_at


def random_step(trader: Trader, clock: FakeClock, rng: random.Random) -> None:
    symbol = rng.choice(list(trader.feed.symbols))
    price = trader.last_bar[symbol].close
    held = trader.portfolio.position(symbol)
    roll = rng.random()
    if roll < 0.2:
        trader.submit(
            Intent(
                symbol,
                Side.BUY,
                rng.randint(10, 40),
                Purpose.ENTRY,
                stop_loss=price * 0.97,
                take_profit=price * 1.06,
                reason="test",
            )
        )
    elif roll < 0.3 and held is not None:
        trader.submit(Intent(symbol, Side.SELL, held.qty, Purpose.EXIT, reason="test"))
    elif roll < 0.4:
        limit = price * 0.9  # rests, to be canceled or expired later
        trader.submit(
            Intent(
                symbol,
                Side.BUY,
                1,
                Purpose.ENTRY,
                order_type=OrderType.LIMIT,
                limit_price=limit,
                stop_loss=limit * 0.97,
                take_profit=limit * 1.1,
                reason="test",
            )
        )
    elif roll < 0.47 and trader.oms.open_orders():
        trader.oms.cancel(rng.choice(trader.oms.open_orders()).client_order_id)
    elif roll < 0.85:
        clock.advance(1_000)  # a new bar per symbol: prices move, resting orders fill
        if rng.random() < 0.1:
            trader.market_now += rng.choice([3 * HOUR, 13 * HOUR])  # often into a new day
        trader.cycle()  # marks equity at the new market time
    elif roll < 0.9:
        # An operator's pause and resume: two state changes, trading goes on.
        trader.set_state(TradingState.PAUSED, "test", "test")
        trader.set_state(TradingState.ACTIVE, "test", "test")
        trader.db.conn.commit()
    elif roll < 0.93:
        trader.move_cash(rng.choice([500.0, -300.0]), "test", "test")
    else:
        trader.market_now += rng.randint(1, 5) * 1000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_facts_in_memory_equal_the_stores_after_random_trading(
    seed: int, db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    trader = start(db_file, clock, open_engines)
    rng = random.Random(seed)
    for _ in range(250):
        random_step(trader, clock, rng)
        same(trader.daily.facts(trader.market_now), stored(trader))
        built_at_once(trader)
    # The sequence did trade, close round trips and cross trading days.
    conn = trader.db.conn
    days = {trader.trading_day.start(t) for (t,) in conn.execute("SELECT created_at FROM orders")}
    assert conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0] > 0 and len(days) > 1


def test_a_restarted_engine_rebuilds_the_days_facts_from_the_store(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    trader = start(db_file, clock, open_engines)
    rng = random.Random(7)
    for _ in range(40):
        random_step(trader, clock, rng)
    before = trader.daily.facts(trader.market_now)
    open_engines.pop().close()
    again = start(db_file, clock, open_engines)
    same(again.daily.facts(before.now), before)
