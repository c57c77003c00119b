"""Does the default demo keep trading? Runs `python -m engine run` with no
configuration (the simulated market, 1-minute bars at 60x, the model bootstrap
training in the background, exactly what `make run` starts) for a while on a
throwaway database, then prints fills per two-minute window of wall time, the
market time covered, trading days used and what the gate denied.

    .venv/bin/python bench/demo.py [--seconds 600] [--window 120]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--window", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "demo.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_")}
        env |= {"COCKPIT_DB": str(db), "COCKPIT_CONFIG": str(Path(folder) / "none.toml")}
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "engine", "run", "--for", str(args.seconds)],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.monotonic() - started
        report(db, args.window * 1000, wall)


def report(db: Path, window_ms: float, wall: float) -> None:
    conn = sqlite3.connect(db)
    first = conn.execute("SELECT min(started_at) FROM cycles").fetchone()[0]
    windows = conn.execute(
        "SELECT CAST((started_at - ?) / ? AS INTEGER) AS w, sum(fills), sum(orders), count(*)"
        " FROM cycles GROUP BY w ORDER BY w",
        (first, window_ms),
    ).fetchall()
    span = conn.execute("SELECT min(ts), max(ts) FROM bars").fetchone()
    entries = conn.execute("SELECT count(*) FROM orders WHERE purpose = 'ENTRY'").fetchone()[0]
    denied = conn.execute(
        "SELECT check_name, count(*) FROM signals WHERE verdict = 'denied'"
        " GROUP BY check_name ORDER BY 2 DESC"
    ).fetchall()
    paused = conn.execute(
        "SELECT title, count(*) FROM alerts WHERE title LIKE 'Entries paused%' GROUP BY title"
    ).fetchall()
    equity = conn.execute("SELECT equity FROM equity ORDER BY ts DESC LIMIT 1").fetchone()
    print(f"wall time run          {wall:.0f} s")
    print(f"market time covered    {(span[1] - span[0]) / 3_600_000:.1f} h (with warm-up)")
    for w, fills, orders, cycles in windows:
        print(
            f"window {w:2d} ({window_ms / 1000:.0f} s)  fills {fills:4d}  orders {orders:4d}"
            f"  cycles {cycles}"
        )
    quiet = sum(1 for _, fills, _, _ in windows if not fills)
    print(f"windows without a fill {quiet} of {len(windows)}")
    print(f"entries                {entries}")
    print(f"denials by check       {dict(denied)}")
    print(f"day-limit pauses       {dict(paused) or 'none'}")
    print(f"equity at the end      {equity[0]:,.2f}" if equity else "no equity marks")


if __name__ == "__main__":
    main()
