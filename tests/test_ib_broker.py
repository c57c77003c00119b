"""The IB adapter driven through a fake of ib_async.IB's own public API.

FakeIB answers like a gateway would: real ib_async Trade / OrderStatus / Execution /
CommissionReport / Fill objects, real eventkit events, and callbacks emitted on the
adapter's IB loop. Nothing inside the adapter is patched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from ib_async import (
    AccountValue,
    CommissionReport,
    Event,
    Execution,
    Fill,
    LimitOrder,
    OrderStatus,
    Position,
    Stock,
    Trade,
    TradeLogEntry,
)

from engine.config import IbContract, IbSettings
from engine.domain import Bar, ExecutionReport, Order, OrderType, Purpose, Side
from engine.domain import OrderStatus as Status
from engine.execution.brokers.base import Broker, BrokerUnavailable
from engine.execution.brokers.ib import IbBroker, map_status

TIMEOUT = 0.3
SETTINGS = IbSettings(timeout_seconds=TIMEOUT, account="DU123")


class FakeIB:
    """ib_async.IB's public API over an in-memory gateway.

    The gateway keeps every order; a session (between connect and disconnect) sees
    only what it placed or asked for, as ib_async does after a reconnect.
    """

    def __init__(self) -> None:
        for name in (
            "connectedEvent",
            "disconnectedEvent",
            "orderStatusEvent",
            "execDetailsEvent",
            "commissionReportEvent",
            "errorEvent",
        ):
            setattr(self, name, Event(name))
        self.reachable = True
        self.hang_connect = False
        self.hang_requests = False
        self.connect_attempts = 0
        self.modifications = 0
        self.execution_filters: list[Any] = []
        self.forget_completed = False
        self.unlisted: set[str] = set()  # placed, not yet in the gateway's open-order list
        self.cash = 25_000.0
        self.accounts = ["DU123"]
        self.loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._gateway: list[Trade] = []
        self._session: list[Trade] = []
        self._fills: dict[str, Fill] = {}
        self._positions: dict[str, tuple[Any, float]] = {}
        self._next_id = 1

    # ---- the API the adapter uses -------------------------------------------------

    async def connectAsync(  # noqa: PLR0917 - ib_async's signature
        self,
        host: str = "127.0.0.1",
        port: int = 7497,
        clientId: int = 1,  # noqa: N803
        timeout: float = 4,
        readonly: bool = False,
        account: str = "",
    ) -> FakeIB:
        self.loop = asyncio.get_running_loop()
        self.connect_attempts += 1
        if self.hang_connect:
            await asyncio.get_running_loop().create_future()
        if not self.reachable:
            raise ConnectionRefusedError(f"connect to {host}:{port} refused")
        self._connected = True
        self._session = []
        self.connectedEvent.emit()
        return self

    def isConnected(self) -> bool:
        return self._connected

    def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self.disconnectedEvent.emit()

    def placeOrder(self, contract: Any, order: Any) -> Trade:
        if not self._connected:
            raise ConnectionError("Not connected")
        placed = next((t for t in self._gateway if t.order.orderId == order.orderId), None)
        if order.orderId and placed is not None:
            # As ib_async: an order placed again under its own id is a modification.
            placed.order = order
            placed.log.append(TradeLogEntry(_now(), placed.orderStatus.status, "Modify"))
            self.modifications += 1
            return placed
        order.orderId = self._next_id
        self._next_id += 1
        status = OrderStatus(
            orderId=order.orderId, status="PendingSubmit", remaining=order.totalQuantity
        )
        trade = Trade(contract, order, status, [], [TradeLogEntry(_now(), "PendingSubmit")])
        self._gateway.append(trade)
        self._session.append(trade)
        return trade

    def cancelOrder(self, order: Any) -> Trade | None:
        trade = next((t for t in self._gateway if t.order is order), None) or next(
            (t for t in self._gateway if order.orderId and t.order.orderId == order.orderId), None
        )
        if trade is not None and not trade.isDone():
            self._set_status(trade, "PendingCancel")
        return trade

    def trades(self) -> list[Trade]:
        return list(self._session)

    def openTrades(self) -> list[Trade]:
        return [t for t in self._session if not t.isDone()]

    def fills(self) -> list[Fill]:
        session = {id(t) for t in self._session}
        return [f for t in self._gateway if id(t) in session for f in t.fills]

    def executions(self) -> list[Execution]:
        return [f.execution for f in self.fills()]

    def positions(self, account: str = "") -> list[Position]:
        return [Position(account, c, q, 0.0) for c, q in self._positions.values()]

    def accountValues(self, account: str = "") -> list[AccountValue]:
        return [
            AccountValue(account, "Currency", "USD", "USD", ""),
            AccountValue(account, "TotalCashValue", str(self.cash), "USD", ""),
        ]

    def managedAccounts(self) -> list[str]:
        return list(self.accounts) if self._connected else []

    async def reqAllOpenOrdersAsync(self) -> list[Trade]:
        await self._answer()
        listed = [t for t in self._gateway if not t.isDone()]
        return self._adopt([t for t in listed if t.order.orderRef not in self.unlisted])

    async def reqCompletedOrdersAsync(self, apiOnly: bool) -> list[Trade]:  # noqa: N803
        await self._answer()
        if self.forget_completed:
            return []  # as after the gateway's restart: only executions remain
        return self._adopt([t for t in self._gateway if t.isDone()])

    async def reqExecutionsAsync(self, execFilter: Any = None) -> list[Fill]:  # noqa: N803
        await self._answer()
        self.execution_filters.append(execFilter)
        since = None
        if execFilter is not None and execFilter.time:
            since = datetime.strptime(execFilter.time, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        # As IB: whole seconds, every execution of the account, orderRef or not.
        found = [f for t in self._gateway for f in t.fills]
        return [f for f in found if since is None or f.execution.time >= since]

    # ---- the gateway's side: callbacks run on the adapter's IB loop ----------------

    def gateway_status(self, trade: Trade, status: str, message: str = "") -> None:
        self._on_loop(lambda: self._set_status(trade, status, message))

    def gateway_fill(
        self,
        trade: Trade,
        shares: float,
        price: float,
        commission: float,
        *,
        report: bool = True,
        offline: bool = False,
    ) -> str:
        """An execution at the gateway; `offline` while no adapter is connected to hear it."""
        exec_id = f"0001f4e8.{len(self._fills) + 1:08d}.01.01"

        def fill() -> None:
            done = trade.orderStatus.filled + shares
            execution = Execution(
                execId=exec_id,
                time=_now(),
                side="BOT" if trade.order.action == "BUY" else "SLD",
                shares=shares,
                price=price,
                orderId=trade.order.orderId,
                cumQty=done,
                orderRef=trade.order.orderRef,
            )
            item = Fill(trade.contract, execution, CommissionReport(), _now())
            self._fills[exec_id] = item
            trade.fills.append(item)
            symbol = trade.contract.symbol
            held = self._positions.get(symbol, (trade.contract, 0.0))[1]
            sign = 1 if trade.order.action == "BUY" else -1
            self._positions[symbol] = (trade.contract, held + sign * shares)
            self.execDetailsEvent.emit(trade, item)
            if report:
                self.commissionReportEvent.emit(
                    trade, item, CommissionReport(exec_id, commission, "USD")
                )
            trade.orderStatus.filled = done
            trade.orderStatus.remaining = trade.order.totalQuantity - done
            full = done >= trade.order.totalQuantity
            self._set_status(trade, "Filled" if full else "Submitted")

        if offline:
            fill()
        else:
            self._on_loop(fill)
        return exec_id

    def gateway_manual_order(self, symbol: str, action: str, qty: float, limit: float) -> Trade:
        """An order typed into TWS by hand: no orderRef, no API order id, a permId."""
        order = LimitOrder(action, qty, limit, permId=900_000 + len(self._gateway))
        status = OrderStatus(status="Submitted", remaining=qty)
        trade = Trade(Stock(symbol, "SMART", "USD"), order, status, [], [])
        self._gateway.append(trade)
        return trade

    def gateway_reject(self, trade: Trade, code: int, message: str) -> None:
        """IB refuses an order the way ib_async reports it: Cancelled, then the error."""

        def reject() -> None:
            trade.orderStatus.status = "Cancelled"
            text = f"Error {code}, reqId {trade.order.orderId}: {message}"
            trade.log.append(TradeLogEntry(_now(), "Cancelled", text, code))
            self.orderStatusEvent.emit(trade)
            self.errorEvent.emit(trade.order.orderId, code, message, trade.contract)

        self._on_loop(reject)

    def gateway_error(self, code: int, message: str, req_id: int = -1) -> None:
        """A message not tied to an order: connectivity, data farms, pacing."""
        self._on_loop(lambda: self.errorEvent.emit(req_id, code, message, None))

    def gateway_drop(self) -> None:
        """The socket to the gateway breaks."""
        self.reachable = False
        self._on_loop(self.disconnect)

    def _set_status(self, trade: Trade, status: str, message: str = "") -> None:
        trade.orderStatus.status = status
        trade.log.append(TradeLogEntry(_now(), status, message))
        self.orderStatusEvent.emit(trade)

    def _adopt(self, trades: list[Trade]) -> list[Trade]:
        self._session += [t for t in trades if t not in self._session]
        return trades

    async def _answer(self) -> None:
        if self.hang_requests:
            await asyncio.get_running_loop().create_future()

    def _on_loop(self, fn: Callable[[], None]) -> None:
        async def run() -> None:
            fn()

        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(run(), self.loop).result(2)


def _now() -> datetime:
    return datetime.now(UTC)


def wait_for(condition: Callable[[], bool], limit: float = 15.0) -> bool:
    """The adapter's own thread does the work; give it a bounded moment (generous:
    the machine may be busy; a condition that holds ends the wait at once)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def fake() -> FakeIB:
    return FakeIB()


