"""Prometheus metrics and a health check, served on loopback by the running engine.

Two sources, chosen so the trading thread pays next to nothing:

- the runner tells `EngineMetrics` when a cycle or any trading-thread job has
  finished (`cycle_done`, `tick`): a histogram observation and a timestamp, in
  memory. `/healthz` is judged from these alone, so it still answers when the
  database is unwritable, and it notices a stuck trading thread;
- everything the engine already records (orders, fills, denials, alerts, commands,
  equity, the engine row) is read at scrape time on the scraper's thread through
  one read-only connection. Counters tail their table by row id from where the
  engine started, so a scrape reads only the rows added since the last one.

Counters start at zero with the engine process, as Prometheus expects of counters.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from engine.alerts.notify import NotifierStats
from engine.config import Settings
from engine.cycle import CycleResult
from engine.domain import OrderStatus, Severity, TradingState
from store import metrics as scraped
from store.alerts import unacknowledged_by_severity
from store.portfolio import last_mark

log = logging.getLogger(__name__)

CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COMMAND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MIN_STALE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reason: str
    trading_state: str
    last_cycle_age: float | None
    consecutive_failures: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unhealthy",
            "reason": self.reason,
            "trading_state": self.trading_state,
            "last_cycle_age_seconds": (
                None if self.last_cycle_age is None else round(self.last_cycle_age, 3)
            ),
            "consecutive_failures": self.consecutive_failures,
        }


class _TraderView(Protocol):
    """What `cycle_done` reads from the trader: in-memory fields, no query."""

    @property
    def state(self) -> TradingState: ...
    @property
    def state_reason(self) -> str: ...
    @property
    def consecutive_failures(self) -> int: ...


class EngineMetrics:
    """The engine's registry; `cycle_done` and `tick` are called on the trading thread."""

    def __init__(
        self,
        path: Path,
        *,
        cycle_seconds: float,
        stale_seconds: float | None,
        stale_intervals: float,
        failures_limit: int,
        clock: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry()
        # By default the dead-man's limit: /healthz turns 503 when the watchdog alerts.
        self.stale_seconds = stale_seconds or max(
            cycle_seconds * stale_intervals, MIN_STALE_SECONDS
        )
        self._failures_limit = failures_limit
        self._monotonic = monotonic
        self._cycle_duration = Histogram(
            "cockpit_cycle_duration_seconds",
            "Wall time of one trading cycle",
            buckets=CYCLE_BUCKETS,
            registry=self.registry,
        )
        self._cycles = Counter(
            "cockpit_cycles",
            "Cycles run since the engine started, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("ok", "failed"):
            self._cycles.labels(outcome)
        self._skipped = Counter(
            "cockpit_job_runs_skipped",
            "Scheduled runs skipped because the job's previous run was still going",
            ["job"],
            registry=self.registry,
        )
        for job in ("cycle", "commands", "monitor"):
            self._skipped.labels(job)
        self._lock = threading.Lock()
        self._started = monotonic()
        self._last_cycle: float | None = None
        self._last_tick: float | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._state = ""
        self._state_reason = ""
        self.store = StoreCollector(path, clock)
        self.registry.register(self.store)

    def cycle_done(self, result: CycleResult, trader: _TraderView) -> None:
        self._cycle_duration.observe(result.duration_ms / 1000)
        self._cycles.labels("failed" if result.error else "ok").inc()
        now = self._monotonic()
        with self._lock:
            self._last_cycle = self._last_tick = now
            self._failures = trader.consecutive_failures
            self._last_error = result.error
            self._state = trader.state.value
            self._state_reason = trader.state_reason

    def job_skipped(self, job_id: str) -> None:
        """The scheduler skipped one of the job's runs (on the scheduler's thread)."""
        self._skipped.labels(job_id).inc()

    def tick(self) -> None:
        """A trading-thread job finished: the thread is not stuck."""
        now = self._monotonic()
        with self._lock:
            self._last_tick = now

    def watch_notifier(self, stats: Callable[[], Mapping[str, NotifierStats]]) -> None:
        self.store.notifier_stats = stats

    def health(self) -> Health:
        now = self._monotonic()
        with self._lock:
            last_cycle, last_tick = self._last_cycle, self._last_tick
            failures, error = self._failures, self._last_error
            state, reason = self._state, self._state_reason
        limit = self.stale_seconds
        cycle_age = None if last_cycle is None else now - last_cycle
        tick_age = now - (last_tick if last_tick is not None else self._started)

        def verdict(ok: bool, why: str) -> Health:
            return Health(ok, why, state, cycle_age, failures)

        if tick_age > limit:
            return verdict(
                False,
                f"trading thread stuck: no job finished for {tick_age:.1f} s (limit {limit:.1f} s)",
            )
        if cycle_age is None:
            waited = now - self._started
            if waited > limit:
                return verdict(False, f"no cycle completed in {waited:.1f} s since start")
            return verdict(False, "starting: no cycle completed yet")
        if cycle_age > limit:
            return verdict(
                False, f"cycles stale: last cycle {cycle_age:.1f} s ago (limit {limit:.1f} s)"
            )
        if failures >= self._failures_limit:
            return verdict(False, f"cycles failing: {failures} in a row; last: {error}")
        if state == TradingState.HALTED:
            return verdict(True, f"alive and cycling; trading HALTED: {reason}")
        return verdict(True, "alive and cycling")

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class StoreCollector(Collector):
    """Metrics read from the state database at scrape time, on the scraper's thread."""

    def __init__(self, path: Path, clock: Callable[[], int]) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._cursors: dict[str, int] | None = None
        self._orders: dict[str, int] = {s.value: 0 for s in OrderStatus}
        self._alerts: dict[str, int] = {s.value: 0 for s in Severity}
        self._denials: dict[str, int] = {}
        self._fills = 0
        self._commands_seen: set[int] = set()
        self._command_latency = Histogram(
            "cockpit_command_latency_seconds",
            "From a command row being queued to the engine answering it",
            buckets=COMMAND_BUCKETS,
            registry=None,
        )
        self._failing = False
        self.notifier_stats: Callable[[], Mapping[str, NotifierStats]] | None = None

    def start(self) -> None:
        """Counters count from here: rows already stored belong to earlier runs."""
        with self._lock:
            self._cursors = self._tail_starts(self._connection())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                yield from self._collect(self._connection())
                if self._failing:
                    log.info("metrics: the state database answers again")
                self._failing = False
            except sqlite3.Error as exc:
                # A scrape during disk trouble still gets the in-memory metrics;
                # one log line per outage, not one per scrape.
                if not self._failing:
                    log.warning("metrics: cannot read the state database: %s", exc)
                self._failing = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            yield from self._notifier_metrics()

    # ------------------------------------------------------------ internals

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"{self._path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=2, check_same_thread=False)
        return self._conn

    @staticmethod
    def _tail_starts(conn: sqlite3.Connection) -> dict[str, int]:
        return {table: scraped.last_id(conn, table) for table in scraped.TAILED}

    def _tail(self, conn: sqlite3.Connection, table: str) -> tuple[int, int] | None:
        """The id range (after, upto] added since the last scrape, or None."""
        assert self._cursors is not None
        after = self._cursors[table]
        upto = scraped.last_id(conn, table)
        if upto <= after:
            return None
        self._cursors[table] = upto
        return after, upto

    def _collect(self, conn: sqlite3.Connection) -> Iterator[Metric]:
        if self._cursors is None:
            self._cursors = self._tail_starts(conn)
        self._count_new_rows(conn)
        self._observe_commands(conn)
        yield from self._counters()
        yield self._unacknowledged(conn)
        depth = scraped.pending_commands(conn)
        yield GaugeMetricFamily(
            "cockpit_command_queue_depth", "Commands waiting for the engine", value=depth
        )
        yield from self._command_latency.collect()
        yield from self._engine_row(conn)
        yield from self._equity(conn)

    def _count_new_rows(self, conn: sqlite3.Connection) -> None:
        """Add the rows written since the last scrape to the running counters."""
        span = self._tail(conn, "order_events")
        if span:
            for status, n in scraped.order_statuses(conn, span):
                self._orders[status] = self._orders.get(status, 0) + n
        span = self._tail(conn, "fills")
        if span:
            self._fills += scraped.fills(conn, span)
        span = self._tail(conn, "signals")
        if span:
            for check, n in scraped.denials(conn, span):
                key = check or "unknown"
                self._denials[key] = self._denials.get(key, 0) + n
        span = self._tail(conn, "alerts")
        if span:
            for severity, n in scraped.alerts_raised(conn, span):
                self._alerts[severity] = self._alerts.get(severity, 0) + n

    def _counters(self) -> Iterator[Metric]:
        orders = CounterMetricFamily(
            "cockpit_orders", "Order status changes since the engine started", labels=["status"]
        )
        for status, n in sorted(self._orders.items()):
            orders.add_metric([status], n)
        yield orders
        yield CounterMetricFamily(
            "cockpit_fills", "Fills since the engine started", value=self._fills
        )
        denials = CounterMetricFamily(
            "cockpit_denials", "Intents the risk gate denied, by check", labels=["check"]
        )
        for check, n in sorted(self._denials.items()):
            denials.add_metric([check], n)
        yield denials
        alerts = CounterMetricFamily(
            "cockpit_alerts", "Alerts raised since the engine started", labels=["severity"]
        )
        for severity, n in sorted(self._alerts.items()):
            alerts.add_metric([severity], n)
        yield alerts

    def _unacknowledged(self, conn: sqlite3.Connection) -> Metric:
        unacked = GaugeMetricFamily(
            "cockpit_alerts_unacknowledged", "Alerts waiting for the operator", labels=["severity"]
        )
        open_counts = unacknowledged_by_severity(conn)
        for severity in Severity:
            unacked.add_metric([severity.value], open_counts.get(severity.value, 0))
        return unacked

    def _equity(self, conn: sqlite3.Connection) -> Iterator[Metric]:
        row = last_mark(conn)
        if row is not None:
            yield GaugeMetricFamily("cockpit_equity", "Account equity", value=row[0])
            yield GaugeMetricFamily(
                "cockpit_drawdown_ratio", "Drawdown below the equity peak (0..1)", value=row[1]
            )

    def _observe_commands(self, conn: sqlite3.Connection) -> None:
        """Latency of commands answered since the last scrape. The cursor stays at the
        oldest pending row, so a slow command is observed when it is answered."""
        assert self._cursors is not None
        cursor = self._cursors["commands"]
        advance = True
        for command_id, status, requested_at, done_at in scraped.commands_after(conn, cursor):
            if status == "pending" or done_at is None:
                advance = False
                continue
            if command_id not in self._commands_seen:
                self._commands_seen.add(command_id)
                self._command_latency.observe(max(done_at - requested_at, 0) / 1000)
            if advance:
                cursor = command_id
                self._commands_seen.discard(command_id)
        self._cursors["commands"] = cursor

    def _engine_row(self, conn: sqlite3.Connection) -> Iterator[Metric]:
        row = scraped.engine_gauges(conn)
        if row is None:
            return
        heartbeat_at, state, connected, last_cycle_at = row
        now = self._clock()
        states = GaugeMetricFamily(
            "cockpit_trading_state", "1 for the current trading state", labels=["state"]
        )
        for s in TradingState:
            states.add_metric([s.value], 1.0 if s.value == state else 0.0)
        yield states
        if heartbeat_at is not None:
            yield GaugeMetricFamily(
                "cockpit_heartbeat_age_seconds",
                "Seconds since the engine's last heartbeat",
                value=max(now - heartbeat_at, 0) / 1000,
            )
        if last_cycle_at is not None:
            yield GaugeMetricFamily(
                "cockpit_last_cycle_age_seconds",
                "Seconds since the last cycle started",
                value=max(now - last_cycle_at, 0) / 1000,
            )
        yield GaugeMetricFamily(
            "cockpit_broker_connected", "1 when the broker is connected", value=int(connected or 0)
        )

    def _notifier_metrics(self) -> Iterator[Metric]:
        if self.notifier_stats is None:
            return
        per_channel = self.notifier_stats()
        deliveries = CounterMetricFamily(
            "cockpit_alert_deliveries",
            "Alerts delivered outside the cockpit, failed after every retry, or dropped",
            labels=["channel", "outcome"],
        )
        queued = GaugeMetricFamily(
            "cockpit_alert_queue_depth", "Alerts waiting for delivery", labels=["channel"]
        )
        for channel, stats in sorted(per_channel.items()):
            deliveries.add_metric([channel, "delivered"], stats.delivered)
            deliveries.add_metric([channel, "failed"], stats.failed)
            deliveries.add_metric([channel, "dropped"], stats.dropped)
            queued.add_metric([channel], stats.pending)
        yield deliveries
        yield queued


class MetricsServer:
    """`/metrics` (Prometheus text or OpenMetrics) and `/healthz` on one small HTTP server."""

    def __init__(self, metrics: EngineMetrics, address: str, port: int) -> None:
        self._metrics = metrics
        handler = _handler_for(metrics)
        # Binding here, not in start(), so a taken port is reported to the caller.
        self._server = ThreadingHTTPServer((address, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="cockpit-metrics",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        host, port = self.address
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, port)

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._metrics.store.close()


def _handler_for(metrics: EngineMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cockpit-metrics"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.exposition(self.headers.get("Accept"))
                self._answer(200, body, content_type)
            elif path == "/healthz":
                health = metrics.health()
                body = json.dumps(health.as_dict()).encode() + b"\n"
                self._answer(200 if health.ok else 503, body, "application/json")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics %s", format % args)

    return Handler


def serve_metrics(
    settings: Settings,
    path: Path,
    clock: Callable[[], int],
    channel_stats: Callable[[], Mapping[str, NotifierStats]] | None,
) -> tuple[EngineMetrics, MetricsServer] | None:
    """Serve /metrics and /healthz; a taken port costs the metrics, never the engine."""
    cfg = settings.metrics
    if cfg.port == 0:
        return None
    metrics = EngineMetrics(
        path,
        cycle_seconds=max(settings.engine.cycle_period, 0.05),
        stale_seconds=cfg.stale_seconds,
        stale_intervals=settings.risk.deadman_intervals,
        failures_limit=settings.engine.failure_pause_after,
        clock=clock,
    )
    if channel_stats is not None:
        metrics.watch_notifier(channel_stats)
    try:
        metrics.store.start()
        server = MetricsServer(metrics, cfg.address, cfg.port)
    except (OSError, sqlite3.Error) as exc:
        log.warning("metrics not served on %s:%d: %s", cfg.address, cfg.port, exc)
        metrics.store.close()
        return None
    server.start()
    return metrics, server
