"""Real market data without an account: public OHLCV candles polled through ccxt.

`CcxtFeed` satisfies the `Feed` protocol. It asks an exchange's public REST API for
candles of one timeframe (e.g. `BTC/USDT` at `1m`); no API key is involved, and
trading stays on the paper broker. ccxt's own throttle (`enableRateLimit`) spaces
the requests; on top of it a symbol is only polled once its next candle can have
closed, so a one-second cycle does not become one request per second.

Bars are stamped with the market time they cover (the candle's open, as the
exchange stamps it) and only yielded once the candle has closed, so nothing
downstream looks ahead. Closed candles are yielded, at most one per symbol per call, oldest first; a
catch-up after a gap or a restart queues the rest. The feed passes on gaps as they
are (the validator and the staleness rules judge them) and drops a candle it has
already yielded (a duplicated row in a response, an overlapping page).

Exceptions:

    FeedError (engine.market.feeds)   the feed cannot start: unknown exchange, timeframe or
                               symbol, or the exchange did not answer at start

A rate limit (HTTP 429), a timeout or an exchange outage while running never
raises: the symbol waits with exponential backoff and the next call tries again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from engine.domain import Bar
from engine.market.feeds import FeedError

logger = logging.getLogger(__name__)

T = TypeVar("T")
ExchangeFactory = Callable[[], Any]  # returns an object with ccxt.Exchange's public API

# A closed candle is sometimes published a moment after its close.
SETTLE_MS = 2_000
BACKOFF_MIN_MS = 1_000
BACKOFF_MAX_MS = 60_000
PAGE = 500  # candles per request: within every major exchange's limit
START_ATTEMPTS = 3


def make_exchange(name: str, timeout_seconds: float) -> Any:
    """A ccxt exchange for public data, with ccxt's rate limiter on."""
    import ccxt

    if name not in ccxt.exchanges:
        raise FeedError(f"ccxt.exchange = {name!r}: not an exchange ccxt knows; e.g. binance")
    return getattr(ccxt, name)({"enableRateLimit": True, "timeout": int(timeout_seconds * 1000)})


@dataclass(slots=True)
class _Symbol:
    last_open: int | None = None  # open time of the newest candle taken
    due: int = 0  # when to poll next (epoch ms)
    backoff: int = BACKOFF_MIN_MS
    queued: deque[Bar] = field(default_factory=deque)


