"""Metrics and health, scraped over real HTTP from a real engine on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.alerts.notify import NotifierStats
from engine.config import load_settings
from engine.domain import Bar
from engine.market.feeds import SimulatedFeed
from engine.process.metrics import EngineMetrics
from engine.process.runner import Engine
from store.commands import CommandStatus, enqueue_command, get_command
from store.db import PROJECT_ROOT
from tests.conftest import FakeClock, engine_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@dataclass
class Running:
    engine: Engine
    url: str

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def healthy(self) -> bool:
        """True once /healthz says 200; False before the server listens or while it says 503."""
        try:
            return self.get("/healthz").status_code == 200
        except requests.ConnectionError:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(self.get("/metrics").text)


def settings(port: int, **metrics: Any) -> Any:
    return load_settings(
        engine={"cycle_seconds": 0.05, "symbols": 3, "seed": 11, "warmup_bars": 60},
        metrics={"port": port, **metrics},
    )


class StuckFeed:
    """A simulated feed whose next call blocks until released: a stuck trading thread."""

    def __init__(self) -> None:
        self._feed = SimulatedFeed(("AAA", "BBB"), 3)
        self.symbols = self._feed.symbols
        self.stuck = threading.Event()
        self.release = threading.Event()

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        return self._feed.warmup(n, end_ts, interval_ms)

    def next_bars(self, now_ms: int) -> list[Bar]:
        if self.stuck.is_set():
            self.release.wait(10)
        return self._feed.next_bars(now_ms)

    def market_time(self, wall_ms: int) -> int | None:
        return self._feed.market_time(wall_ms)


@pytest.fixture
def running(db_file: Path) -> Iterator[Callable[..., Running]]:
    started: list[tuple[Engine, threading.Thread]] = []

    def start(feed: StuckFeed | None = None, **metrics: Any) -> Running:
        port = free_port()
        history = {} if feed is not None else None
        eng = Engine(settings(port, **metrics), db_file, feed=feed, history=history)
        eng.open()
        thread = threading.Thread(target=eng.run, kwargs={"install_signals": False})
        thread.start()
        started.append((eng, thread))
        return Running(eng, f"http://127.0.0.1:{port}")

    yield start
    for eng, thread in started:
        eng.request_stop()
        thread.join(15)


def test_a_running_engine_is_healthy_and_exports_cycles_state_and_equity(running) -> None:
    r = running()
    wait_for(r.healthy)
    m = r.metrics()

    assert m[("cockpit_cycle_duration_seconds_count", ())] >= 1
    assert m[("cockpit_trading_state", (("state", "ACTIVE"),))] == 1
    assert m[("cockpit_trading_state", (("state", "HALTED"),))] == 0
    assert m[("cockpit_equity", ())] > 0
    assert 0 <= m[("cockpit_heartbeat_age_seconds", ())] < 5
    assert m[("cockpit_broker_connected", ())] == 1


def test_halted_is_alive_and_says_so(running, db_file: Path) -> None:
    r = running()
    wait_for(r.healthy)
    enqueue_command("emergency_stop", {"reason": "drill"}, "cli:tester", db=db_file)

    body = wait_for(lambda: (b := r.get("/healthz").json())["trading_state"] == "HALTED" and b)
    assert r.get("/healthz").status_code == 200
    assert "HALTED: drill" in body["reason"]
    assert r.metrics()[("cockpit_trading_state", (("state", "HALTED"),))] == 1


def test_a_stuck_trading_thread_turns_healthz_503(running, db_file: Path) -> None:
    feed = StuckFeed()
    r = running(feed, stale_seconds=0.5)
    wait_for(r.healthy)
    feed.stuck.set()

    body = wait_for(lambda: (a := r.get("/healthz")).status_code == 503 and a.json())
    feed.release.set()
    assert "trading thread stuck" in body["reason"]
    wait_for(r.healthy)


def test_an_answered_command_is_timed_and_leaves_the_queue(running, db_file: Path) -> None:
    r = running()
    wait_for(r.healthy)
    command_id = enqueue_command("pause", {}, "cli:tester", db=db_file)
    wait_for(lambda: get_command(command_id, db=db_file).status is not CommandStatus.PENDING)

    m = r.metrics()
    assert m[("cockpit_command_latency_seconds_count", ())] == 1
    assert m[("cockpit_command_queue_depth", ())] == 0
    assert m[("cockpit_trading_state", (("state", "PAUSED"),))] == 1


def test_a_taken_port_costs_the_metrics_not_the_engine(db_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        eng = Engine(settings(port), db_file)
        eng.open()
        eng.run(for_seconds=0.5, install_signals=False)

    assert eng.metrics_server is None
    assert eng.trader is not None and eng.trader.cycles_run >= 1


def test_unknown_paths_are_404(running) -> None:
    r = running()
    wait_for(r.healthy)
    assert r.get("/secrets").status_code == 404
    assert r.get("/").status_code == 404


def test_store_counters_match_the_rows_written_since_start(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = Engine(engine_settings(), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    metrics = EngineMetrics(
        db_file,
        cycle_seconds=1,
        stale_seconds=None,
        stale_intervals=10,
        failures_limit=5,
        clock=clock,
    )
    metrics.store.start()
    for _ in range(400):
        clock.advance(1000)
        eng.step()
    m = samples(generate_latest(metrics.registry).decode())
    metrics.store.close()

    assert eng.db is not None
    conn = eng.db.conn
    assert (
        m[("cockpit_fills_total", ())]
        == conn.execute("SELECT count(*) FROM fills").fetchone()[0]
        > 0
    )
    filled = conn.execute("SELECT count(*) FROM order_events WHERE status = 'FILLED'").fetchone()[0]
    assert m[("cockpit_orders_total", (("status", "FILLED"),))] == filled
    denied = conn.execute("SELECT count(*) FROM signals WHERE verdict = 'denied'").fetchone()[0]
    assert sum(v for (n, _), v in m.items() if n == "cockpit_denials_total") == denied


def test_the_grafana_dashboard_asks_only_for_exported_metrics(
    db_file: Path, clock: FakeClock, open_engines: list[Any]
) -> None:
    eng = Engine(engine_settings(), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    metrics = EngineMetrics(
        db_file,
        cycle_seconds=1,
        stale_seconds=None,
        stale_intervals=10,
        failures_limit=5,
        clock=clock,
    )
    metrics.watch_notifier(lambda: {"telegram": NotifierStats()})
    metrics.cycle_done(eng.step()[0], eng.trader)  # type: ignore[arg-type]
    text = generate_latest(metrics.registry).decode()
    exported = {family.name for family in text_string_to_metric_families(text)}
    metrics.store.close()

    dashboard = json.loads((PROJECT_ROOT / "docs" / "grafana" / "cockpit.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"cockpit_[a-z_]+", target["expr"])
    }
    asked = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in asked}
    assert len(asked) >= 12
    assert asked <= exported
