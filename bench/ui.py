"""Cockpit page run times on a large database, through AppTest (the whole script:
frame, sidebar and page).

The database holds 1,000,000 fills (500,000 orders, 1,500,000 order events),
100,000 alerts, a year of one-minute equity marks and cycles, 30 days of one-minute
bars, regime calls and model predictions (champion and challenger, scored) for 5
symbols with a drift check every 10 minutes, 250,000 round trips and 200,000
signals. It is
generated once with executemany in one transaction and cached under var/bench/.

The account in it is one a real engine accepts: orders come in buy-then-sell
pairs per symbol, so the fills leave the book flat; a deposit before the first
mark brings the fills' cash to the last equity mark, and the paper broker's account holds the
same cash, so the engine starts without a false drawdown or a broker that cannot
pay.

    python bench/ui.py [--runs 30] [--rebuild] [--live]

`--live` times the pages twice: on the idle database, then with a real engine
(`python -m engine run --symbols 20 --cycle-seconds 0.25`) writing into a copy of
it, and prints how long the engine took to start on a year of fills and how its
cycles ran meanwhile.

Prints median, p99 and max wall time per page and the median and p99 CPU time of a run
(all threads of this process: on a busy machine the wall time waits for a core,
the CPU time does not); the target is 300 ms per page. Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlite_utils import Database  # noqa: E402

from store.db import ensure_schema, now_ms, open_writer  # noqa: E402

CACHE = ROOT / "var" / "bench" / "ui-v5.db"
LIVE = ROOT / "var" / "bench" / "ui-live.db"
STARTING_CASH = 100_000.0  # the engine's default
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
MINUTE = 60_000
YEAR_MINUTES = 365 * 24 * 60
REGIMES = ["trend_up", "trend_down", "range", "high_vol", "crash"]
PAGES = [
    "pages/overview.py",
    "pages/regime.py",
    "pages/orders.py",
    "pages/alerts.py",
    "pages/marathon.py",
    "pages/risk.py",
    "pages/models.py",
]


def build(path: Path) -> None:
    """Write the benchmark database (about a minute, once)."""
    rng = np.random.default_rng(7)
    tmp = path.with_suffix(".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    db = open_writer(tmp)
    conn = db.conn
    end = now_ms() // MINUTE * MINUTE
    start = end - YEAR_MINUTES * MINUTE
    t0 = time.perf_counter()
    versions = _models(db, tmp.parent / "models", start)
    with conn:
        ts, equity = _equity_and_cycles(conn, rng, start, end)
        _bars_and_regimes(conn, rng, ts)
        _predictions_and_drift(conn, rng, ts, versions)
        sides, prices = _orders_and_fills(conn, rng, start, end)
        _trades_and_signals(conn, rng, start, end)
        _alerts(conn, rng, start, end)
        _account(conn, sides, prices, start, float(equity[-1]))
        conn.execute(
            "INSERT INTO engine (id, owner, pid, started_at, heartbeat_at, trading_state, mode,"
            " broker, broker_connected, market_open, cycle_seconds, last_cycle_at)"
            " VALUES (1, 'bench', 0, ?, ?, 'ACTIVE', 'PAPER', 'paper', 1, 1, 60, ?)",
            (start, end, end),
        )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    ensure_schema(tmp)  # the engine's migrations, read-model indexes included
    _paper_account(tmp, float(equity[-1]), end)
    tmp.replace(path)
    print(f"built {path} in {time.perf_counter() - t0:.0f} s ({path.stat().st_size / 1e6:.0f} MB)")


def _equity_and_cycles(
    conn: sqlite3.Connection, rng: np.random.Generator, start: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    # equity and cycles: one a minute for a year
    ts = np.arange(start, end, MINUTE, dtype=np.int64)
    equity = 100_000 + np.cumsum(rng.normal(2, 60, ts.size))
    peak = np.maximum.accumulate(equity)
    conn.executemany(
        "INSERT INTO equity (ts, cash, equity, realized, unrealized, peak, drawdown)"
        " VALUES (?, ?, ?, 0, 0, ?, ?)",
        zip(
            ts.tolist(),
            equity.tolist(),
            equity.tolist(),
            peak.tolist(),
            (1 - equity / peak).tolist(),
            strict=True,
        ),
    )
    durations = rng.lognormal(2.5, 0.4, ts.size)
    errors = rng.random(ts.size) < 0.001
    keep = rng.random(ts.size) > 0.0005  # a few missed cycles
    conn.executemany(
        "INSERT INTO cycles (started_at, duration_ms, bars, error) VALUES (?, ?, 5, ?)",
        (
            (int(t), float(d), "TimeoutError: broker" if e else None)
            for t, d, e, k in zip(ts, durations, errors, keep, strict=True)
            if k
        ),
    )
    return ts, equity


def _bars_and_regimes(conn: sqlite3.Connection, rng: np.random.Generator, ts: np.ndarray) -> None:
    # bars and regimes: 30 days a minute for each symbol
    recent = ts[-30 * 24 * 60 :]
    for i, sym in enumerate(SYMBOLS):
        close = 50 + 10 * i + np.cumsum(rng.normal(0, 0.05, recent.size))
        conn.executemany(
            "INSERT INTO bars (symbol, ts, open, high, low, close, volume)"
            " VALUES (?, ?, ?, ?, ?, ?, 1000)",
            zip(
                [sym] * recent.size,
                recent.tolist(),
                close.tolist(),
                (close + 0.05).tolist(),
                (close - 0.05).tolist(),
                close.tolist(),
                strict=True,
            ),
        )
        calls = np.repeat(rng.integers(0, 5, recent.size // 120 + 1), 120)[: recent.size]
        ml = rng.random(recent.size) < 0.2
        features = json.dumps({"adx": 24.1, "atr_pct": 0.004, "rsi": 55.0})
        conn.executemany(
            "INSERT INTO regimes (cycle_id, symbol, ts, regime, confidence, source,"
            " rules_regime, features) VALUES (0, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    sym,
                    int(t),
                    REGIMES[c],
                    0.8,
                    "ml" if m else "rules",
                    REGIMES[(c + int(m)) % 5],
                    features,
                )
                for t, c, m in zip(recent, calls, ml, strict=True)
            ),
        )


def _models(db: Database, folder: Path, now: int) -> tuple[str, str]:
    """A small champion and challenger, registered (the page shows the registry, the
    live accuracy and the shadow comparison only when there are models)."""
    from engine.config import MlSettings
    from engine.ml import registry
    from engine.ml.train import TrainParams, bootstrap_model

    shutil.rmtree(folder, ignore_errors=True)
    trained = [
        bootstrap_model(
            MlSettings(), artifacts_dir=folder, now=now + i, params=TrainParams(2, 15),
            n_bars=700, symbols=2, seed=i,
        )
        for i in range(2)
    ]  # fmt: skip
    for model in trained:
        registry.adopt(db, model, now=now)  # the first is the champion, the second shadows
    return trained[0].version, trained[1].version


def _predictions_and_drift(
    conn: sqlite3.Connection, rng: np.random.Generator, ts: np.ndarray, versions: tuple[str, str]
) -> None:
    # 30 days of a champion's and a challenger's predictions a minute for each symbol,
    # inserted unscored and then scored, as the engine does (its trigger keeps the sums)
    recent = ts[-30 * 24 * 60 :]
    horizon = 10 * MINUTE
    for sym in SYMBOLS:
        for version, role in zip(versions, ("champion", "challenger"), strict=True):
            conn.executemany(
                "INSERT INTO predictions (ts, symbol, model_version, role, proba, ref_price,"
                " horizon_ts) VALUES (?, ?, ?, ?, ?, 100, ?)",
                (
                    (int(t), sym, version, role, float(p), int(t) + horizon)
                    for t, p in zip(recent, rng.random(recent.size), strict=True)
                ),
            )
    conn.execute(
        "UPDATE predictions SET outcome = (id % 2), exit_price = 100, scored_at = horizon_ts"
        " WHERE horizon_ts <= ?",
        (int(recent[-1]),),
    )
    checks = recent[::10]
    names = [f"feature_{i}" for i in range(20)]
    conn.executemany(
        "INSERT INTO drift (ts, model_version, kind, name, value, threshold, n)"
        " VALUES (?, ?, 'feature_psi', ?, ?, 0.25, 500)",
        ((int(t), versions[0], name, float(rng.random() * 0.3)) for t in checks for name in names),
    )


def _orders_and_fills(
    conn: sqlite3.Connection, rng: np.random.Generator, start: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    # orders, events and fills: 500,000 orders of two fills each, in buy-then-sell
    # pairs a minute apart on one symbol, near the symbol's own price: the book is
    # flat at the end and the account's P&L stays within reason.
    n_orders = 500_000
    pair_at = np.sort(rng.integers(start, end - MINUTE, n_orders // 2))
    created = np.repeat(pair_at, 2) + np.tile([0, MINUTE], n_orders // 2)
    syms = np.repeat(rng.integers(0, 5, n_orders // 2), 2)
    sides = np.tile([1, 0], n_orders // 2)  # 1 = BUY
    prices = 50 + 10 * syms + rng.normal(0, 0.05, n_orders)
    conn.executemany(
        "INSERT INTO orders (client_order_id, broker_order_id, symbol, side, qty, type,"
        " status, filled_qty, avg_price, purpose, ref_price, reason, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, 100, 'MARKET', 'FILLED', 100, ?, ?, ?, 'bench', ?, ?)",
        (
            (
                f"C{i:07d}",
                f"P{i}",
                SYMBOLS[s],
                "BUY" if d else "SELL",
                float(p),
                "ENTRY" if d else "EXIT",
                float(p),
                int(c),
                int(c) + 2000,
            )
            for i, (c, s, d, p) in enumerate(zip(created, syms, sides, prices, strict=True))
        ),
    )
    conn.executemany(
        "INSERT INTO order_events (client_order_id, ts, status, detail) VALUES (?, ?, ?, '')",
        (
            (f"C{i:07d}", int(c) + k * 1000, status)
            for i, c in enumerate(created)
            for k, status in enumerate(("SUBMITTED", "PARTIALLY_FILLED", "FILLED"))
        ),
    )
    conn.executemany(
        "INSERT INTO fills (client_order_id, exec_id, ts, symbol, side, qty, price,"
        " commission, ref_price) VALUES (?, ?, ?, ?, ?, 50, ?, 0.01, ?)",
        (
            (
                f"C{i:07d}",
                f"E{i}-{k}",
                int(c) + 1000 * (k + 1),
                SYMBOLS[s],
                "BUY" if d else "SELL",
                float(p),
                float(p),
            )
            for i, (c, s, d, p) in enumerate(zip(created, syms, sides, prices, strict=True))
            for k in range(2)
        ),
    )
    return sides, prices


def _trades_and_signals(
    conn: sqlite3.Connection, rng: np.random.Generator, start: int, end: int
) -> None:
    # round trips and signals
    exits = np.sort(rng.integers(start, end, 250_000))
    conn.executemany(
        "INSERT INTO trades (symbol, side, qty, entry_ts, exit_ts, entry_price, exit_price,"
        " pnl, commission, slippage) VALUES (?, 'BUY', 100, ?, ?, 50, 51, ?, 2, 0.5)",
        (
            (SYMBOLS[i % 5], int(x) - 600_000, int(x), float(p))
            for i, (x, p) in enumerate(zip(exits, rng.normal(5, 80, exits.size), strict=True))
        ),
    )
    sig_ts = np.sort(rng.integers(start, end, 200_000))
    conn.executemany(
        "INSERT INTO signals (ts, symbol, side, qty, purpose, strength, verdict, check_name,"
        " reason) VALUES (?, ?, 'BUY', 100, 'ENTRY', 0.7, ?, ?, ?)",
        (
            (
                int(t),
                SYMBOLS[i % 5],
                "denied" if i % 4 else "allowed",
                "cooldown" if i % 4 else None,
                "cooldown: exited recently" if i % 4 else None,
            )
            for i, t in enumerate(sig_ts)
        ),
    )


def _alerts(conn: sqlite3.Connection, rng: np.random.Generator, start: int, end: int) -> None:
    # alerts: 100,000 over the year, most acknowledged
    alert_ts = np.sort(rng.integers(start, end, 100_000))
    sev = rng.choice(["INFO", "WARNING", "HIGH", "CRITICAL"], 100_000, p=[0.6, 0.3, 0.08, 0.02])
    src = rng.choice(["engine", "feed", "risk", "broker", "scheduler"], 100_000)
    conn.executemany(
        "INSERT INTO alerts (ts, last_ts, severity, source, title, message, count, acked_at,"
        " acked_by) VALUES (?, ?, ?, ?, 'bench alert', 'message', 1, ?, ?)",
        (
            (
                int(t),
                int(t),
                str(s),
                str(o),
                int(t) + 60_000 if i < 99_900 else None,
                "operator" if i < 99_900 else None,
            )
            for i, (t, s, o) in enumerate(zip(alert_ts, sev, src, strict=True))
        ),
    )


def _account(
    conn: sqlite3.Connection, sides: np.ndarray, prices: np.ndarray, start: int, last: float
) -> None:
    """The fills' cash (the book is flat) and a deposit before the first mark that
    brings it to the last mark: the engine rebuilds this account from the fills,
    and every mark already holds the deposit, so no day's P&L counts it."""
    flow = np.where(sides == 1, -1.0, 1.0) * 100 * prices - 2 * 0.01
    deposit = last - (STARTING_CASH + float(flow.sum()))
    conn.execute(
        "INSERT INTO account (id, starting_cash, created_at) VALUES (1, ?, ?)",
        (STARTING_CASH, start),
    )
    conn.execute(
        "INSERT INTO cash_movements (ts, amount, reason, actor) VALUES (?, ?, ?, 'bench')",
        (start - 1, deposit, "bench: the account's cash at the last mark"),
    )


