"""The IB market-data feed through a fake of ib_async's own API (contracts,
historical bars kept up to date, error codes), with real ib_async objects."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ib_async import BarData, BarDataList, Contract

from engine.config import IbContract, IbSettings, load_settings
from engine.domain import Severity
from engine.execution.brokers.ib_link import HistoricalPacing, TokenBucket
from engine.market.feeds import FeedError
from engine.market.ib_feed import IbFeed
from engine.process.runner import Engine
from tests.conftest import FakeClock, engine_settings
from tests.test_ib_broker import FakeIB, wait_for
from tests.test_notify import free_port

MINUTE = 60_000
T0 = 1_764_600_000_000  # 2025-12-01 14:40 UTC, a whole minute
SETTINGS = IbSettings(
    timeout_seconds=0.5,
    contracts=(IbContract(symbol="AAPL", primary_exchange="NASDAQ"), IbContract(symbol="MSFT")),
)


class FakeGateway(FakeIB):
    """FakeIB with market data: contract details, and one-minute bars per symbol."""

    def __init__(self) -> None:
        super().__init__()
        self.known = {"AAPL": 265598, "MSFT": 272093}
        self.ambiguous: set[str] = set()
        self.unpermitted: set[str] = set()
        self.pace_once: set[str] = set()  # the next live request for these breaks pacing
        self.bars: dict[str, list[BarData]] = {s: [] for s in self.known}
        self.live: dict[str, BarDataList] = {}
        self.requests: list[tuple[str, bool, float]] = []  # symbol, keepUpToDate, monotonic
        self.cancelled: list[str] = []
        for i in range(30):
            for symbol in self.known:
                self.bars[symbol].append(_bar(T0 + i * MINUTE, 100 + i))

    async def qualifyContractsAsync(
        self,
        *contracts: Contract,
        returnAll: bool = False,  # noqa: N803
    ) -> list[Any]:
        out: list[Any] = []
        for c in contracts:
            if c.symbol in self.ambiguous:
                out.append([Contract(symbol=c.symbol, primaryExchange=p) for p in ("NYSE", "LSE")])
            elif c.symbol in self.known:
                c.conId = self.known[c.symbol]
                out.append(c)
            else:
                out.append(None)
        return out

    async def reqHistoricalDataAsync(  # noqa: PLR0917 - ib_async's signature
        self,
        contract: Contract,
        endDateTime: Any,  # noqa: N803
        durationStr: str,  # noqa: N803
        barSizeSetting: str,  # noqa: N803
        whatToShow: str,  # noqa: N803
        useRTH: bool,  # noqa: N803
        formatDate: int = 1,  # noqa: N803
        keepUpToDate: bool = False,  # noqa: N803
        **_: Any,
    ) -> BarDataList:
        assert (barSizeSetting, formatDate) == ("1 min", 2)
        self.requests.append((contract.symbol, keepUpToDate, time.monotonic()))
        if contract.symbol in self.unpermitted:
            message = "Requested market data is not subscribed."
            self.errorEvent.emit(len(self.requests), 354, message, contract)
            return BarDataList()
        if keepUpToDate and contract.symbol in self.pace_once:
            self.pace_once.discard(contract.symbol)
            message = "Historical Market Data Service error message:API pacing violation"
            self.errorEvent.emit(len(self.requests), 162, message, contract)
            return BarDataList()  # as ib_async: the request ends empty
        rows = BarDataList(self.bars[contract.symbol])
        rows.reqId = len(self.requests)
        rows.contract = contract
        if keepUpToDate:
            self.live[contract.symbol] = rows
        elif endDateTime:
            rows = BarDataList([b for b in rows if b.date < endDateTime])
        return rows

    def cancelHistoricalData(self, bars: BarDataList) -> None:
        self.cancelled.append(bars.contract.symbol)

    def gateway_new_bar(self, symbol: str, ts: int, close: float) -> None:
        """A new bar begins: IB appends it and flags hasNewBar."""

        def push() -> None:
            rows = self.live[symbol]
            rows.append(_bar(ts, close))
            rows.updateEvent.emit(rows, True)

        self._on_loop(push)


def _bar(ts: int, close: float) -> BarData:
    when = datetime.fromtimestamp(ts / 1000, UTC)
    return BarData(date=when, open=close, high=close + 1, low=close - 1, close=close, volume=1000)


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def start(gateway: FakeGateway) -> Iterator[Callable[..., IbFeed]]:
    feeds: list[IbFeed] = []

    def build(settings: IbSettings = SETTINGS, **kw: Any) -> IbFeed:
        kw.setdefault("clock", lambda: (T0 + 30 * MINUTE) / 1000)
        feed = IbFeed(
            settings, MINUTE, ib_factory=lambda: gateway, backoff_seconds=(0.01, 0.05), **kw
        )
        feeds.append(feed)
        return feed

    yield build
    for feed in feeds:
        feed.close()


def events_until(feed: IbFeed, title: str) -> list[tuple[Severity, str, str]]:
    seen: list[tuple[Severity, str, str]] = []
    wait_for(lambda: bool(seen.extend(feed.drain_events())) or any(e[1] == title for e in seen))
    return seen


def test_an_unknown_contract_stops_the_start_saying_what_to_check(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    del gateway.known["MSFT"]
    with pytest.raises(FeedError, match=r"MSFT STK SMART USD: unknown to IB; check symbol"):
        start()


def test_an_ambiguous_contract_asks_for_the_primary_exchange(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    gateway.ambiguous.add("MSFT")
    with pytest.raises(FeedError, match=r"ambiguous \(LSE/, NYSE/\); set primary_exchange"):
        start()


def test_no_gateway_on_the_port_stops_the_start_saying_what_to_start() -> None:
    settings = IbSettings(port=free_port(), timeout_seconds=0.5, contracts=SETTINGS.contracts)
    with pytest.raises(FeedError, match="start IB Gateway"):
        IbFeed(settings, MINUTE)


def test_warmup_returns_complete_bars_in_market_time(start: Callable[..., IbFeed]) -> None:
    bars = start().warmup(5, T0 + 20 * MINUTE, MINUTE)
    assert [b.ts for b in bars["AAPL"]] == [T0 + i * MINUTE for i in range(16, 21)]
    assert bars["MSFT"][-1].close == 120


def test_a_bar_is_yielded_when_the_next_one_begins_never_while_forming(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    feed = start()
    feed.warmup(5, T0 + 27 * MINUTE, MINUTE)
    assert [b.ts for b in feed.next_bars(0) if b.symbol == "AAPL"] == [T0 + 28 * MINUTE]
    assert [b for b in feed.next_bars(0) if b.symbol == "AAPL"] == []  # bar 29 still forming
    gateway.gateway_new_bar("AAPL", T0 + 30 * MINUTE, 131)
    assert [b.ts for b in feed.next_bars(0) if b.symbol == "AAPL"] == [T0 + 29 * MINUTE]


def test_a_restart_catches_up_the_bars_after_the_last_stored_one_one_per_call(
    start: Callable[..., IbFeed],
) -> None:
    feed = start(resume_from={"AAPL": T0 + 25 * MINUTE, "MSFT": T0 + 25 * MINUTE})
    calls = [feed.next_bars(0) for _ in range(5)]
    assert [len(c) for c in calls] == [2, 2, 2, 0, 0]
    assert [b.ts for c in calls for b in c if b.symbol == "AAPL"] == [
        T0 + i * MINUTE for i in (26, 27, 28)
    ]


def test_a_lost_data_farm_marks_every_symbol_stale_until_it_is_back(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    feed = start()
    gateway.gateway_error(2105, "HMDS data farm connection is broken:ushmds")
    [lost] = events_until(feed, "IB data farm lost: symbols stale")
    assert lost[0] is Severity.WARNING and feed.stale_symbols == {"AAPL", "MSFT"}
    gateway.gateway_error(2106, "HMDS data farm connection is OK:ushmds")
    [back] = events_until(feed, "IB data farm back")
    assert back[0] is Severity.INFO and feed.stale_symbols == frozenset()


def test_symbols_stay_stale_until_every_lost_farm_is_back(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    feed = start()
    gateway.gateway_error(2103, "Market data farm connection is broken:usfarm")
    gateway.gateway_error(2105, "HMDS data farm connection is broken:ushmds")
    gateway.gateway_error(2106, "HMDS data farm connection is OK:ushmds")
    [back] = [e for e in events_until(feed, "IB data farm back") if e[1] == "IB data farm back"]
    assert "still lost: usfarm" in back[2] and feed.stale_symbols == {"AAPL", "MSFT"}
    gateway.gateway_error(2104, "Market data farm connection is OK:usfarm")
    [back] = events_until(feed, "IB data farm back")
    assert "every farm is back" in back[2] and feed.stale_symbols == frozenset()


def test_data_farm_ok_messages_are_information_only(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    feed = start()
    gateway.gateway_error(2104, "Market data farm connection is OK:usfarm")
    gateway.gateway_error(2158, "Sec-def data farm connection is OK:secdefnj")
    gateway.gateway_error(1102, "Connectivity restored - data maintained")  # a sync point
    assert feed.drain_events() == [] and feed.stale_symbols == frozenset()


def test_restored_with_data_lost_resubscribes_every_symbol(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    feed = start(pacing=HistoricalPacing(identical=0.0))  # IB's 15 s rule is tested apart
    feed.next_bars(0)
    before = sum(1 for _, keep, _ in gateway.requests if keep)
    gateway.gateway_error(1101, "Connectivity restored - data lost")
    assert wait_for(lambda: sum(1 for _, keep, _ in gateway.requests if keep) == before + 2)
    assert sorted(gateway.cancelled) == ["AAPL", "MSFT"]


def test_historical_requests_wait_for_ibs_pacing(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    pacing = HistoricalPacing(limit=1, window=0.3)
    feed = start(pacing=pacing, clock=time.monotonic)
    feed.warmup(3, T0 + 20 * MINUTE, MINUTE)
    stamps = [t for _, _, t in gateway.requests]
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(stamps))


def test_requests_take_tokens_from_the_shared_message_budget(start: Callable[..., IbFeed]) -> None:
    budget = TokenBucket(45.0)
    start(messages=budget).warmup(3, T0 + 20 * MINUTE, MINUTE)
    assert budget.delay() == 0.0 and budget._tokens < 45 - 4  # two histories, two subscriptions


def test_a_pacing_violation_is_a_warning_naming_the_symbol(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    feed = start()
    gateway.gateway_error(162, "Historical Market Data Service error message:API pacing violation")
    [event] = events_until(feed, "IB pacing violation")
    assert event[0] is Severity.WARNING


def test_missing_market_data_permission_is_high(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    feed = start()
    gateway.gateway_error(354, "Requested market data is not subscribed.", req_id=-1)
    [event] = events_until(feed, "IB market data not permitted")
    assert event[0] is Severity.HIGH and "subscribe" in event[2]


def test_ib_feed_symbols_get_stock_contracts_and_their_calendars() -> None:
    settings = load_settings(
        engine={"feed": "ib", "symbols": ("AAPL", "SPY")},
        ib={"contracts": [{"symbol": "SPY", "primary_exchange": "ARCA", "calendar": "XNYS"}]},
    )
    assert [(c.symbol, c.sec_type, c.primary_exchange) for c in settings.ib.contracts] == [
        ("AAPL", "STK", ""),
        ("SPY", "STK", "ARCA"),
    ]
    assert settings.risk.exchanges == {"SPY": "XNYS"}


def test_contracts_alone_name_the_ib_feeds_symbols() -> None:
    settings = load_settings(engine={"feed": "ib"}, ib={"contracts": [{"symbol": "eurusd"}]})
    assert settings.engine.symbols == ("EURUSD",)


def test_a_missing_market_data_permission_stops_the_start_saying_what_to_subscribe(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    gateway.unpermitted.add("MSFT")
    with pytest.raises(FeedError, match=r"no market data for MSFT \(IB 354: .*Client Portal"):
        start().warmup(5, T0 + 20 * MINUTE, MINUTE)


def test_after_a_restart_the_live_subscription_checks_the_permission_too(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    gateway.unpermitted.add("AAPL")
    feed = start(resume_from={"AAPL": T0 + 25 * MINUTE, "MSFT": T0 + 25 * MINUTE})
    with pytest.raises(FeedError, match="no market data for AAPL"):
        feed.start_live()


def test_a_live_subscription_ended_by_a_pacing_violation_is_asked_again(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    gateway.pace_once.add("AAPL")
    feed = start(pacing=HistoricalPacing(identical=0.0))
    feed.warmup(5, T0 + 27 * MINUTE, MINUTE)  # no exception: the feed keeps running
    assert wait_for(lambda: sum(1 for s, keep, _ in gateway.requests if s == "AAPL" and keep) == 2)
    assert wait_for(lambda: any(b.symbol == "AAPL" for b in feed.next_bars(0)))
    assert any(e[1] == "IB pacing violation" for e in feed.drain_events())


def test_feed_and_orders_share_one_message_budget_by_default(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    from engine.execution.brokers import ib_link
    from engine.execution.brokers.ib import IbBroker

    broker = IbBroker(SETTINGS, ib_factory=lambda: gateway, backoff_seconds=(0.01, 0.05))
    try:
        assert start()._messages is broker._messages is ib_link.MESSAGES
    finally:
        broker.close()


def test_feed_requests_and_orders_draw_on_the_same_tokens(
    start: Callable[..., IbFeed], gateway: FakeGateway
) -> None:
    from engine.domain import Order, OrderType, Purpose, Side
    from engine.execution.brokers.ib import IbBroker

    budget = TokenBucket(45.0, clock=lambda: 0.0)  # no refill: every token taken shows
    feed = start(messages=budget)
    broker = IbBroker(
        SETTINGS, ib_factory=lambda: gateway, backoff_seconds=(0.01, 0.05), messages=budget
    )
    try:
        feed.warmup(3, T0 + 20 * MINUTE, MINUTE)  # two histories, two subscriptions
        entry = Order("c-1", "AAPL", Side.BUY, 10, OrderType.MARKET, Purpose.ENTRY)
        stop = Order(
            "c-1-S",
            "AAPL",
            Side.SELL,
            10,
            OrderType.STOP,
            Purpose.EXIT,
            stop_price=90.0,
            parent_id="c-1",
            oco_group="c-1",
        )
        broker.submit_bracket([entry, stop], now=1)  # two orders
        broker.submit(Order("c-2", "MSFT", Side.BUY, 5, OrderType.MARKET, Purpose.ENTRY), 2)
        assert budget._tokens == 45 - 4 - 2 - 1
    finally:
        broker.close()


def test_a_lost_farm_blocks_entries_in_the_engine_with_an_alert_and_ok_lifts_it(
    start: Callable[..., IbFeed],
    gateway: FakeGateway,
    db_file: Path,
    clock: FakeClock,
    open_engines: list[Engine],
) -> None:
    feed = start()
    settings = engine_settings(symbols=("AAPL", "MSFT"))
    eng = Engine(settings, db_file, clock=clock, feed=feed, history={})
    eng.open()
    open_engines.append(eng)
    trader = eng.trader
    assert trader is not None

    def farm_blocked() -> frozenset[str]:
        # What the gate's health check reads: a symbol in it gets no entries.
        found = [
            b.symbols for b in trader.router.entry_blocks if b.reason == "market data farm lost"
        ]
        return frozenset().union(*found)

    eng.step()
    assert farm_blocked() == frozenset()
    gateway.gateway_error(2103, "Market data farm connection is broken:usfarm")
    assert wait_for(lambda: feed.stale_symbols == {"AAPL", "MSFT"})
    eng.step()
    [(severity, message)] = eng.db.conn.execute(  # type: ignore[union-attr]
        "SELECT severity, message FROM alerts WHERE source = 'feed'"
        " AND title = 'IB data farm lost: symbols stale'"
    ).fetchall()
    assert severity == "WARNING" and "usfarm" in message
    assert farm_blocked() == {"AAPL", "MSFT"}
    assert {"AAPL", "MSFT"} <= trader.risk_context(trader.market_now).stale_symbols
    gateway.gateway_error(2104, "Market data farm connection is OK:usfarm")
    assert wait_for(lambda: feed.stale_symbols == frozenset())
    eng.step()
    assert farm_blocked() == frozenset()
