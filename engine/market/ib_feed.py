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

Exceptions:

    FeedError (engine.market.feeds)   the feed cannot start: no gateway, unknown or
                               ambiguous contract, no market-data permission
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from engine.config import IbContract, IbSettings
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

logger = logging.getLogger(__name__)

T = TypeVar("T")
FeedEvent = tuple[Severity, str, str]

_BAR_SIZES = {
    5_000: "5 secs",
    10_000: "10 secs",
    15_000: "15 secs",
    30_000: "30 secs",
    60_000: "1 min",
    120_000: "2 mins",
    180_000: "3 mins",
    300_000: "5 mins",
    600_000: "10 mins",
    900_000: "15 mins",
    1_200_000: "20 mins",
    1_800_000: "30 mins",
    3_600_000: "1 hour",
    7_200_000: "2 hours",
    14_400_000: "4 hours",
    86_400_000: "1 day",
}
DAY_S = 86_400


def bar_size(interval_ms: int) -> str:
    """IB's barSizeSetting for a bar interval; a ValueError names the ones IB offers."""
    try:
        return _BAR_SIZES[interval_ms]
    except KeyError:
        offered = ", ".join(_BAR_SIZES.values())
        raise ValueError(f"IB has no {interval_ms / 1000:g} s bars; it offers {offered}") from None


def duration(seconds: float) -> str:
    """IB's durationStr covering at least `seconds`: seconds up to a day, then days."""
    seconds = max(int(seconds) + 1, 60)
    if seconds <= DAY_S:
        return f"{seconds} S"
    return f"{-(-seconds // DAY_S)} D"


def _epoch_ms(moment: date | datetime) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    return int(datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp() * 1000)


def _farm(message: str) -> str:
    """The farm a 210x message names ("...connection is broken:usfarm" -> usfarm)."""
    return message.rpartition(":")[2].strip().lower() or message


