"""The account's capital: a starting cash fixed for the account's life, and the
deposits and withdrawals made since, each an audited row of `cash_movements`.

P&L is what trading made: equity less the starting cash and the net movements.
A deposit is not a gain and a withdrawal is not a loss, so the day's loss, the
peak and the drawdown all leave them out (the portfolio moves its peak by each
movement; the risk facts move the day-start equity by the day's movements).
"""

from __future__ import annotations

import logging
import math

from sqlite_utils import Database

from engine.alerts.audit import append_audit
from engine.config import ConfigError
from store import account as rows

__all__ = [
    "StartingCashChanged",
    "fix_starting_cash",
    "movement_problem",
    "record_movement",
    "starting_cash_changed",
]

log = logging.getLogger(__name__)


class StartingCashChanged(ConfigError):
    """engine.starting_cash differs from the value this account began with."""


def starting_cash_changed(configured: float, recorded: float, whose: str) -> StartingCashChanged:
    return StartingCashChanged(
        f"engine.starting_cash = {configured:,.2f}, but {whose} began with {recorded:,.2f};"
        " starting cash is fixed for an account's life. Keep"
        f" {recorded:,.2f} to continue it, change its capital with a deposit or withdrawal"
        " (python -m engine deposit|withdraw AMOUNT --reason TEXT), or begin a new account"
        " on a new database (--db PATH or COCKPIT_DB)"
    )


def fix_starting_cash(db: Database, starting_cash: float, now: int) -> float:
    """Record the starting cash of a new account, or check it against the recorded
    one; returns it. Raises StartingCashChanged on a different value."""
    recorded = rows.recorded_starting_cash(db.conn)
    if recorded is None:
        with db.atomic():
            rows.record_starting_cash(db.conn, starting_cash, now)
        return starting_cash
    if not math.isclose(recorded, starting_cash, rel_tol=0, abs_tol=1e-6):
        raise starting_cash_changed(starting_cash, recorded, "this database's account")
    return recorded


def movement_problem(amount: float, reason: str, equity: float) -> str | None:
    """Why a deposit (> 0) or withdrawal (< 0) cannot be made; None when it can."""
    if not (isinstance(amount, int | float) and math.isfinite(amount)) or amount == 0:
        return f"the amount must be a non-zero number, got {amount!r}"
    if not reason.strip():
        return "a deposit or withdrawal needs a reason"
    if amount < 0 and equity + amount <= 0:
        return f"withdrawing {-amount:,.2f} would leave equity of {equity + amount:,.2f}"
    return None


def record_movement(db: Database, amount: float, reason: str, actor: str, now: int) -> int:
    """Insert the movement and its audit row in the caller's transaction."""
    movement_id = rows.insert_movement(db.conn, amount, reason, actor, now)
    kind = "deposit" if amount > 0 else "withdrawal"
    append_audit(db, actor, kind, {"amount": amount, "reason": reason}, now)
    log.info("%s of %.2f by %s: %s", kind, abs(amount), actor, reason)
    return movement_id