class CcxtFeed:
    """Closed OHLCV candles per symbol from one exchange, polled when due."""

    def __init__(
        self,
        exchange: Any,
        symbols: Sequence[str],
        timeframe: str = "1m",
        *,
        resume_from: Mapping[str, int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import ccxt

        self._ccxt = ccxt
        self._exchange = exchange
        self._sleep = sleep
        self.symbols: tuple[str, ...] = tuple(symbols)
        if not self.symbols:
            raise FeedError("engine.symbols: the ccxt feed needs market names such as BTC/USDT")
        name = getattr(exchange, "id", "exchange")
        try:
            self.interval_ms = int(exchange.parse_timeframe(timeframe)) * 1000
        except (ValueError, KeyError, TypeError):
            raise FeedError(f"ccxt.timeframe = {timeframe!r}: not a timeframe; e.g. 1m") from None
        offered = getattr(exchange, "timeframes", None) or {}
        if offered and timeframe not in offered:
            raise FeedError(f"ccxt.timeframe = {timeframe!r}: {name} offers {', '.join(offered)}")
        self.timeframe = timeframe
        markets = self._at_start(exchange.load_markets, f"{name} markets")
        unknown = [s for s in self.symbols if s not in markets]
        if unknown:
            example = next(iter(markets), "BTC/USDT")
            raise FeedError(
                f"engine.symbols: {name} has no market {', '.join(unknown)}; names look like"
                f" {example}"
            )
        resume = resume_from or {}
        self._state = {s: _Symbol() for s in self.symbols}
        for symbol, ts in resume.items():
            if symbol in self._state:
                self._state[symbol].last_open = ts  # continue with the candle after it

    # ---- Feed protocol --------------------------------------------------------

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        """Up to n candles per symbol opening at or before end_ts (the caller's last
        closed slot), oldest first; the feed's own timeframe applies, not interval_ms.
        Live bars continue them."""
        out: dict[str, list[Bar]] = {}
        step = self.interval_ms
        end_ts -= end_ts % step  # candles open on whole timeframes
        for symbol in self.symbols:
            state = self._state[symbol]
            since = end_ts - (n - 1) * step
            bars: list[Bar] = []
            while len(bars) < n:
                fetch = partial(self._exchange.fetch_ohlcv, symbol, self.timeframe, since, PAGE)
                rows = self._at_start(fetch, f"{symbol} history")
                fresh = [b for b in self._bars(symbol, rows) if not bars or b.ts > bars[-1].ts]
                fresh = [b for b in fresh if b.ts <= end_ts]
                if not fresh:
                    break
                bars += fresh
                since = fresh[-1].ts + step
            bars = bars[-n:] if n else []
            out[symbol] = bars
            if bars:
                state.last_open = bars[-1].ts
        return out

    def market_time(self, wall_ms: int) -> int | None:
        """A live market: its clock is the world's, even while no candle closes."""
        return wall_ms

    def next_bars(self, now_ms: int) -> list[Bar]:
        bars = []
        for symbol in self.symbols:
            state = self._state[symbol]
            if not state.queued and now_ms >= state.due:
                self._poll(symbol, state, now_ms)
            if state.queued:
                bars.append(state.queued.popleft())
        return bars

    # ---- polling ----------------------------------------------------------------

    def _poll(self, symbol: str, state: _Symbol, now_ms: int) -> None:
        step = self.interval_ms
        since = state.last_open + step if state.last_open is not None else now_ms - 2 * step
        try:
            rows = self._exchange.fetch_ohlcv(symbol, self.timeframe, since, PAGE)
        except self._ccxt.BaseError as exc:
            self._back_off(symbol, state, now_ms, exc)
            return
        state.backoff = BACKOFF_MIN_MS
        closed = [b for b in self._bars(symbol, rows) if b.ts + step <= now_ms]
        newest = state.last_open
        for bar in closed:
            open_ts = bar.ts
            if newest is not None and open_ts <= newest:
                continue  # already yielded: a duplicated candle or an overlapping page
            if newest is not None and open_ts > newest + step:
                logger.info(
                    "%s: no candles from %d to %d (%d missing)",
                    symbol,
                    newest + step,
                    open_ts,
                    (open_ts - newest) // step - 1,
                )
            state.queued.append(bar)
            newest = open_ts
        state.last_open = newest
        if newest is None:
            state.due = now_ms + step
        else:
            # The next candle closes one step after the newest one's close.
            state.due = max(newest + 2 * step + SETTLE_MS, now_ms + BACKOFF_MIN_MS)

    def _back_off(self, symbol: str, state: _Symbol, now_ms: int, exc: Exception) -> None:
        wait = state.backoff
        if isinstance(exc, self._ccxt.RateLimitExceeded | self._ccxt.DDoSProtection):
            wait = max(wait, int(getattr(self._exchange, "rateLimit", 0)) * 10)
        state.due = now_ms + wait
        state.backoff = min(state.backoff * 2, BACKOFF_MAX_MS)
        logger.warning(
            "%s: %s (%s); next poll in %.1f s",
            symbol,
            type(exc).__name__,
            _first_line(exc),
            wait / 1000,
        )

    def _bars(self, symbol: str, rows: Sequence[Sequence[Any]] | None) -> list[Bar]:
        """Rows [open ms, o, h, l, c, v] as bars, sorted, each time once."""
        by_ts: dict[int, Bar] = {}
        for row in rows or []:
            try:
                open_ts, o, h, lo, c, v = row[:6]
                bar = Bar(
                    symbol,
                    int(open_ts),
                    float(o),
                    float(h),
                    float(lo),
                    float(c),
                    float(v if v is not None else 0.0),
                )
            except (TypeError, ValueError):
                logger.warning("%s: unreadable candle %r skipped", symbol, row)
                continue
            by_ts.setdefault(bar.ts, bar)
        return [by_ts[ts] for ts in sorted(by_ts)]

    def _at_start(self, call: Callable[[], T], what: str) -> T:
        """A call the start depends on: retried a few times, then a FeedError."""
        delay = BACKOFF_MIN_MS / 1000
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return call()
            except self._ccxt.BadSymbol as exc:
                raise FeedError(f"{what}: {_first_line(exc)}") from None
            except self._ccxt.NetworkError as exc:
                if attempt == START_ATTEMPTS:
                    raise FeedError(
                        f"{what}: the exchange did not answer ({type(exc).__name__}:"
                        f" {_first_line(exc)}); check the network or try later"
                    ) from None
                logger.warning("%s: %s; retrying in %.1f s", what, type(exc).__name__, delay)
                self._sleep(delay)
                delay *= 2
            except self._ccxt.BaseError as exc:
                raise FeedError(f"{what}: {type(exc).__name__}: {_first_line(exc)}") from None
        raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