def _what_to_show(spec: IbContract) -> str:
    # Currencies and indices have no trades of their own on IB.
    return "MIDPOINT" if spec.sec_type == "CASH" else "TRADES"


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
        self._bar_size = bar_size(bar_ms)
        self.specs = {c.symbol: c for c in settings.contracts}
        self.symbols: tuple[str, ...] = tuple(self.specs)
        if not self.symbols:
            raise FeedError("ib.contracts: the IB feed needs at least one contract")
        low, high = backoff_seconds or (settings.backoff_min_seconds, settings.backoff_max_seconds)
        self._backoff = Backoff(low, high)
        self._retry_backoff = Backoff(low, high)
        self._paced: set[str] = set()
        self._messages = messages
        self._pacing = pacing or HistoricalPacing()
        self._clock = clock
        self._last: dict[str, int] = dict(resume_from or {})
        self._queues: dict[str, deque[Bar]] = {s: deque() for s in self.symbols}
        self._lock = threading.Lock()
        self._events: queue.SimpleQueue[FeedEvent] = queue.SimpleQueue()
        self._lost_farms: set[str] = set()
        self._refused: dict[str, str] = {}  # symbol -> IB's word, while starting
        self._starting = True
        self._retrying: set[str] = set()
        self._contracts: dict[str, Any] = {}
        self._subscriptions: dict[str, Any] = {}
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
            bars = self._call(self._history(symbol, n, end_ts), self._timeout * 6)
            self._check_permission(symbol)
            out[symbol] = bars
            if bars:
                self._last[symbol] = bars[-1].ts
        self.start_live()
        return out

    def start_live(self) -> None:
        """Subscribe every symbol to live bars now (the start does it, so a missing
        market-data permission stops the start with what to subscribe to)."""
        self._call(self._subscribe_all(), self._timeout * 6)
        for symbol in self.symbols:
            self._check_permission(symbol)
        self._starting = False

    def _check_permission(self, symbol: str) -> None:
        refused = self._refused.get(symbol)
        if refused is not None and self._starting:
            spec = self.specs[symbol]
            raise FeedError(
                f"ib: no market data for {symbol} ({refused}): subscribe to"
                f" {spec.primary_exchange or spec.exchange} data in Client Portal"
                " (Settings, Market Data Subscriptions), or drop the symbol"
            )

    def next_bars(self, now_ms: int) -> list[Bar]:
        if not self._subscriptions and not self._closed:
            self._call(self._subscribe_all(), self._timeout * 6)
        out = []
        with self._lock:
            for symbol in self.symbols:
                if self._queues[symbol]:
                    out.append(self._queues[symbol].popleft())
        return out

    def market_time(self, wall_ms: int) -> int | None:
        """A live market: its clock is the world's, even while no bar completes."""
        return wall_ms

    # ---- for the engine -------------------------------------------------------------

    @property
    def stale_symbols(self) -> frozenset[str]:
        """Symbols whose data farm is down: their bars cannot be trusted to come."""
        return frozenset(self.symbols) if self._lost_farms else frozenset()

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
        self._ib = ib
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        await self._connect(ib)
        await self._qualify(ib)
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
            for bars in self._subscriptions.values():
                ib.cancelHistoricalData(bars)
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

    async def _qualify(self, ib: Any) -> None:
        wanted = [
            self._api.Contract(
                symbol=spec.symbol,
                secType=spec.sec_type,
                exchange=spec.exchange,
                currency=spec.currency,
                primaryExchange=spec.primary_exchange,
            )
            for spec in self.specs.values()
        ]
        results = await ib.qualifyContractsAsync(*wanted, returnAll=True)
        problems = []
        for spec, result in zip(self.specs.values(), results, strict=True):
            described = f"{spec.symbol} {spec.sec_type} {spec.exchange} {spec.currency}"
            if result is None:
                problems.append(f"{described}: unknown to IB; check symbol, sec_type and currency")
            elif isinstance(result, list):
                where = sorted(
                    {f"{c.primaryExchange or c.exchange}/{c.currency}" for c in result if c}
                )
                problems.append(
                    f"{described}: ambiguous ({', '.join(where)}); set primary_exchange"
                )
            else:
                self._contracts[spec.symbol] = result
        if problems:
            raise FeedError("ib.contracts: " + "; ".join(problems))

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
            await self._resubscribe()

    async def _request(self, symbol: str, end: datetime | str, span: str, keep: bool) -> Any:
        """One historical request, within IB's pacing and the message budget."""
        key = f"{symbol} {end} {span} {self._bar_size} {keep}"
        wait = self._pacing.wait(key, self._clock())
        if wait > 0:
            logger.info("IB pacing: %s waits %.1f s", symbol, wait)
            await asyncio.sleep(wait)
        await self._messages.take()
        self._pacing.sent(key, self._clock())
        spec = self.specs[symbol]
        return await self._ib.reqHistoricalDataAsync(
            self._contracts[symbol],
            endDateTime=end,
            durationStr=span,
            barSizeSetting=self._bar_size,
            whatToShow=_what_to_show(spec),
            useRTH=False,
            formatDate=2,
            keepUpToDate=keep,
        )

    async def _history(self, symbol: str, n: int, end_ts: int) -> list[Bar]:
        if n <= 0:
            return []
        end = datetime.fromtimestamp((end_ts + self.bar_ms) / 1000, UTC)
        # Closed hours and weekends hold no bars: ask for more time than n bars span.
        span = duration(n * self.bar_ms / 1000 * 3 + 3 * DAY_S)
        rows = await self._request(symbol, end, span, keep=False)
        bars = [self._bar(symbol, row) for row in rows or []]
        return [b for b in bars if b.ts <= end_ts][-n:]

    async def _subscribe_all(self) -> None:
        for symbol in self.symbols:
            if symbol not in self._subscriptions:
                await self._subscribe(symbol)

    async def _subscribe(self, symbol: str) -> None:
        last = self._last.get(symbol)
        now_s = self._clock()
        back = now_s - last / 1000 if last is not None else 2 * self.bar_ms / 1000
        rows = await self._request(symbol, "", duration(min(back, 30 * DAY_S)), keep=True)
        if not rows and (symbol in self._refused or symbol in self._paced):
            # IB ended the request with an error (pacing, permission): nothing is
            # subscribed. Asked again with backoff; the feed keeps running meanwhile
            # (a refusal at start stops the start instead, see start_live).
            if not (self._starting and symbol in self._refused):
                self._retry(symbol)
            return
        self._subscriptions[symbol] = rows
        rows.updateEvent += self._on_update
        self._take_complete(symbol, rows)

    def _retry(self, symbol: str) -> None:
        if symbol in self._retrying:
            return
        self._retrying.add(symbol)
        delay = self._retry_backoff.next()
        logger.warning("IB gave no live bars for %s; asking again in %.0f s", symbol, delay)

        async def again() -> None:
            await asyncio.sleep(delay)
            self._retrying.discard(symbol)
            self._paced.discard(symbol)
            self._refused.pop(symbol, None)
            if symbol not in self._subscriptions and self._ib.isConnected():
                await self._subscribe(symbol)
                if symbol in self._subscriptions:
                    self._retry_backoff.reset()

        asyncio.get_running_loop().create_task(again())

    async def _resubscribe(self) -> None:
        for rows in list(self._subscriptions.values()):
            rows.updateEvent -= self._on_update
            if self._ib.isConnected():
                self._ib.cancelHistoricalData(rows)
        self._subscriptions.clear()
        await self._subscribe_all()

    def _on_update(self, rows: Any, has_new_bar: bool) -> None:
        if has_new_bar:
            self._take_complete(rows.contract.symbol, rows)

    def _take_complete(self, symbol: str, rows: Sequence[Any]) -> None:
        """Queue every bar after the last one taken, except the newest (still forming)."""
        last = self._last.get(symbol)
        fresh = [self._bar(symbol, r) for r in list(rows)[:-1]]
        fresh = [b for b in fresh if last is None or b.ts > last]
        if not fresh:
            return
        with self._lock:
            self._queues[symbol].extend(fresh)
        self._last[symbol] = fresh[-1].ts

    def _bar(self, symbol: str, row: Any) -> Bar:
        return Bar(
            symbol,
            _epoch_ms(row.date),
            float(row.open),
            float(row.high),
            float(row.low),
            float(row.close),
            max(float(row.volume), 0.0),
        )

    # ---- IB's messages ------------------------------------------------------------------

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        kind = classify(code, message)
        symbol = self._symbol_of(req_id, contract)
        farm = _farm(message)
        if kind is IbEvent.FARM_OK:
            logger.info("IB %d: %s", code, message)
            if farm in self._lost_farms:
                self._lost_farms.discard(farm)
                back = (
                    "every farm is back"
                    if not self._lost_farms
                    else "still lost: " + (", ".join(sorted(self._lost_farms)))
                )
                self._events.put(
                    (Severity.INFO, "IB data farm back", f"IB {code}: {message}; {back}")
                )
        elif kind is IbEvent.FARM_LOST:
            # IB does not say which symbols a farm serves: all of them are suspect.
            self._lost_farms.add(farm)
            self._events.put(
                (
                    Severity.WARNING,
                    "IB data farm lost: symbols stale",
                    f"IB {code}: {message}; entries blocked until it is back:"
                    f" {', '.join(self.symbols)}",
                )
            )
        elif kind is IbEvent.RESTORED_DATA_LOST:
            asyncio.get_running_loop().create_task(self._resubscribe())
        elif kind is IbEvent.PACING:
            if symbol is not None:
                self._paced.add(symbol)
            self._events.put(
                (Severity.WARNING, "IB pacing violation", f"{symbol or 'a request'}: {message}")
            )
        elif kind is IbEvent.NO_PERMISSION:
            if symbol is not None:
                self._refused[symbol] = f"IB {code}: {message}"
            self._events.put(
                (
                    Severity.HIGH,
                    "IB market data not permitted",
                    f"{symbol or 'a symbol'}: IB {code}: {message}; subscribe in Client Portal",
                )
            )

    def _symbol_of(self, req_id: int, contract: Any) -> str | None:
        if contract is not None and getattr(contract, "symbol", None):
            return str(contract.symbol)
        for symbol, rows in self._subscriptions.items():
            if getattr(rows, "reqId", None) == req_id:
                return symbol
        return None

    def _on_disconnected(self) -> None:
        logger.warning("IB market data disconnected; reconnecting")
