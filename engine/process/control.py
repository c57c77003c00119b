"""Trading state transitions: ACTIVE, PAUSED, HALTED (docs/ARCHITECTURE.md, Trading state).

The state lives in the `engine` row and is mirrored in memory by the runner; every
change is an audit record with who, when and why. Leaving HALTED needs an
explicit confirmation and a reason.
"""

from __future__ import annotations

from sqlite_utils import Database

from engine.alerts.audit import append_audit
from engine.domain import TradingState


class TransitionRefused(ValueError):
    """The requested state change is not allowed; the message says why."""


def read_state(db: Database) -> tuple[TradingState, str]:
    row = db.conn.execute("SELECT trading_state, state_reason FROM engine WHERE id = 1").fetchone()
    if not row:
        return TradingState.ACTIVE, ""
    return TradingState(row[0]), row[1] or ""


def check_transition(
    current: TradingState, target: TradingState, confirm: bool, reason: str
) -> None:
    leaving_halt = current is TradingState.HALTED and target is not TradingState.HALTED
    if leaving_halt and (not confirm or not reason.strip()):
        raise TransitionRefused(
            "trading is HALTED: resuming needs an explicit confirmation and a reason"
        )


def set_state(
    db: Database,
    target: TradingState,
    reason: str,
    actor: str,
    now: int,
    *,
    confirm: bool = False,
) -> TradingState:
    """Change the trading state (not committed: the caller's transaction owns it).

    Returns the previous state. Raises TransitionRefused when not allowed.
    """
    current, _ = read_state(db)
    check_transition(current, target, confirm, reason)
    db.conn.execute(
        "UPDATE engine SET trading_state = ?, state_reason = ?, state_changed_at = ? WHERE id = 1",
        (target.value, reason, now),
    )
    append_audit(
        db,
        actor,
        "state_change",
        {"from": current.value, "to": target.value, "reason": reason},
        ts=now,
    )
    return current