def _paper_account(path: Path, cash: float, now: int) -> None:
    """The paper broker's own account, holding what the engine's account holds."""
    db = open_writer(path)
    with db.conn:
        db.conn.execute(
            "INSERT OR REPLACE INTO paper_account (id, cash, starting_cash, order_seq, exec_seq,"
            " updated_at) VALUES (1, ?, ?, 0, 0, ?)",
            (cash, STARTING_CASH, now),
        )
    db.conn.close()


def bench_pages(path: Path, runs: int, *, live: bool = False) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    # AppTest re-detects a `pages/` folder before each run and would then run the
    # page alone (multipage v1); st.navigation apps are v2 (see tests/cockpit_fixtures.py).
    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init  # type: ignore[method-assign]
    # A server compiles each script once and keeps the bytecode; AppTest compiles
    # app.py and the page again on every run (a fresh ScriptCache per run), tens of
    # ms the user never waits for. One cache for every run times what the user does.
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import local_script_runner

    shared = ScriptCache()
    local_script_runner.ScriptCache = lambda: shared  # type: ignore[assignment,misc]
    os.environ.update(COCKPIT_DB=str(path), COCKPIT_NO_AUTOSTART="1")
    print(
        f"{'page':<22}{'median ms':>10}{'p99 ms':>10}{'max ms':>10}{'cpu p50':>10}{'cpu p99':>10}"
        f"   (runs={runs}, target 300 ms; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    for page in PAGES:
        if not (ROOT / page).exists():
            print(f"{page:<22}{'(missing)':>10}")
            continue
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page(page).run()
        if at.exception:
            print(f"{page:<22} raised: {at.exception[0].message}")
            continue
        samples, cpu = [], []
        for _ in range(runs):
            if not live:  # keep the idle database's heartbeat fresh: the sidebar's live path
                _touch_heartbeat(path)
            t, c = time.perf_counter(), time.process_time()
            at.run()
            samples.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)  # every thread of this process
        samples.sort()
        cpu.sort()
        print(
            f"{page:<22}{statistics.median(samples):>10.0f}{_p99(samples):>10.0f}"
            f"{samples[-1]:>10.0f}{statistics.median(cpu):>10.0f}{_p99(cpu):>10.0f}"
        )


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _touch_heartbeat(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE engine SET heartbeat_at = ?", (now_ms(),))
    conn.close()


def start_engine(path: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], float]:
    """A real engine on `path`, as the user runs it; returns it once its first cycle
    is stored, with the seconds that took. Raises RuntimeError when it stops first."""
    launched = now_ms()
    env = {**os.environ, "COCKPIT_DB": str(path), "COCKPIT_METRICS__PORT": "0"}
    cmd = [sys.executable, "-m", "engine", "run", "--symbols", "20", "--cycle-seconds", "0.25"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the engine stopped ({proc.returncode}):\n" + "\n".join(tail))
        if _cycles_since(path, launched):
            return proc, (now_ms() - launched) / 1000
        time.sleep(0.2)
    stop_engine(proc)
    raise RuntimeError(f"no cycle stored within 600 s; see {log_path}")


def stop_engine(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cycles_since(path: Path, since: int) -> list[tuple[float, str | None]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(
            "SELECT duration_ms, error FROM cycles WHERE started_at >= ?", (since,)
        ).fetchall()
    finally:
        conn.close()


def keep_checkpoint(path: Path) -> None:
    """Give the database the portfolio checkpoint a running engine keeps, once: the
    live engine then starts as a restart does, not by replaying a year of fills."""
    from engine.execution.portfolio import Portfolio, write_checkpoint
    from store.portfolio import load_checkpoint

    db = open_writer(path)
    try:
        if load_checkpoint(db.conn) is None:
            with db.conn:
                write_checkpoint(db, Portfolio.load(db, STARTING_CASH), now_ms())
            db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.conn.close()


def bench_live(runs: int) -> None:
    """The pages again, with a real engine at 20 symbols writing into the database."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{LIVE}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(CACHE, LIVE)
    # The copy's secrets (the audit key the registry's events are chained with) open
    # with the original's key file; copy2 keeps its owner-only mode.
    key = CACHE.with_suffix(".key")
    if key.exists():
        shutil.copy2(key, LIVE.with_suffix(".key"))
    log_path = LIVE.with_suffix(".log")
    try:
        proc, started = start_engine(LIVE, log_path)
    except RuntimeError as exc:
        print(f"live engine: did not start: {exc}")
        return
    print(f"\nlive engine: first cycle {started:.1f} s after launch (a restart on a year of fills)")
    timed_from = now_ms()
    try:
        bench_pages(LIVE, runs, live=True)
    finally:
        cycles = _cycles_since(LIVE, timed_from)
        stop_engine(proc)
    durations = sorted(d for d, _ in cycles)
    errors = sum(1 for _, e in cycles if e)
    locked = log_path.read_text(errors="replace").count("database is locked")
    if durations:
        p99 = _p99(durations)
        print(
            f"live engine while timed: {len(durations)} cycles, p50"
            f" {statistics.median(durations):.1f} ms, p99 {p99:.1f} ms, {errors} failed,"
            f" 'database is locked' {locked} times (log {log_path})"
        )
    else:
        print(f"live engine while timed: no cycle stored (log {log_path})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--live", action="store_true", help="then again with a real engine writing (20 symbols)"
    )
    args = parser.parse_args()
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not CACHE.exists():
        build(CACHE)
    else:
        ensure_schema(CACHE)  # the cache may predate a newer migration
    keep_checkpoint(CACHE)
    bench_pages(CACHE, args.runs)
    if args.live:
        bench_live(args.runs)


if __name__ == "__main__":
    main()
