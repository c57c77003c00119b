"""Cash movements: a deposit or withdrawal, recorded and audited, applied to the
portfolio and the paper account, left out of P&L and drawdown."""

from __future__ import annotations

from sqlite_utils import Database

from engine.execution.account import movement_problem, record_movement
from engine.execution.brokers.base import Broker
from engine.execution.portfolio import Portfolio, write_snapshot
from engine.risk.daily import DailyFacts


def move_cash(
    db: Database,
    broker: Broker,
    portfolio: Portfolio,
    daily: DailyFacts,
    prices: dict[str, float],
    *,
    amount: float,
    reason: str,
    actor: str,
    now: int,
) -> str:
    """A deposit (> 0) or withdrawal (< 0), stamped on market time (`now`), the clock
    of the equity marks it must be set against. Raises ValueError with the reason
    when it cannot be made; returns a summary."""
    equity = portfolio.mark(prices, now).equity
    problem = movement_problem(amount, reason, equity)
    if problem is not None:
        raise ValueError(problem)
    transfer = getattr(broker, "transfer", None)
    with db.atomic():
        record_movement(db, amount, reason, actor, now)
        if transfer is not None:
            transfer(amount, now)
    daily.moved(amount, now)
    portfolio.move_cash(amount)
    snapshot = portfolio.mark(prices, now)
    write_snapshot(db, portfolio, snapshot)
    daily.marked(snapshot)
    db.conn.commit()
    kind = "deposit" if amount > 0 else "withdrawal"
    return f"{kind} of {abs(amount):,.2f} recorded; cash {portfolio.cash:,.2f}"
