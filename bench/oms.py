"""Orders per second through the OMS, the real paper broker and a SQLite file (WAL).

Market orders that fill at once, alternating buy and sell per symbol so every
second order closes a round trip (a `trades` row). Prints figures; no pass/fail.

    .venv/bin/python bench/oms.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.brokers.paper import PaperBroker
from engine.config import PaperSettings
from engine.domain import Bar, Intent, OrderStatus, Purpose, Side, Verdict
from engine.oms import Oms
from engine.portfolio import Portfolio
from state.db import now_ms, open_writer

SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE")


def risk_gate(intent: Intent) -> Verdict:
    """RISK GATE GOES HERE: the real gate (engine.risk) will be called on this path,
    so its cost is measured together with the OMS. Until then everything passes."""
    return Verdict.ok("bench")


def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = open_writer(Path(folder) / "bench.db")
        broker = PaperBroker(db, PaperSettings(), starting_cash=1_000_000)
        portfolio = Portfolio(1_000_000)
        oms = Oms(db, broker, portfolio, now_ms)
        start_ts = now_ms() - 60_000
        for symbol in SYMBOLS:
            oms.on_bar(Bar(symbol, start_ts, 100.0, 101.0, 99.0, 100.0, 1e7))

        latencies: list[int] = []
        statuses: dict[OrderStatus, int] = {}
        began = time.perf_counter_ns()
        for i in range(n):
            symbol = SYMBOLS[i % len(SYMBOLS)]
            side = Side.BUY if (i // len(SYMBOLS)) % 2 == 0 else Side.SELL
            intent = Intent(symbol, side, 10, Purpose.ENTRY if side is Side.BUY else Purpose.EXIT)
            t0 = time.perf_counter_ns()
            if risk_gate(intent).allowed:
                order = oms.submit(intent, ref_price=100.0)
                statuses[order.status] = statuses.get(order.status, 0) + 1
            latencies.append(time.perf_counter_ns() - t0)
        elapsed = (time.perf_counter_ns() - began) / 1e9

        counts = {t: db[t].count for t in ("orders", "order_events", "fills", "trades")}
        db.close()

    p50, p99 = (statistics.quantiles(latencies, n=100)[q] / 1e3 for q in (49, 98))
    print(f"orders: {n} market orders through OMS + PaperBroker + SQLite (WAL, synchronous=NORMAL)")
    print(f"throughput: {n / elapsed:,.0f} orders/s ({elapsed:.2f} s)")
    print(f"latency per order: p50 {p50:,.0f} us, p99 {p99:,.0f} us")
    print("statuses: " + ", ".join(f"{s.value} {c}" for s, c in statuses.items()))
    print("rows: " + ", ".join(f"{t} {c}" for t, c in counts.items()))


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000)
