"""Orders per second through the whole order path: the risk gate (every check),
the `signals` row, the OMS (NEW committed before the broker sees it), the paper
broker and a SQLite file in WAL mode, checkpointed on a thread of its own as the
running engine's is. Market orders that fill at once, buy and
sell alternating per symbol so every second order closes a round trip. Entries
carry a stop and a target, so each is a bracket of three orders, and each exit
first cancels its position's resting pair: the path a real entry and exit take.

Three ways through it: one order at a time (`Trader.submit`, as a command or the
monitor sends one, 5 symbols), and a cycle's orders placed together by the router
(`OrderRouter.route`: one intent per symbol, their NEW rows committed together,
then sent and booked together) at 20 and at 100 symbols.

Limits that would stop a burst of orders by design (trades per day, order rate,
cooldown, consecutive losses, daily loss) are opened wide: the point is the cost of the
path, not the policy. Prints figures; no pass/fail: throughput, latency per order (per
batch for the batches), CPU per order, and the SQL statements, commits and WAL pages
written per order (statements counted with SQLite's trace callback and pages from the
WAL file's growth, in a second pass of N orders after the timed one, so counting costs
the timed figures nothing).

    .venv/bin/python bench/oms.py [N] [MODE ...]     MODE: 1, 20, 100 (default: all)
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import SimClock, describe, open_engine, settings

from engine.cycle.recorder import Stopwatch
from engine.domain import Intent, Purpose, Side
from engine.process.runner import Engine
from store.checkpoint import Checkpointer


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


def route(engine: Engine, clock: SimClock, batch: int, first: int) -> int:
    """One cycle's intents, one per symbol, through the router; returns orders sent."""
    trader = engine.trader
    assert trader is not None
    clock.tick()
    trader.market_now += clock.step_ms
    intents = [intent_for(engine, i) for i in range(first, first + batch)]
    return trader.router.route(intents, first // batch, Stopwatch())[0]


def run(batch: int, n: int) -> None:
    """N orders one at a time (batch 1) or in cycles of `batch` symbols."""
    cfg = settings(
        5 if batch == 1 else batch,
        max_trades_per_day=10**9,
        max_orders_per_minute=10**9,
        cooldown_minutes=0,
        max_order_fill_ratio=10**9,
        max_consecutive_losses=10**9,
        daily_loss=1.0,
        max_open_positions=500,
        max_gross_exposure=20,
        max_net_exposure=20,
    )
    # The cash of the 5-symbol account for every 5 symbols: a hundred positions of
    # 10 shares would otherwise run out of buying power half way.
    cash = cfg.engine.starting_cash * max(1, batch // 5)
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"starting_cash": cash})})
    n -= n % batch
    with tempfile.TemporaryDirectory() as folder:
        # One order per 2 s of market time (a cycle of 20 every 40 s; orders are
        # stamped on the bars' clock, so it is market time that moves): the density
        # the default order-rate limit (30 a minute) allows, so the risk facts hold
        # what they would in a real run.
        clock = SimClock(step_ms=2000 * batch)
        engine = open_engine(Path(folder), cfg, clock)
        trader = engine.trader
        assert trader is not None

        def go(first: int) -> int:
            if batch == 1:
                return int(send(engine, clock, first))
            return route(engine, clock, batch, first)

        samples: list[float] = []
        sent = 0
        # The WAL is checkpointed off the writer's thread, as `Engine.run` does.
        checkpointer = Checkpointer(Path(folder) / "bench.db")
        checkpointer.start()
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, batch):
            t0 = time.perf_counter()
            sent += go(first)
            samples.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        checkpointer.stop()
        conn = trader.db.conn
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        autocheckpoint = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        statements: Counter[str] = Counter()
        conn.set_trace_callback(lambda sql: statements.update([sql.split()[0]]))
        for first in range(n, 2 * n, batch):
            go(first)
        conn.set_trace_callback(None)
        conn.commit()
        wal = Path(folder) / "bench.db-wal"
        frame = conn.execute("PRAGMA page_size").fetchone()[0] + 24
        pages = max(0, wal.stat().st_size - 32) // frame if wal.exists() else 0
        conn.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
        denied = conn.execute(
            "SELECT check_name, count(*) FROM signals WHERE verdict = 'denied' GROUP BY 1"
        ).fetchall()
        engine.close()
    how = "one at a time" if batch == 1 else f"in cycles of {batch} symbols"
    print(f"bench/oms.py: {n} market orders {how}, gate + OMS + paper broker + SQLite (WAL)")
    print(f"  throughput {n / elapsed:,.0f} orders/s ({sent} sent, denied {denied or 'none'})")
    print(f"  per {'order' if batch == 1 else 'cycle'}  {describe(samples)}")
    print(f"  CPU        {cpu / n * 1e6:,.0f} us per order (this process, all threads)")
    total = sum(statements.values())
    commits = statements["COMMIT"] + statements["commit"]
    print(
        f"  SQL        {total / n:.1f} statements, {commits / n:.2f} commits"
        f" and {pages / n:.1f} WAL pages per order"
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for batch in [int(a) for a in sys.argv[2:]] or [1, 20, 100]:
        run(batch, n)


if __name__ == "__main__":
    main()
