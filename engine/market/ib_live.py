"""Live bars from Interactive Brokers: one kept-up-to-date request per symbol.

IB keeps a `keepUpToDate` request current: when a new bar begins, the one before
it is complete and is queued here, never the one still forming. A subscription
reaches back to the last bar taken, so bars missed while down are caught up. A
request IB ended with an error (pacing, no permission) subscribes nothing and is
asked again with backoff, so the feed keeps running; at start a refusal is left
for the feed to stop the start with (`starting`).

Everything but `take_queued` runs on the feed's IB thread; the queues are the
only state shared with the engine's thread, under a lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.domain import Bar
from engine.execution.brokers.ib_link import Backoff
from engine.market.ib_history import DAY_S, HistoricalRequests, duration, to_bar

logger = logging.getLogger(__name__)


class LiveSubscriptions:
    def __init__(
        self,
        symbols: Sequence[str],
        requests: HistoricalRequests,
        retry_backoff: Backoff,
        clock: Callable[[], float],
        resume_from: Mapping[str, int] | None = None,
    ) -> None:
        self.symbols = tuple(symbols)
        self._requests = requests
        self._retry_backoff = retry_backoff
        self._clock = clock
        self.last: dict[str, int] = dict(resume_from or {})  # newest bar taken, per symbol
        self._queues: dict[str, deque[Bar]] = {s: deque() for s in self.symbols}
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Any] = {}
        self._retrying: set[str] = set()
        self.paced: set[str] = set()  # symbols whose request IB refused for pacing
        self.refused: dict[str, str] = {}  # symbol -> IB's word on a missing permission
        self.starting = True

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    def take_queued(self) -> list[Bar]:
        """The oldest queued complete bar of each symbol (any thread)."""
        out = []
        with self._lock:
            for symbol in self.symbols:
                if self._queues[symbol]:
                    out.append(self._queues[symbol].popleft())
        return out

    def symbol_of(self, req_id: int, contract: Any) -> str | None:
        """The symbol an IB message is about, from its contract or its request id."""
        if contract is not None and getattr(contract, "symbol", None):
            return str(contract.symbol)
        for symbol, rows in self._subscriptions.items():
            if getattr(rows, "reqId", None) == req_id:
                return symbol
        return None

    async def subscribe_all(self) -> None:
        for symbol in self.symbols:
            if symbol not in self._subscriptions:
                await self._subscribe(symbol)

    async def resubscribe(self) -> None:
        """Drop every subscription and ask again (after a reconnect, or lost data)."""
        ib = self._requests.ib
        for rows in list(self._subscriptions.values()):
            rows.updateEvent -= self._on_update
            if ib.isConnected():
                ib.cancelHistoricalData(rows)
        self._subscriptions.clear()
        await self.subscribe_all()

    def cancel_all(self) -> None:
        """Cancel every subscription at IB (at shutdown, while still connected)."""
        for rows in self._subscriptions.values():
            self._requests.ib.cancelHistoricalData(rows)

    async def _subscribe(self, symbol: str) -> None:
        last = self.last.get(symbol)
        now_s = self._clock()
        back = now_s - last / 1000 if last is not None else 2 * self._requests.bar_ms / 1000
        span = duration(min(back, 30 * DAY_S))
        rows = await self._requests.request(symbol, "", span, keep=True)
        if not rows and (symbol in self.refused or symbol in self.paced):
            # IB ended the request with an error (pacing, permission): nothing is
            # subscribed. Asked again with backoff; the feed keeps running meanwhile
            # (a refusal at start stops the start instead, see IbFeed.start_live).
            if not (self.starting and symbol in self.refused):
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
            self.paced.discard(symbol)
            self.refused.pop(symbol, None)
            if symbol not in self._subscriptions and self._requests.ib.isConnected():
                await self._subscribe(symbol)
                if symbol in self._subscriptions:
                    self._retry_backoff.reset()

        asyncio.get_running_loop().create_task(again())

    def _on_update(self, rows: Any, has_new_bar: bool) -> None:
        if has_new_bar:
            self._take_complete(rows.contract.symbol, rows)

    def _take_complete(self, symbol: str, rows: Sequence[Any]) -> None:
        """Queue every bar after the last one taken, except the newest (still forming)."""
        last = self.last.get(symbol)
        fresh = [to_bar(symbol, r) for r in list(rows)[:-1]]
        fresh = [b for b in fresh if last is None or b.ts > last]
        if not fresh:
            return
        with self._lock:
            self._queues[symbol].extend(fresh)
        self.last[symbol] = fresh[-1].ts
