"""Market data from Interactive Brokers: the `Feed` protocol over ib_async.

Contracts come from configuration (`ib.contracts`: symbol, sec_type, exchange,
currency, primary_exchange) and are qualified at start: an unknown or ambiguous
contract stops the start with one line saying what to add. History for warm-up
comes from `reqHistoricalData`; live bars from the same request with
`keepUpToDate`, which IB keeps current: when a new bar begins, the one before it
is complete and is queued. Bars carry the market time they cover (IB's bar
start, read as UTC epoch) and only complete bars are yielded, one per symbol per
call. After a restart the subscription reaches back to the last stored bar, so
bars missed while down are caught up.

Threading: like the IB broker, the client lives on its own thread and asyncio
loop; `warmup` and the start hand coroutines over and wait, `next_bars` only
drains a thread-safe queue. The feed has its own connection (client id
`ib.client_id + 1`) and reconnects with the same jittered backoff; on reconnect
and on IB's 1101 ("restored, data lost") it resubscribes.

IB's limits: every historical request waits for `HistoricalPacing` (60 per ten
minutes, no identical request within 15 s) and takes a token from the process's
45/s message budget shared with the orders.

Data farms: 2104/2106/2158 (connection OK) are logged as information; 2103/2105
(a farm lost) raise a WARNING event and mark every symbol stale (`stale_symbols`:
IB does not say which symbols a farm serves), so the engine blocks their entries
until every lost farm has reported OK again, with an INFO event.

Errors on a request: a pacing violation (162) or a missing market-data
subscription (354 and kin) is an event naming the symbol; a live subscription IB
ended that way is asked again with backoff, so the feed keeps running. At start a
missing subscription stops the start instead, with what to subscribe to.

The parts, one job each: `ib_history` (contracts, historical requests within
IB's pacing and the message budget, rows as bars), `ib_live` (the live
subscriptions and their queues), `ib_farms` (data farms and staleness); the
feed here owns the connection, its thread and IB's messages.

Exceptions:

    FeedError (engine.market.feeds)   the feed cannot start: no gateway, unknown or
                               ambiguous contract, no market-data permission
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from engine.config import IbSettings
from engine.domain import Bar, Severity
from engine.execution.brokers.ib_link import (
    MESSAGES,
    Backoff,
    HistoricalPacing,
    IbEvent,
    TokenBucket,
    classify,
    start_loop_thread,
)
from engine.market.feeds import FeedError
from engine.market.ib_farms import FarmWatch, FeedEvent
from engine.market.ib_history import HistoricalRequests, bar_size, qualify
from engine.market.ib_live import LiveSubscriptions

__all__ = ["FeedEvent", "IbFeed", "bar_size"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class IbFeed:
    def __init__(
        self,
        settings: IbSettings,
        bar_ms: int,
        *,
        ib_factory: Callable[[], Any] | None = None,
        resume_from: Mapping[str, int] | None = None,
        backoff_seconds: tuple[float, float] | None = None,
        messages: TokenBucket = MESSAGES,
        pacing: HistoricalPacing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import ib_async

        self._api = ib_async
        self._settings = settings
        self._timeout = settings.timeout_seconds
        self.bar_ms = bar_ms
        self.specs = {c.symbol: c for c in settings.contracts}
        self.symbols: tuple[str, ...] = tuple(self.specs)
        if not self.symbols:
            raise FeedError("ib.contracts: the IB feed needs at least one contract")
        low, high = backoff_seconds or (settings.backoff_min_seconds, settings.backoff_max_seconds)
        self._backoff = Backoff(low, high)
        self._messages = messages
        self._requests = HistoricalRequests(
            self.specs, bar_ms, messages=messages, pacing=pacing or HistoricalPacing(), clock=clock
        )
        self._live = LiveSubscriptions(
            self.symbols, self._requests, Backoff(low, high), clock, resume_from
        )
        self._farms = FarmWatch(self.symbols)
        self._events: queue.SimpleQueue[FeedEvent] = queue.SimpleQueue()
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None
        self._ib: Any = None

        self._loop, self._thread = start_loop_thread("ib-feed")
        try:
            self._ib = self._call(self._start(ib_factory or ib_async.IB), self._timeout * 3)
        except BaseException:
            self.close()
            raise

    # ---- Feed protocol ----------------------------------------------------------

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        """Up to n complete bars per symbol starting at or before end_ts, oldest first;
        the live subscription then continues after them."""
        out: dict[str, list[Bar]] = {}
        for symbol in self.symbols:
            bars = self._call(self._requests.history(symbol, n, end_ts), self._timeout * 6)
            self._check_permission(symbol)
            out[symbol] = bars
            if bars:
                self._live.last[symbol] = bars[-1].ts
        self.start_live()
        return out

    def start_live(self) -> None:
        """Subscribe every symbol to live bars now (the start does it, so a missing
        market-data permission stops the start with what to subscribe to)."""
        self._call(self._live.subscribe_all(), self._timeout * 6)
        for symbol in self.symbols:
            self._check_permission(symbol)
        self._live.starting = False

    def _check_permission(self, symbol: str) -> None:
        refused = self._live.refused.get(symbol)
        if refused is not None and self._live.starting:
            spec = self.specs[symbol]
            raise FeedError(
                f"ib: no market data for {symbol} ({refused}): subscribe to"
                f" {spec.primary_exchange or spec.exchange} data in Client Portal"
                " (Settings, Market Data Subscriptions), or drop the symbol"
            )

    def next_bars(self, now_ms: int) -> list[Bar]:
        if not self._live.subscribed and not self._closed:
            self._call(self._live.subscribe_all(), self._timeout * 6)
        return self._live.take_queued()

    def market_time(self, wall_ms: int) -> int | None:
        """A live market: its clock is the world's, even while no bar completes."""
        return wall_ms

    # ---- for the engine -------------------------------------------------------------

    @property
    def stale_symbols(self) -> frozenset[str]:
        """Symbols whose data farm is down: their bars cannot be trusted to come."""
        return self._farms.stale_symbols

    def drain_events(self) -> list[FeedEvent]:
        events: list[FeedEvent] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(self._timeout)
            except (concurrent.futures.TimeoutError, RuntimeError) as exc:
                logger.warning("IB feed did not shut down cleanly: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout)

    # ---- the hand-over to the IB thread -----------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise FeedError(f"IB market data did not answer within {timeout:g} s") from None

    # ---- on the IB thread -------------------------------------------------------------

    async def _start(self, factory: Callable[[], Any]) -> Any:
        ib = factory()
        self._ib = self._requests.ib = ib
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        await self._connect(ib)
        self._requests.contracts = await qualify(self._api, ib, self.specs)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(ib))
        return ib

    async def _shutdown(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        ib = self._ib
        if ib is None:
            return
        ib.errorEvent -= self._on_error
        ib.disconnectedEvent -= self._on_disconnected
        if ib.isConnected():
            self._live.cancel_all()
            ib.disconnect()

    async def _connect(self, ib: Any) -> None:
        s = self._settings
        client_id = s.client_id + 1  # the broker holds client_id
        try:
            await asyncio.wait_for(
                ib.connectAsync(
                    host=s.host,
                    port=s.port,
                    clientId=client_id,
                    timeout=self._timeout,
                    readonly=True,
                ),
                self._timeout,
            )
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise FeedError(
                f"no IB API at {s.host}:{s.port} for market data ({type(exc).__name__}): start IB"
                " Gateway, enable the API, check ib.port (4002 paper gateway, 7497 paper TWS)"
            ) from None
        logger.info("IB market data connected at %s:%d as client %d", s.host, s.port, client_id)

    async def _supervise(self, ib: Any) -> None:
        while True:
            await asyncio.sleep(0.5)
            if ib.isConnected():
                continue
            delay = self._backoff.next()
            try:
                await self._connect(ib)
            except FeedError as exc:
                logger.warning("%s; next attempt in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            await self._live.resubscribe()

    # ---- IB's messages ------------------------------------------------------------------

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        kind = classify(code, message)
        symbol = self._live.symbol_of(req_id, contract)
        if kind is IbEvent.FARM_OK:
            back = self._farms.ok(code, message)
            if back is not None:
                self._events.put(back)
        elif kind is IbEvent.FARM_LOST:
            self._events.put(self._farms.lost(code, message))
        elif kind is IbEvent.RESTORED_DATA_LOST:
            asyncio.get_running_loop().create_task(self._live.resubscribe())
        elif kind is IbEvent.PACING:
            if symbol is not None:
                self._live.paced.add(symbol)
            self._events.put(
                (Severity.WARNING, "IB pacing violation", f"{symbol or 'a request'}: {message}")
            )
        elif kind is IbEvent.NO_PERMISSION:
            if symbol is not None:
                self._live.refused[symbol] = f"IB {code}: {message}"
            self._events.put(
                (
                    Severity.HIGH,
                    "IB market data not permitted",
                    f"{symbol or 'a symbol'}: IB {code}: {message}; subscribe in Client Portal",
                )
            )

    def _on_disconnected(self) -> None:
        logger.warning("IB market data disconnected; reconnecting")
