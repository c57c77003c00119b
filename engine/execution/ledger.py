"""Fill-to-portfolio bookkeeping: what one booked fill does to the book of record.

The portfolio moves (engine.execution.portfolio), an entry's stop and target
become the position's protection, the symbol's `positions` row follows, and a
round trip the fill completed is written with why it closed. All of it joins the
OMS's open transaction.
"""

from __future__ import annotations

from sqlite_utils import Database

from engine.domain import ExitReason, Fill, Order, Purpose, TradeRecord
from engine.execution.portfolio import Portfolio, write_position, write_trade


class Ledger:
    def __init__(self, db: Database, portfolio: Portfolio) -> None:
        self._db = db
        self.portfolio = portfolio

    def book(self, order: Order, fill: Fill) -> TradeRecord | None:
        """Apply `fill` of `order`; returns the round trip it closed, if any."""
        portfolio = self.portfolio
        before = portfolio.position(fill.symbol)
        effect = portfolio.apply_fill(fill)
        position = effect.position
        if (
            order.purpose is Purpose.ENTRY
            and position is not None
            and position.qty * order.side.sign > 0
            and (order.stop_loss is not None or order.take_profit is not None)
        ):
            portfolio.set_protection(
                order.symbol,
                order.stop_loss if order.stop_loss is not None else position.stop,
                order.take_profit if order.take_profit is not None else position.target,
            )
        write_position(self._db, portfolio, fill.symbol, fill.ts)
        trade = effect.trade
        if trade is not None:
            reason = order.exit_reason
            if reason is None and before is not None and before.qty * order.side.sign < 0:
                reason = ExitReason.SIGNAL  # a closing order from before reasons were kept
            write_trade(self._db, trade, reason)
        return trade

    def reload(self) -> None:
        """Replay the portfolio from the database (after a failed write)."""
        self.portfolio.rebuild(self._db)