@pytest.fixture
def make(fake: FakeIB) -> Iterator[Callable[..., IbBroker]]:
    adapters: list[IbBroker] = []

    def build(ib: FakeIB | None = None, settings: IbSettings = SETTINGS) -> IbBroker:
        adapter = IbBroker(
            settings,
            ib_factory=lambda: ib or fake,
            clock=lambda: 1_000,
            backoff_seconds=(0.01, 0.05),
            poll_seconds=0.01,
            commission_grace_seconds=0.05,
        )
        adapters.append(adapter)
        return adapter

    yield build
    for adapter in adapters:
        adapter.close()


def order(coid: str, side: Side = Side.BUY, qty: float = 100, **kw: Any) -> Order:
    return Order(coid, "AAPL", side, qty, kw.pop("kind", OrderType.MARKET), Purpose.ENTRY, **kw)


def trade_of(fake: FakeIB, coid: str) -> Trade:
    return next(t for t in fake._gateway if t.order.orderRef == coid)


def drain(adapter: IbBroker) -> list[ExecutionReport]:
    return adapter.on_bar(Bar("AAPL", 1, 10, 10, 10, 10, 100))


# ---- mapping (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ib_status", "filled", "expected"),
    [
        ("PendingSubmit", 0, Status.SUBMITTED),
        ("PreSubmitted", 0, Status.ACCEPTED),
        ("Submitted", 0, Status.ACCEPTED),
        ("Submitted", 40, Status.PARTIALLY_FILLED),
        ("Submitted", 100, Status.FILLED),
        ("Filled", 100, Status.FILLED),
        ("Cancelled", 0, Status.CANCELED),
        ("ApiCancelled", 0, Status.CANCELED),
        ("Inactive", 0, Status.REJECTED),
        ("Inactive", 40, Status.CANCELED),
        ("ValidationError", 0, None),
    ],
)
def test_ib_status_maps_to_our_lifecycle(
    ib_status: str, filled: float, expected: Status | None
) -> None:
    assert map_status(ib_status, filled, 100) is expected


