"""Orders per second through the whole order path: the risk gate (every check),
the `signals` row, the OMS (NEW committed before the broker sees it), the paper
broker and a SQLite file in WAL mode. Market orders that fill at once, buy and
sell alternating per symbol so every second order closes a round trip. Entries
carry a stop and a target, so each is a bracket of three orders, and each exit
first cancels its position's resting pair: the path a real entry and exit take.

Limits that would stop a burst of orders by design (trades per day, order rate,
cooldown, consecutive losses, daily loss) are opened wide: the point is the cost of the
path, not the policy. Prints figures; no pass/fail: throughput, latency per order, CPU
per order, and the SQL statements and commits per order (counted with SQLite's trace
callback, in a second pass of N orders after the timed one, so counting costs the
timed figures nothing).

    .venv/bin/python bench/oms.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import SimClock, describe, open_engine, settings

from engine.domain import Intent, Purpose, Side
from engine.process.runner import Engine


def intent_for(engine: Engine, i: int) -> Intent:
    """Entries and exits alternating per symbol: every second order closes a round trip."""
    trader = engine.trader
    assert trader is not None
    symbols = list(trader.feed.symbols)
    symbol = symbols[i % len(symbols)]
    price = trader.last_bar[symbol].close
    opening = (i // len(symbols)) % 2 == 0
    return Intent(
        symbol=symbol,
        side=Side.BUY if opening else Side.SELL,
        qty=10,
        purpose=Purpose.ENTRY if opening else Purpose.EXIT,
        stop_loss=price * 0.98 if opening else None,
        take_profit=price * 1.05 if opening else None,
        reason="bench",
    )


def send(engine: Engine, clock: SimClock, i: int) -> bool:
    trader = engine.trader
    assert trader is not None
    clock.tick()
    trader.market_now += clock.step_ms
    return trader.submit(intent_for(engine, i)) is not None


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    cfg = settings(
        5,
        max_trades_per_day=10**9,
        max_orders_per_minute=10**9,
        cooldown_minutes=0,
        max_order_fill_ratio=10**9,
        max_consecutive_losses=10**9,
        daily_loss=1.0,
    )
    with tempfile.TemporaryDirectory() as folder:
        # One order per 2 s of market time (orders are stamped on the bars' clock, so
        # it is market time that moves): the density the default order-rate limit
        # (30 a minute) allows, so the risk facts hold what they would in a real run.
        clock = SimClock(step_ms=2000)
        engine = open_engine(Path(folder), cfg, clock)
        trader = engine.trader
        assert trader is not None
        samples: list[float] = []
        sent = 0
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            t0 = time.perf_counter()
            sent += send(engine, clock, i)
            samples.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        statements: Counter[str] = Counter()
        trader.db.conn.set_trace_callback(lambda sql: statements.update([sql.split()[0]]))
        for i in range(n, 2 * n):
            send(engine, clock, i)
        trader.db.conn.set_trace_callback(None)
        denied = trader.db.conn.execute(
            "SELECT check_name, count(*) FROM signals WHERE verdict = 'denied' GROUP BY 1"
        ).fetchall()
        engine.close()
    print(f"bench/oms.py: {n} market orders through gate + OMS + paper broker + SQLite (WAL)")
    print(f"  throughput {n / elapsed:,.0f} orders/s ({sent} sent, denied {denied or 'none'})")
    print(f"  per order  {describe(samples)}")
    print(f"  CPU        {cpu / n * 1e6:,.0f} us per order (this process, all threads)")
    total = sum(statements.values())
    commits = statements["COMMIT"] + statements["commit"]
    print(f"  SQL        {total / n:.1f} statements and {commits / n:.1f} commits per order")


if __name__ == "__main__":
    main()
