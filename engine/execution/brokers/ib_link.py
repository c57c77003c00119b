"""The rules of a long-lived link to Interactive Brokers, as small pure parts.

- `Backoff`: reconnect delays, exponential with jitter, bounded (5-300 s by default),
  so many clients restarting after one outage do not knock together.
- `CircuitBreaker`: after N failed connects (or timeouts) in a row the link is
  "open": entries stay blocked and the operator is told once; one successful
  probe closes it.
- `TokenBucket`: IB drops a client that sends more than 50 messages a second; one
  bucket at 45/s per process is shared by the market-data feed and the orders.
- `HistoricalPacing`: IB's historical-data rules (at most 60 requests in any ten
  minutes, no identical request within 15 s) as "how long to wait before this one".
- `classify`: what an IB error code means for us (connectivity, data farm, order
  rejection, pacing, permissions), and `in_maintenance`: whether a disconnect falls
  in the gateway's nightly reset or weekly re-login, an expected event.
- `start_loop_thread`: the thread that owns an IB client's asyncio loop, and the
  cleanup when that loop stops (the feed and the broker each run one).
- `contract_of`: IB's contract for a configured instrument (`ib.contracts`), the
  one the feed qualifies, the broker trades and the doctor probes.

Every part takes time as an argument or a clock, so tests move time instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from engine.config import IbContract


class Backoff:
    """Delays for successive failed attempts: base * 2**n, jittered into [d/2, d],
    never below `low` nor above `high` seconds."""

    def __init__(
        self, low: float = 5.0, high: float = 300.0, *, rng: random.Random | None = None
    ) -> None:
        if not 0 < low <= high:
            raise ValueError(f"backoff bounds low={low}, high={high} need 0 < low <= high")
        self.low, self.high = low, high
        self._rng = rng or random.Random()
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.high, self.low * 2**self._attempt)
        self._attempt += 1
        return max(self.low, self._rng.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        self._attempt = 0


class CircuitBreaker:
    """Counts consecutive failures; opens at `threshold`, closes on one success."""

    def __init__(self, threshold: int = 5) -> None:
        if threshold < 1:
            raise ValueError(f"circuit breaker threshold={threshold} must be >= 1")
        self.threshold = threshold
        self.failures = 0

    @property
    def open(self) -> bool:
        return self.failures >= self.threshold

    def failure(self) -> bool:
        """Record one failure; True when this one opened the breaker."""
        self.failures += 1
        return self.failures == self.threshold

    def success(self) -> bool:
        """Record a success; True when it closed an open breaker."""
        was_open = self.open
        self.failures = 0
        return was_open


class TokenBucket:
    """`rate` messages per second with bursts up to `burst`; safe across threads.

    `delay()` takes a token and says how long the caller must wait before sending,
    so a burst queues behind the budget instead of exceeding it.
    """

    def __init__(
        self,
        rate: float = 45.0,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"token rate={rate} must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def delay(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self) -> None:
        wait = self.delay()
        if wait > 0:
            await asyncio.sleep(wait)


# One budget per process: IB counts the messages of every client of a connection,
# and the feed and the orders must not each believe they have all of it.
MESSAGES = TokenBucket(45.0)


class HistoricalPacing:
    """IB's historical-data pacing: `wait(key, now)` seconds before this request may go."""

    def __init__(self, limit: int = 60, window: float = 600.0, identical: float = 15.0) -> None:
        self.limit, self.window, self.identical = limit, window, identical
        self._sent: deque[float] = deque()
        self._last: dict[str, float] = {}

    def wait(self, key: str, now: float) -> float:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        waits = [0.0]
        if len(self._sent) >= self.limit:
            waits.append(self._sent[len(self._sent) - self.limit] + self.window - now)
        last = self._last.get(key)
        if last is not None:
            waits.append(last + self.identical - now)
        return max(waits)

    def sent(self, key: str, now: float) -> None:
        self._sent.append(now)
        self._last[key] = now


