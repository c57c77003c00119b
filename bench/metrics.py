"""What metrics cost: the trading thread's hook per cycle, and one /metrics scrape
over real HTTP while the engine keeps writing, on a small and on a marathon-sized
database (the scrape tails tables by row id, so its cost should not grow with them).

    .venv/bin/python bench/metrics.py [CYCLES]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import SimClock, describe, open_engine, settings

from engine.process.metrics import EngineMetrics, MetricsServer


def pad(db: Path, rows: int) -> None:
    """Old rows, as months of marathon leave them: fills, signals, order events, alerts."""
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO order_events (client_order_id, ts, status, detail) VALUES (?, ?, ?, '')",
            ((f"old-{i}", i, "FILLED") for i in range(rows)),
        )
        conn.executemany(
            "INSERT INTO signals (ts, symbol, side, qty, purpose, verdict, check_name)"
            " VALUES (?, 'OLD', 'BUY', 1, 'entry', 'denied', 'price_band')",
            ((i,) for i in range(rows)),
        )
        conn.executemany(
            "INSERT INTO alerts (ts, last_ts, severity, source, title, count, acked_at)"
            " VALUES (?, ?, 'INFO', 'old', 'old', 1, ?)",
            ((i, i, i) for i in range(rows // 10)),
        )
    conn.close()


def run(folder: Path, cycles: int, old_rows: int) -> None:
    clock = SimClock()
    engine = open_engine(folder, settings(20), clock)
    pad(engine.path, old_rows)
    metrics = EngineMetrics(
        engine.path,
        cycle_seconds=1.0,
        stale_seconds=None,
        stale_intervals=10,
        failures_limit=5,
        clock=clock,
    )
    metrics.store.start()
    server = MetricsServer(metrics, "127.0.0.1", 0)
    server.start()
    _host, port = server.address
    url = f"http://127.0.0.1:{port}/metrics"
    hook_ms: list[float] = []
    scrape_ms: list[float] = []
    size = 0
    assert engine.trader is not None
    with requests.Session() as http:
        for i in range(cycles):
            clock.tick()
            result = engine.step()[0]
            started = time.perf_counter()
            metrics.cycle_done(result, engine.trader)
            hook_ms.append((time.perf_counter() - started) * 1000)
            if i % 5 == 0:  # a 5 s scrape interval at 1 s cycles
                started = time.perf_counter()
                body = http.get(url, timeout=5).content
                scrape_ms.append((time.perf_counter() - started) * 1000)
                size = len(body)
    server.close()
    engine.close()
    print(f"  {old_rows:>9,} old rows: cycle hook {describe(hook_ms)}")
    # The first scrape opens the connection and reads cold pages: shown apart.
    print(f"  {old_rows:>9,} old rows: first scrape {scrape_ms[0]:.1f} ms")
    print(f"  {old_rows:>9,} old rows: scrape     {describe(scrape_ms[1:])}; {size:,} bytes")


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    print(f"metrics: 20 symbols, {cycles} cycles, a scrape every 5 cycles")
    for old_rows in (0, 1_000_000):
        with tempfile.TemporaryDirectory() as folder:
            run(Path(folder), cycles, old_rows)


if __name__ == "__main__":
    main()
