"""What reconciliation asks IB: an order by its reference, fills, what is working,
executions since a moment, the account; and canceling an order by IB's id.

An order is found by `orderRef = client_order_id`: in this session's trades,
then the gateway's open and completed orders, then its executions, so an order
from before a restart is found too. `open_orders` lists every order working in
the account (the gateway's, other clients' and hand-typed ones included).
Runs on the IB thread only; every request takes a token from the message budget.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.domain import Fill, OrderStatus
from engine.execution.brokers.base import (
    BrokerAccount,
    BrokerOpenOrder,
    BrokerOrderState,
    BrokerUnavailable,
)
from engine.execution.brokers.ib_link import TokenBucket
from engine.execution.brokers.ib_orders import (
    CURRENCY,
    broker_id,
    execution_filter,
    find_trade,
    order_state,
    require_connection,
    side_of,
    to_fills,
)

CASH_TAG = "TotalCashValue"
CASH_CURRENCIES = ("BASE", CURRENCY)  # preferred first


class IbQueries:
    def __init__(
        self, ib: Any, messages: TokenBucket, account: str, clock: Callable[[], int]
    ) -> None:
        self._ib = ib
        self._messages = messages
        self._account = account
        self._clock = clock

    async def lookup(self, coid: str) -> BrokerOrderState | None:
        ib = self._ib
        require_connection(ib)
        trade = find_trade(coid, ib.trades())
        if trade is None:
            # Not in this session's cache: ask the gateway, which knows other sessions' orders.
            await self._messages.take()
            open_trades = await ib.reqAllOpenOrdersAsync()
            await self._messages.take()
            done_trades = await ib.reqCompletedOrdersAsync(apiOnly=True)
            trade = find_trade(coid, [*open_trades, *done_trades, *ib.trades()])
        fills = [f for f in ib.fills() if f.execution.orderRef == coid]
        if trade is None and not fills:
            await self._messages.take()
            fills = [f for f in await ib.reqExecutionsAsync() if f.execution.orderRef == coid]
        if trade is not None:
            return order_state(trade, fills)
        if not fills:
            return None
        # Executions without their order: the total is unknown, so the order stays open.
        qty = sum(f.execution.shares for f in fills)
        avg = sum(f.execution.shares * f.execution.price for f in fills) / qty
        first = fills[0].execution
        return BrokerOrderState(
            coid, str(first.orderId or first.permId), OrderStatus.PARTIALLY_FILLED, qty, avg
        )

    async def fills(self, coid: str) -> list[Fill]:
        require_connection(self._ib)
        found = [f for f in self._ib.fills() if f.execution.orderRef == coid]
        if not found:
            # Executions from before this session: the gateway keeps the day's.
            await self._messages.take()
            found = [f for f in await self._ib.reqExecutionsAsync() if f.execution.orderRef == coid]
        return to_fills(found, self._clock())

    async def open_orders(self) -> list[BrokerOpenOrder]:
        require_connection(self._ib)
        await self._messages.take()
        listed = await self._ib.reqAllOpenOrdersAsync()
        # This session's own working orders too: one placed a moment ago may not be
        # in the gateway's list yet, and must not read as gone.
        trades = {id(t): t for t in [*listed, *self._ib.openTrades()]}.values()
        account = self._account
        out = []
        for trade in trades:
            order = trade.order
            if trade.isDone() or (account and order.account and order.account != account):
                continue
            out.append(
                BrokerOpenOrder(
                    str(order.orderRef or ""),
                    broker_id(trade),
                    str(trade.contract.symbol),
                    side_of(order.action),
                    float(order.totalQuantity),
                    float(trade.orderStatus.filled),
                    str(order.orderType),
                )
            )
        return out

    async def executions_since(self, since: int | None) -> list[Fill]:
        require_connection(self._ib)
        # IB's filter takes whole seconds in UTC ("yyyymmdd-hh:mm:ss"); the exact
        # cut is made here, and a repeat of a known exec id is the OMS's to ignore.
        when = ""
        if since is not None:
            when = datetime.fromtimestamp(since // 1000, UTC).strftime("%Y%m%d-%H:%M:%S")
        wanted = execution_filter(self._account, when)
        await self._messages.take()
        found = await self._ib.reqExecutionsAsync(wanted)
        fills = to_fills(found, self._clock())
        return [f for f in fills if since is None or f.ts >= since]

    async def cancel_foreign(self, broker_order_id: str) -> bool:
        require_connection(self._ib)
        await self._messages.take()
        for trade in await self._ib.reqAllOpenOrdersAsync():
            ids = {broker_id(trade), str(trade.order.permId)}
            if broker_order_id in ids and not trade.isDone():
                await self._messages.take()
                self._ib.cancelOrder(trade.order)
                return True
        return False

    async def account(self) -> BrokerAccount:
        require_connection(self._ib)
        account = self._account
        values = {
            v.currency: float(v.value)
            for v in self._ib.accountValues(account)
            if v.tag == CASH_TAG and v.currency in CASH_CURRENCIES
        }
        cash = next((values[c] for c in CASH_CURRENCIES if c in values), None)
        if cash is None:
            raise BrokerUnavailable(f"IB has not reported {CASH_TAG} yet")
        positions: dict[str, float] = {}
        for p in self._ib.positions(account):
            if p.position:
                symbol = p.contract.symbol
                positions[symbol] = positions.get(symbol, 0.0) + float(p.position)
        return BrokerAccount(cash, positions)