class IbEvent(Enum):
    CONNECTION_LOST = "connection lost"  # 1100
    RESTORED_DATA_LOST = "restored, data lost"  # 1101: resubscribe
    RESTORED = "restored"  # 1102
    SERVER_LINK = "server link"  # 2110: TWS/Gateway to IB servers broken
    FARM_OK = "data farm ok"  # 2104, 2106, 2158, 2107, 2108
    FARM_LOST = "data farm lost"  # 2103, 2105, 2157
    ORDER_REJECTED = "order rejected"  # 201, 202, 10147, 110
    PACING = "pacing violation"  # 162 with "pacing", 420
    NO_PERMISSION = "no market data permission"  # 354, 10089, 10090, 10168
    UNKNOWN_CONTRACT = "unknown contract"  # 200
    OTHER = "other"


_CODES = {
    1100: IbEvent.CONNECTION_LOST,
    1101: IbEvent.RESTORED_DATA_LOST,
    1102: IbEvent.RESTORED,
    2110: IbEvent.SERVER_LINK,
    2104: IbEvent.FARM_OK,
    2106: IbEvent.FARM_OK,
    2107: IbEvent.FARM_OK,
    2108: IbEvent.FARM_OK,
    2158: IbEvent.FARM_OK,
    2103: IbEvent.FARM_LOST,
    2105: IbEvent.FARM_LOST,
    2157: IbEvent.FARM_LOST,
    201: IbEvent.ORDER_REJECTED,
    202: IbEvent.ORDER_REJECTED,
    10147: IbEvent.ORDER_REJECTED,
    110: IbEvent.ORDER_REJECTED,
    420: IbEvent.PACING,
    354: IbEvent.NO_PERMISSION,
    10089: IbEvent.NO_PERMISSION,
    10090: IbEvent.NO_PERMISSION,
    10168: IbEvent.NO_PERMISSION,
    200: IbEvent.UNKNOWN_CONTRACT,
}


def classify(code: int, message: str = "") -> IbEvent:
    if code == 162 and "pacing" in message.lower():
        return IbEvent.PACING
    return _CODES.get(code, IbEvent.OTHER)


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    return int(hours) * 60 + int(minutes)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_window(text: str) -> tuple[int | None, int, int]:
    """'23:40-01:00' (every day) or 'sun 00:00-03:00' as (weekday or None, start, end)
    in minutes of the day; an end before the start runs past midnight."""
    parts = text.strip().lower().split()
    day = None
    if len(parts) == 2:
        if parts[0][:3] not in _DAYS:
            raise ValueError(f"{text!r}: the day must be one of {', '.join(_DAYS)}")
        day = _DAYS.index(parts[0][:3])
        parts = parts[1:]
    if len(parts) != 1 or parts[0].count("-") != 1:
        raise ValueError(f"{text!r}: write HH:MM-HH:MM, optionally after a day such as sun")
    start, end = parts[0].split("-")
    try:
        return day, _minutes(start), _minutes(end)
    except ValueError:
        raise ValueError(f"{text!r}: write HH:MM-HH:MM, optionally after a day") from None


def in_maintenance(now_ms: int, windows: tuple[str, ...], tz: str) -> bool:
    """True when `now_ms` falls in one of the windows, read in the time zone `tz`."""
    moment = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    minute = moment.hour * 60 + moment.minute
    for text in windows:
        day, start, end = parse_window(text)
        if start <= end:
            if start <= minute < end and (day is None or moment.weekday() == day):
                return True
            continue
        # Past midnight: the part before midnight belongs to `day`, the rest to the next.
        if minute >= start and (day is None or moment.weekday() == day):
            return True
        yesterday = (moment - timedelta(days=1)).weekday()
        if minute < end and (day is None or yesterday == day):
            return True
    return False


def start_loop_thread(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """A new event loop running forever on a daemon thread of its own. Stop it with
    `loop.call_soon_threadsafe(loop.stop)`: its tasks are then cancelled and awaited,
    its async generators closed, and the loop closed, on that thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), name=name, daemon=True)
    thread.start()
    return loop, thread


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def contract_of(api: Any, spec: IbContract) -> Any:
    """IB's contract for one configured instrument, built with `api` (ib_async or a
    stand-in with its API). The feed's bars and the broker's orders name the same
    contract, so a CASH or non-US instrument is never traded as a SMART US stock."""
    return api.Contract(
        symbol=spec.symbol,
        secType=spec.sec_type,
        exchange=spec.exchange,
        currency=spec.currency,
        primaryExchange=spec.primary_exchange,
    )
