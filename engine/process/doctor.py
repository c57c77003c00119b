"""`python -m engine doctor`: is this configuration ready for a marathon?

Each check answers within `LIMIT_SECONDS` (a check that does not is reported as
such, and its thread is abandoned) and yields one or more `Check` lines: OK, or
FAIL with what to do. The checks follow the configuration: the feed (reachable,
every symbol's market data), the broker (reachable, logged in, the account's
currency and cash), the database, and the alert channels (a real test message
only when asked, since it reaches a person).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.config import IbContract, Settings
from engine.domain import Severity
from engine.execution.brokers.ib_link import contract_of
from engine.market.feeds import FeedError
from store.backup import integrity, table_count
from store.db import db_path

logger = logging.getLogger(__name__)

LIMIT_SECONDS = 10.0
STALE_CANDLES = 10


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK' if self.ok else 'FAIL':5s} {self.name:20s} {self.detail}"


CheckFn = Callable[[], Iterable[Check]]


def within(name: str, fn: CheckFn, limit: float = LIMIT_SECONDS) -> list[Check]:
    """Run one check on a daemon thread; a check still running after `limit` fails."""
    results: list[Check] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            results.extend(fn())
        except Exception as exc:  # a check's own failure is its answer
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return [Check(name, False, f"no answer within {limit:g} s")]
    if failure:
        exc = failure[0]
        return [Check(name, False, f"{type(exc).__name__}: {exc}")]
    return results


def run_checks(checks: Iterable[tuple[str, CheckFn]], limit: float = LIMIT_SECONDS) -> list[Check]:
    out: list[Check] = []
    for name, fn in checks:
        out += within(name, fn, limit)
    return out


def checks_for(
    settings: Settings, db: str | None, *, test_alert: bool
) -> list[tuple[str, CheckFn]]:
    return [
        ("database", lambda: check_database(db_path(db))),
        ("feed", lambda: check_feed(settings)),
        ("broker", lambda: check_broker(settings)),
        ("alerts", lambda: check_alerts(settings, send=test_alert)),
    ]


# ---- database ---------------------------------------------------------------------


def check_database(path: Path) -> list[Check]:
    if not path.exists():
        parent = path.parent if path.parent.exists() else path.parent.parent
        if not parent.exists() or not _writable(parent):
            return [Check("database", False, f"{path}: cannot create it; check the folder")]
        return [Check("database", True, f"{path}: none yet; the engine creates it at start")]
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            verdict = integrity(conn, quick=True)
            n_tables = table_count(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [Check("database", False, f"{path}: {exc}; restore the latest backup")]
    if verdict != "ok":
        return [Check("database", False, f"{path}: integrity check says {verdict!r}")]
    size = path.stat().st_size / 1e6
    return [Check("database", True, f"{path}: {size:.1f} MB, {n_tables} tables, integrity ok")]


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


# ---- feed -------------------------------------------------------------------------


def check_feed(settings: Settings) -> list[Check]:
    cfg = settings.engine
    if cfg.feed == "sim":
        n = cfg.symbols if isinstance(cfg.symbols, int) else len(cfg.symbols)
        return [Check("feed", True, f"simulated market, {n} symbols (no real prices)")]
    if cfg.feed == "csv":
        from engine.market.feeds import CsvReplayFeed

        assert cfg.data_dir is not None
        try:
            csv = CsvReplayFeed(cfg.data_dir, None if isinstance(cfg.symbols, int) else cfg.symbols)
        except FeedError as exc:
            return [Check("feed", False, str(exc))]
        return [
            Check("feed", True, f"CSV replay of {len(csv.symbols)} symbols from {cfg.data_dir}")
        ]
    if cfg.feed == "ib":
        return check_ib_feed(settings)
    return check_ccxt(settings)


def check_ccxt(settings: Settings, now: Callable[[], float] = time.time) -> list[Check]:
    from engine.market import ccxt_feed

    c = settings.ccxt
    symbols = tuple(settings.engine.symbols) if not isinstance(settings.engine.symbols, int) else ()
    try:
        exchange = ccxt_feed.make_exchange(c.exchange, min(c.timeout_seconds, LIMIT_SECONDS / 3))
        feed = ccxt_feed.CcxtFeed(exchange, symbols, c.timeframe, sleep=lambda s: None)
    except FeedError as exc:
        return [Check("feed", False, str(exc))]
    out = [Check("feed", True, f"{c.exchange} public data reachable, {c.timeframe} candles")]
    for symbol in feed.symbols:
        try:
            rows = exchange.fetch_ohlcv(symbol, c.timeframe, None, 2)
        except Exception as exc:
            out.append(Check(f"feed {symbol}", False, f"{type(exc).__name__}: {exc}"))
            continue
        if not rows:
            out.append(Check(f"feed {symbol}", False, "no candles: is the market trading?"))
            continue
        last = rows[-1]
        age = now() - last[0] / 1000
        opened = datetime.fromtimestamp(last[0] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        text = f"last candle {opened} UTC ({age:.0f} s ago), close {last[4]}"
        # A crypto market trades around the clock: old candles mean the data stopped.
        fresh = age <= STALE_CANDLES * feed.interval_ms / 1000
        out.append(Check(f"feed {symbol}", fresh, text if fresh else f"{text}: data stopped"))
    return out


# ---- the IB feed ------------------------------------------------------------------

# Beside the engine's broker (client_id) and feed (client_id + 1).
DOCTOR_FEED_CLIENT_OFFSET = 901


def check_ib_feed(settings: Settings, ib_factory: Callable[[], Any] | None = None) -> list[Check]:
    return asyncio.run(_probe_ib_feed(settings, ib_factory))


async def _probe_ib_feed(settings: Settings, ib_factory: Callable[[], Any] | None) -> list[Check]:
    import ib_async

    ib_cfg = settings.ib
    ib = (ib_factory or ib_async.IB)()
    timeout = min(ib_cfg.timeout_seconds, LIMIT_SECONDS / 4)
    failed = await _connect(ib, settings, "feed", DOCTOR_FEED_CLIENT_OFFSET, timeout)
    if failed is not None:
        return [failed]
    refused: dict[int, str] = {}

    def on_error(req_id: int, code: int, message: str, contract: Any = None) -> None:
        refused[req_id] = f"IB {code}: {message}"

    ib.errorEvent += on_error
    try:
        wanted = [contract_of(ib_async, c) for c in ib_cfg.contracts]
        qualified = await asyncio.wait_for(
            ib.qualifyContractsAsync(*wanted, returnAll=True), timeout
        )
        out = [Check("feed", True, f"IB market data at {ib_cfg.host}:{ib_cfg.port}")]
        for spec, contract in zip(ib_cfg.contracts, qualified, strict=True):
            refused.clear()
            out.append(
                await _probe_symbol(ib, settings, spec, contract, refused=refused, timeout=timeout)
            )
        return out
    finally:
        ib.errorEvent -= on_error
        ib.disconnect()


async def _connect(
    ib: Any, settings: Settings, name: str, client_offset: int, timeout: float
) -> Check | None:
    """Connect read-only beside the engine (its client id plus `client_offset`); None
    when connected, else the failing check saying what to start."""
    ib_cfg = settings.ib
    try:
        await asyncio.wait_for(
            ib.connectAsync(
                host=ib_cfg.host,
                port=ib_cfg.port,
                clientId=ib_cfg.client_id + client_offset,
                timeout=timeout,
                readonly=True,
                **({"account": ib_cfg.account} if name == "broker" else {}),
            ),
            timeout,
        )
    except (OSError, TimeoutError, ConnectionError) as exc:
        return Check(
            name,
            False,
            f"no IB API at {ib_cfg.host}:{ib_cfg.port} ({type(exc).__name__}): start IB"
            " Gateway (or TWS), enable the API and check ib.port (4002 paper gateway,"
            " 7497 paper TWS)",
        )
    return None


async def _probe_symbol(
    ib: Any,
    settings: Settings,
    spec: IbContract,
    contract: Any,
    *,
    refused: dict[int, str],
    timeout: float,
) -> Check:
    """One contract: known to IB, and a day of its bars permitted by the subscription."""
    from engine.market.ib_feed import bar_size

    name = f"feed {spec.symbol}"
    if contract is None or isinstance(contract, list):
        what = "unknown to IB" if contract is None else "ambiguous: set primary_exchange"
        return Check(name, False, f"{spec.symbol} {spec.sec_type}: {what}")
    bars = await asyncio.wait_for(
        ib.reqHistoricalDataAsync(
            contract,
            endDateTime="",
            durationStr="1 D",
            barSizeSetting=bar_size(settings.engine.bar_ms),
            whatToShow="MIDPOINT" if spec.sec_type == "CASH" else "TRADES",
            useRTH=False,
            formatDate=2,
        ),
        timeout,
    )
    if not bars:
        why = next(iter(refused.values()), "no bars")
        return Check(
            name,
            False,
            f"{why}: check the market-data subscription for"
            f" {spec.primary_exchange or spec.exchange} in Client Portal",
        )
    last = bars[-1]
    return Check(name, True, f"market data permitted, last bar {last.date}, close {last.close}")


# ---- broker -----------------------------------------------------------------------


def check_broker(settings: Settings, ib_factory: Callable[[], Any] | None = None) -> list[Check]:
    if settings.engine.broker == "paper":
        cash = settings.engine.starting_cash
        return [Check("broker", True, f"paper broker (simulated fills), starting cash {cash:,.2f}")]
    return asyncio.run(_probe_ib(settings, ib_factory))


# The doctor connects beside a running engine, so it must not take the engine's client id.
DOCTOR_CLIENT_OFFSET = 900


async def _probe_ib(settings: Settings, ib_factory: Callable[[], Any] | None) -> list[Check]:
    import ib_async

    ib_cfg = settings.ib
    ib = (ib_factory or ib_async.IB)()
    timeout = min(ib_cfg.timeout_seconds, LIMIT_SECONDS / 3)
    failed = await _connect(ib, settings, "broker", DOCTOR_CLIENT_OFFSET, timeout)
    if failed is not None:
        return [failed]
    try:
        where = f"{ib_cfg.host}:{ib_cfg.port}"
        return [Check("broker", True, f"IB API at {where}"), *_ib_account(ib, ib_cfg.account)]
    finally:
        ib.disconnect()


def _ib_account(ib: Any, account: str) -> list[Check]:
    accounts = list(ib.managedAccounts())
    if not accounts:
        return [Check("broker login", False, "connected but no account: log in to IB Gateway")]
    if account and account not in accounts:
        return [
            Check(
                "broker login",
                False,
                f"ib.account = {account!r} is not among {', '.join(accounts)}",
            )
        ]
    name = account or accounts[0]
    out = [Check("broker login", True, f"logged in, account {name}")]
    values = {
        (v.tag, v.currency): v.value for v in ib.accountValues(name) if v.tag in _ACCOUNT_TAGS
    }
    currency = next((v for (t, _), v in values.items() if t == "Currency"), None)
    cash = values.get(("TotalCashValue", "BASE")) or next(
        (v for (t, _), v in values.items() if t == "TotalCashValue"), None
    )
    if cash is None:
        out.append(Check("broker account", False, "IB reported no cash yet; try again in a minute"))
    else:
        out.append(
            Check("broker account", True, f"currency {currency or '?'}, cash {float(cash):,.2f}")
        )
    return out


_ACCOUNT_TAGS = frozenset({"Currency", "TotalCashValue"})


# ---- alerts -----------------------------------------------------------------------


def check_alerts(settings: Settings, *, send: bool) -> list[Check]:
    from engine.alerts.notify import AlertMessage, DeliveryError, channels_from

    channels = channels_from(settings.alerts, timeout=min(5.0, LIMIT_SECONDS / 3))
    if not channels:
        return [Check("alerts", True, "no webhook or email set: alerts stay in the cockpit")]
    out = []
    for channel in channels:
        name = f"alerts {channel.name}"
        if not send:
            out.append(Check(name, True, "configured; --test-alert sends a test message"))
            continue
        message = AlertMessage(
            0,
            int(time.time() * 1000),
            Severity.INFO,
            "doctor",
            "Cockpit test alert",
            "Sent by `python -m engine doctor --test-alert`: this channel works.",
        )
        try:
            channel.send(message)
        except DeliveryError as exc:
            out.append(Check(name, False, f"test message not delivered: {exc}"))
        else:
            out.append(Check(name, True, "test message delivered"))
    return out
