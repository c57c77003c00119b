"""Emergency stop latency: from the command row written (as the cockpit or CLI
writes it) to the engine HALTED, every order canceled, every position closed and
all of it committed, with the engine running on the real scheduler.

    .venv/bin/python bench/estop.py [RUNS]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import describe

from engine.config import load_settings
from engine.process.runner import Engine
from store.commands import enqueue_command


def _flat_and_halted(db: Path) -> bool:
    conn = sqlite3.connect(db)
    try:
        state = conn.execute("SELECT trading_state FROM engine").fetchone()[0]
        held = conn.execute("SELECT count(*) FROM positions WHERE qty != 0").fetchone()[0]
        working = conn.execute(
            "SELECT count(*) FROM orders WHERE status IN"
            " ('NEW','SUBMITTED','ACCEPTED','PARTIALLY_FILLED')"
        ).fetchone()[0]
        return bool(state == "HALTED" and held == 0 and working == 0)
    finally:
        conn.close()


def one_run(folder: Path, seed: int) -> tuple[float, int]:
    db = folder / f"estop-{seed}.db"
    cfg = load_settings(
        engine={"symbols": 20, "cycle_seconds": 0.05, "seed": seed, "warmup_bars": 200}
    )
    engine = Engine(cfg, db)
    engine.open()
    assert engine.trader is not None
    thread = threading.Thread(target=engine.run, kwargs={"install_signals": False})
    thread.start()
    deadline = time.monotonic() + 30
    while not engine.trader.portfolio.positions and time.monotonic() < deadline:
        time.sleep(0.01)
    held = len(engine.trader.portfolio.positions)
    started = time.perf_counter()
    enqueue_command("emergency_stop", {"reason": "bench"}, "cli:bench", db=db)
    while not _flat_and_halted(db):
        time.sleep(0.002)
    elapsed = (time.perf_counter() - started) * 1000
    engine.request_stop()
    thread.join()
    return elapsed, held


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    samples, held = [], []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(runs):
            ms, n = one_run(Path(folder), seed)
            samples.append(ms)
            held.append(n)
    print(f"bench/estop.py: {runs} runs, 20 symbols, real scheduler (commands every 250 ms)")
    print(f"  command written -> HALTED, flat, persisted: {describe(samples)}")
    print(f"  positions open at the stop: {min(held)}..{max(held)}")


if __name__ == "__main__":
    main()