# ---- through the fake ------------------------------------------------------------------


def test_adapter_satisfies_the_protocol(make: Callable[..., IbBroker]) -> None:
    assert isinstance(make(), Broker)


def test_adapter_connects_on_start(make: Callable[..., IbBroker]) -> None:
    assert make().connected


def test_market_order_is_placed_with_the_client_id_as_order_ref(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    reports = make().submit(order("c-1", qty=100), now=5)
    trade = trade_of(fake, "c-1")
    assert [r.status for r in reports] == [Status.SUBMITTED]
    assert (trade.order.orderType, trade.order.action, trade.order.totalQuantity) == (
        "MKT",
        "BUY",
        100,
    )
    assert trade.contract.symbol == "AAPL" and trade.order.account == "DU123"


def test_stop_limit_order_carries_both_prices(make: Callable[..., IbBroker], fake: FakeIB) -> None:
    make().submit(
        order("c-1", Side.SELL, kind=OrderType.STOP_LIMIT, limit_price=99, stop_price=100), now=5
    )
    placed = trade_of(fake, "c-1").order
    assert (placed.orderType, placed.lmtPrice, placed.auxPrice) == ("STP LMT", 99, 100)


def test_fill_becomes_a_report_with_exec_id_and_commission(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1", qty=100), now=5)
    exec_id = fake.gateway_fill(trade_of(fake, "c-1"), 100, 187.25, commission=1.37)
    [report] = [r for r in drain(adapter) if r.fill is not None]
    assert report.status is Status.FILLED
    assert (report.fill.exec_id, report.fill.commission) == (exec_id, 1.37)
    assert (report.fill.qty, report.fill.price, report.fill.side) == (100, 187.25, Side.BUY)


def test_partial_fills_report_partially_filled_then_filled(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1", Side.SELL, qty=100), now=5)
    trade = trade_of(fake, "c-1")
    fake.gateway_status(trade, "Submitted")
    fake.gateway_fill(trade, 60, 10.0, commission=1.0)
    fake.gateway_fill(trade, 40, 10.1, commission=1.0)
    reports = drain(adapter)
    assert [r.status for r in reports] == [Status.ACCEPTED, Status.PARTIALLY_FILLED, Status.FILLED]
    assert sum(r.fill.qty for r in reports if r.fill) == 100


def test_cancelled_status_maps_to_canceled(make: Callable[..., IbBroker], fake: FakeIB) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    trade = trade_of(fake, "c-1")
    fake.gateway_status(trade, "Submitted")
    assert adapter.cancel("c-1", now=6) == []  # IB confirms later
    fake.gateway_status(trade, "Cancelled")
    assert [r.status for r in drain(adapter)] == [Status.ACCEPTED, Status.CANCELED]


def test_inactive_order_is_rejected_with_ibs_reason(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    fake.gateway_status(trade_of(fake, "c-1"), "Inactive", "Order rejected: no trading permissions")
    [report] = drain(adapter)
    assert report.status is Status.REJECTED and "no trading permissions" in report.detail


def test_cancel_of_an_unknown_order_reports_without_raising(
    make: Callable[..., IbBroker],
) -> None:
    [report] = make().cancel("nope", now=5)
    assert report.detail == "unknown or not working"


def test_malformed_order_is_rejected_without_reaching_ib(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    [report] = make().submit(order("c-1", qty=0), now=5)
    assert report.status is Status.REJECTED and fake._gateway == []


def test_resubmitting_a_client_order_id_does_not_place_twice(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    adapter.submit(order("c-1"), now=6)
    assert len(fake._gateway) == 1


def test_lookup_finds_the_order_by_order_ref_after_a_restart(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    first = make()
    first.submit(order("c-1", qty=100), now=5)
    fake.gateway_fill(trade_of(fake, "c-1"), 100, 50.0, commission=1.0)
    first.close()

    state = make().lookup("c-1")  # a new adapter: the session's cache starts empty
    assert state is not None
    assert (state.status, state.filled_qty, state.avg_price) == (Status.FILLED, 100, 50.0)
    assert state.broker_order_id == str(trade_of(fake, "c-1").order.orderId)


def test_lookup_of_an_order_ib_never_saw_is_none(make: Callable[..., IbBroker]) -> None:
    assert make().lookup("never") is None


def test_account_reports_cash_and_positions(make: Callable[..., IbBroker], fake: FakeIB) -> None:
    adapter = make()
    adapter.submit(order("c-1", Side.SELL, qty=30), now=5)
    fake.gateway_fill(trade_of(fake, "c-1"), 30, 10.0, commission=1.0)
    account = adapter.account()
    assert (account.cash, account.positions) == (fake.cash, {"AAPL": -30})


def test_fill_without_a_commission_report_is_reported_after_the_grace(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    exec_id = fake.gateway_fill(trade_of(fake, "c-1"), 100, 20.0, commission=0, report=False)
    reports: list[ExecutionReport] = []
    assert wait_for(lambda: bool(reports.extend(drain(adapter))) or any(r.fill for r in reports))
    [fill] = [r.fill for r in reports if r.fill]
    assert (fill.exec_id, fill.commission) == (exec_id, 0.0)


# ---- connection trouble ------------------------------------------------------------------


def test_disconnected_ib_makes_submit_unavailable(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    fake.gateway_drop()
    assert not adapter.connected
    with pytest.raises(BrokerUnavailable):
        adapter.submit(order("c-1"), now=5)


def test_adapter_reconnects_when_the_gateway_comes_back(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    fake.gateway_drop()
    attempts = fake.connect_attempts
    assert wait_for(lambda: fake.connect_attempts > attempts + 1)  # retrying with backoff
    fake.reachable = True
    assert wait_for(lambda: adapter.connected)


def test_unreachable_gateway_at_start_leaves_the_adapter_disconnected(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    fake.reachable = False
    adapter = make()
    assert not adapter.connected
    with pytest.raises(BrokerUnavailable):
        adapter.submit(order("c-1"), now=5)


def test_a_call_that_never_answers_times_out_into_unavailable(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    fake.hang_requests = True
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="did not answer"):
        adapter.lookup("somewhere")  # not cached: the adapter must ask the gateway
    assert time.monotonic() - started < TIMEOUT + 0.5


def test_a_connect_that_never_answers_does_not_block_the_start(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    fake.hang_connect = True
    started = time.monotonic()
    adapter = make()
    assert time.monotonic() - started < TIMEOUT + 0.5
    assert not adapter.connected


# ---- brackets: the stop and target as native IB children of the entry ----------------


def bracket(parent: str = "c-1") -> list[Order]:
    return [
        order(parent, qty=100),
        Order(
            f"{parent}-S",
            "AAPL",
            Side.SELL,
            100,
            OrderType.STOP,
            Purpose.EXIT,
            stop_price=98.0,
            parent_id=parent,
            oco_group=parent,
        ),
        Order(
            f"{parent}-T",
            "AAPL",
            Side.SELL,
            100,
            OrderType.LIMIT,
            Purpose.EXIT,
            limit_price=106.0,
            parent_id=parent,
            oco_group=parent,
        ),
    ]


def test_a_bracket_goes_to_ib_as_a_parent_with_two_oca_children(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    reports = make().submit_bracket(bracket(), now=5)
    entry, stop, target = (trade_of(fake, c).order for c in ("c-1", "c-1-S", "c-1-T"))
    assert [r.status for r in reports] == [Status.SUBMITTED] * 3
    assert (stop.parentId, target.parentId) == (entry.orderId, entry.orderId)
    assert (stop.orderType, stop.auxPrice, target.orderType, target.lmtPrice) == (
        "STP",
        98.0,
        "LMT",
        106.0,
    )
    assert stop.ocaGroup == target.ocaGroup == "c-1" and entry.ocaGroup == ""


def test_only_the_last_order_of_a_bracket_is_transmitted(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    make().submit_bracket(bracket(), now=5)
    transmits = [trade_of(fake, c).order.transmit for c in ("c-1", "c-1-S", "c-1-T")]
    assert transmits == [False, False, True]


def test_a_bracket_sent_twice_is_placed_once(make: Callable[..., IbBroker], fake: FakeIB) -> None:
    adapter = make()
    adapter.submit_bracket(bracket(), now=5)
    adapter.submit_bracket(bracket(), now=6)
    assert len(fake._gateway) == 3


def test_a_malformed_child_rejects_the_whole_bracket_before_anything_is_sent(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    orders = bracket()
    orders[1] = Order("c-1-S", "AAPL", Side.SELL, 100, OrderType.STOP, Purpose.EXIT)
    reports = make().submit_bracket(orders, now=5)
    assert [r.status for r in reports] == [Status.REJECTED] * 3 and fake._gateway == []


def test_moving_a_stop_modifies_the_working_ib_order_under_its_own_id(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit_bracket(bracket(), now=5)
    before = trade_of(fake, "c-1-S").order.orderId
    adapter.modify(replace(bracket()[1], stop_price=101.5), now=6)
    stop = trade_of(fake, "c-1-S").order
    assert (stop.orderId, stop.auxPrice, fake.modifications) == (before, 101.5, 1)
    assert len(fake._gateway) == 3


def test_open_orders_lists_the_accounts_working_orders_hand_typed_ones_included(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1", qty=10), now=5)
    fake.gateway_manual_order("MSFT", "SELL", 3, 400.0)
    listed = {(o.client_order_id, o.symbol, o.side, o.qty) for o in adapter.open_orders()}
    assert listed == {("c-1", "AAPL", Side.BUY, 10), ("", "MSFT", Side.SELL, 3)}


def test_an_order_placed_a_moment_ago_is_working_before_the_gateway_lists_it(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    adapter = make()
    adapter.submit(order("c-1"), now=5)
    fake.unlisted.add("c-1")
    assert [o.client_order_id for o in adapter.open_orders()] == ["c-1"]


# ---- the instrument an order names: the configured contract, as the feed's bars -------

CONTRACTS = (
    IbContract(symbol="AAPL", primary_exchange="NASDAQ"),
    IbContract(symbol="EUR", sec_type="CASH", exchange="IDEALPRO", currency="USD"),
)


def contract_fields(trade: Any) -> tuple[str, str, str, str, str]:
    c = trade.contract
    return (c.symbol, c.secType, c.exchange, c.currency, c.primaryExchange)


def test_an_order_goes_to_the_configured_contract_not_a_us_stock_of_that_name(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    broker = make(settings=SETTINGS.model_copy(update={"contracts": CONTRACTS}))
    broker.submit(replace(order("c-1", qty=20_000), symbol="EUR"), now=5)
    broker.submit(order("c-2"), now=5)
    broker.submit(replace(order("c-3"), symbol="MSFT"), now=5)
    assert contract_fields(trade_of(fake, "c-1")) == ("EUR", "CASH", "IDEALPRO", "USD", "")
    assert contract_fields(trade_of(fake, "c-2")) == ("AAPL", "STK", "SMART", "USD", "NASDAQ")
    # a symbol with no contract configured is the settings' default: a SMART US stock
    assert contract_fields(trade_of(fake, "c-3")) == ("MSFT", "STK", "SMART", "USD", "")


def test_every_member_of_a_bracket_names_the_configured_contract(
    make: Callable[..., IbBroker], fake: FakeIB
) -> None:
    broker = make(settings=SETTINGS.model_copy(update={"contracts": CONTRACTS}))
    broker.submit_bracket(bracket(), now=5)
    fields = {contract_fields(trade_of(fake, c)) for c in ("c-1", "c-1-S", "c-1-T")}
    assert fields == {("AAPL", "STK", "SMART", "USD", "NASDAQ")}
