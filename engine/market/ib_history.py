"""Historical bars from Interactive Brokers: contracts, requests and their pacing.

Contracts come from configuration and are qualified once at start
(`qualify`): an unknown or ambiguous contract is a `FeedError` saying what to
add. `HistoricalRequests` sends every `reqHistoricalData` of the feed, the live
subscriptions' included: each waits for IB's `HistoricalPacing` and takes a
token from the message budget the process shares with the orders. Rows become
`Bar`s stamped with the start of the bar they cover, as UTC epoch ms.

Runs on the feed's IB thread (engine.market.ib_feed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from engine.config import IbContract
from engine.domain import Bar
from engine.execution.brokers.ib_link import HistoricalPacing, TokenBucket, contract_of
from engine.market.feeds import FeedError

logger = logging.getLogger(__name__)

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


def _what_to_show(spec: IbContract) -> str:
    # Currencies and indices have no trades of their own on IB.
    return "MIDPOINT" if spec.sec_type == "CASH" else "TRADES"


def to_bar(symbol: str, row: Any) -> Bar:
    """One of IB's bar rows as a `Bar` at the start of the time it covers."""
    return Bar(
        symbol,
        _epoch_ms(row.date),
        float(row.open),
        float(row.high),
        float(row.low),
        float(row.close),
        max(float(row.volume), 0.0),
    )


async def qualify(api: Any, ib: Any, specs: Mapping[str, IbContract]) -> dict[str, Any]:
    """IB's contract for every configured symbol; FeedError lists each one IB does not
    know, or knows more than one of."""
    wanted = [contract_of(api, spec) for spec in specs.values()]
    results = await ib.qualifyContractsAsync(*wanted, returnAll=True)
    contracts: dict[str, Any] = {}
    problems = []
    for spec, result in zip(specs.values(), results, strict=True):
        described = f"{spec.symbol} {spec.sec_type} {spec.exchange} {spec.currency}"
        if result is None:
            problems.append(f"{described}: unknown to IB; check symbol, sec_type and currency")
        elif isinstance(result, list):
            where = sorted({f"{c.primaryExchange or c.exchange}/{c.currency}" for c in result if c})
            problems.append(f"{described}: ambiguous ({', '.join(where)}); set primary_exchange")
        else:
            contracts[spec.symbol] = result
    if problems:
        raise FeedError("ib.contracts: " + "; ".join(problems))
    return contracts


class HistoricalRequests:
    """Every historical request of the feed, within IB's pacing and the message budget.

    `ib` is the connected client and `contracts` the qualified ones, both set by the
    feed once it has them."""

    def __init__(
        self,
        specs: Mapping[str, IbContract],
        bar_ms: int,
        *,
        messages: TokenBucket,
        pacing: HistoricalPacing,
        clock: Callable[[], float],
    ) -> None:
        self.specs = specs
        self.bar_ms = bar_ms
        self.bar_size = bar_size(bar_ms)
        self.messages = messages
        self._pacing = pacing
        self._clock = clock
        self.ib: Any = None
        self.contracts: dict[str, Any] = {}

    async def request(self, symbol: str, end: datetime | str, span: str, keep: bool) -> Any:
        """One historical request; `keep` asks IB to keep the bars up to date."""
        key = f"{symbol} {end} {span} {self.bar_size} {keep}"
        wait = self._pacing.wait(key, self._clock())
        if wait > 0:
            logger.info("IB pacing: %s waits %.1f s", symbol, wait)
            await asyncio.sleep(wait)
        await self.messages.take()
        self._pacing.sent(key, self._clock())
        return await self.ib.reqHistoricalDataAsync(
            self.contracts[symbol],
            endDateTime=end,
            durationStr=span,
            barSizeSetting=self.bar_size,
            whatToShow=_what_to_show(self.specs[symbol]),
            useRTH=False,
            formatDate=2,
            keepUpToDate=keep,
        )

    async def history(self, symbol: str, n: int, end_ts: int) -> list[Bar]:
        """Up to n complete bars starting at or before end_ts, oldest first."""
        if n <= 0:
            return []
        end = datetime.fromtimestamp((end_ts + self.bar_ms) / 1000, UTC)
        # Closed hours and weekends hold no bars: ask for more time than n bars span.
        span = duration(n * self.bar_ms / 1000 * 3 + 3 * DAY_S)
        rows = await self.request(symbol, end, span, keep=False)
        bars = [to_bar(symbol, row) for row in rows or []]
        return [b for b in bars if b.ts <= end_ts][-n:]
