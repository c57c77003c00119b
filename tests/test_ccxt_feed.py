"""The ccxt feed against a local Binance (recorded responses over real HTTP on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import ConfigError, load_settings
from engine.domain import Bar
from engine.market.ccxt_feed import CcxtFeed, make_exchange
from engine.market.feeds import BarValidator, FeedError
from engine.process.runner import Engine
from tests import ccxt_support
from tests.ccxt_support import FIRST_OPEN, MINUTE, LocalExchange
from tests.conftest import FakeClock


@pytest.fixture
def local() -> Iterator[LocalExchange]:
    yield from ccxt_support.serve()


def feed(local: LocalExchange, symbols: tuple[str, ...] = ("BTC/USDT",), **kw: object) -> CcxtFeed:
    return CcxtFeed(local.exchange(), symbols, "1m", sleep=lambda s: None, **kw)  # type: ignore[arg-type]


def opens_at(minute: int) -> int:
    """The time of the candle that opened `minute` minutes into the recording."""
    return FIRST_OPEN + minute * MINUTE


def drain(f: CcxtFeed, now: int, calls: int = 60) -> list[Bar]:
    bars: list[Bar] = []
    for _ in range(calls):
        bars += f.next_bars(now)
    return bars


def test_warmup_returns_candles_up_to_the_last_closed_slot(local: LocalExchange) -> None:
    local.now = FIRST_OPEN + 8 * MINUTE + 30_000  # the ninth candle is still forming
    bars = feed(local).warmup(5, opens_at(7), MINUTE)["BTC/USDT"]
    assert [b.ts for b in bars] == [opens_at(m) for m in range(3, 8)]
    assert bars[-1].close == float(ccxt_support.KLINES[7][4])


def test_live_bars_come_one_per_call_and_never_an_open_candle(local: LocalExchange) -> None:
    f = feed(local, resume_from={"BTC/USDT": opens_at(2)})
    local.now = FIRST_OPEN + 6 * MINUTE + 10_000
    first = f.next_bars(local.now)
    rest = drain(f, local.now)
    assert len(first) == 1
    assert [b.ts for b in first + rest] == [opens_at(m) for m in range(3, 6)]


def test_a_candle_the_exchange_sent_twice_is_yielded_once(local: LocalExchange) -> None:
    f = feed(local, resume_from={"BTC/USDT": opens_at(7)})
    local.now = FIRST_OPEN + 13 * MINUTE + 5_000
    stamps = [b.ts for b in drain(f, local.now)]
    assert stamps == [opens_at(m) for m in range(8, 13)]


def test_a_gap_passes_through_and_the_validator_accepts_the_bars_after_it(
    local: LocalExchange,
) -> None:
    f = feed(local, resume_from={"BTC/USDT": opens_at(16)})
    local.now = FIRST_OPEN + 26 * MINUTE + 5_000
    bars = drain(f, local.now)
    validator = BarValidator()
    assert [validator.check(b) for b in bars] == [None] * len(bars)
    assert [b.ts for b in bars] == [opens_at(m) for m in (17, 18, 19, 23, 24, 25)]


def test_a_symbol_is_not_polled_again_before_its_next_candle_can_close(
    local: LocalExchange,
) -> None:
    f = feed(local, resume_from={"BTC/USDT": opens_at(4)})
    local.now = opens_at(6) + 3_000
    drain(f, local.now, calls=10)
    assert len(local.kline_requests) == 1
    drain(f, opens_at(7) + 3_000, calls=1)
    assert len(local.kline_requests) == 2


def test_http_429_backs_off_without_raising_then_catches_up(local: LocalExchange) -> None:
    f = feed(local, resume_from={"BTC/USDT": opens_at(4)})
    local.now = opens_at(8) + 3_000
    local.failures.extend([429])
    assert f.next_bars(local.now) == []
    assert f.next_bars(local.now) == []  # waiting: no second request inside the backoff
    assert len(local.kline_requests) == 1
    local.now += 60_000
    caught_up = drain(f, local.now)
    assert [b.ts for b in caught_up] == [opens_at(m) for m in (5, 6, 7, 8)]


def test_repeated_rate_limits_double_the_wait(local: LocalExchange) -> None:
    f = feed(local, resume_from={"BTC/USDT": opens_at(4)})
    now = opens_at(7) + 3_000
    local.failures.extend([429, 429, 429])
    seen = []
    for _ in range(3):
        f.next_bars(now)
        seen.append(f._state["BTC/USDT"].due - now)
        now = f._state["BTC/USDT"].due
    assert seen[1] == 2 * seen[0] and seen[2] == 2 * seen[1]


def test_an_unknown_market_stops_the_start_naming_it(local: LocalExchange) -> None:
    with pytest.raises(FeedError, match=r"binance has no market DOGE/EUR"):
        feed(local, ("BTC/USDT", "DOGE/EUR"))


def test_an_exchange_that_does_not_answer_stops_the_start_with_what_to_check(
    local: LocalExchange,
) -> None:
    exchange = local.exchange()
    local.stop()
    with pytest.raises(FeedError, match=r"did not answer.*check the network"):
        CcxtFeed(exchange, ("BTC/USDT",), "1m", sleep=lambda s: None)


def test_an_unknown_timeframe_stops_the_start(local: LocalExchange) -> None:
    with pytest.raises(FeedError, match=r"ccxt\.timeframe = '7m'"):
        CcxtFeed(local.exchange(), ("BTC/USDT",), "7m")


def test_the_exchange_is_built_with_ccxts_rate_limiter_on() -> None:
    exchange = make_exchange("kraken", 3.0)
    assert exchange.enableRateLimit and exchange.timeout == 3_000


def test_configuration_refuses_an_exchange_ccxt_does_not_know() -> None:
    with pytest.raises(ConfigError, match=r"ccxt\.exchange = 'nyse'"):
        load_settings(ccxt={"exchange": "nyse"})


def test_configuration_needs_market_names_for_the_ccxt_feed() -> None:
    with pytest.raises(ConfigError, match='symbols = \\["BTC/USDT"\\]'):
        load_settings(engine={"feed": "ccxt"})


def test_the_ccxt_feed_trades_on_the_paper_broker_only() -> None:
    with pytest.raises(ConfigError, match=r"engine\.broker = 'ib': the ccxt feed"):
        load_settings(engine={"feed": "ccxt", "symbols": ("BTC/USDT",), "broker": "ib"})


def test_engine_paper_trades_on_ccxt_candles_and_resumes_after_the_stored_ones(
    local: LocalExchange, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "engine.market.ccxt_feed.make_exchange", lambda name, timeout: local.exchange()
    )
    settings = load_settings(
        engine={"feed": "ccxt", "symbols": ("BTC/USDT",), "warmup_bars": 5},
        ml={"enabled": False},
    )
    local.now = FIRST_OPEN + 8 * MINUTE + 30_000
    clock = FakeClock(local.now)
    eng = Engine(settings, db_file, clock=clock)
    eng.open()
    try:
        assert eng.trader is not None and eng.trader.broker.name == "paper"
        eng.close()
        local.now = clock.advance(3 * MINUTE)
        eng = Engine(settings, db_file, clock=clock)
        eng.open()
        for _ in range(5):
            eng.step()
        stored = eng.db.conn.execute("SELECT ts FROM bars ORDER BY ts").fetchall()  # type: ignore[union-attr]
    finally:
        eng.close()
    assert [ts for (ts,) in stored] == [opens_at(m) for m in range(3, 11)]
