"""Execute the operator's commands on the trading thread.

The command job drains pending `commands` rows every 250 ms, emergency stops
first, then oldest first, and marks each done or failed with a result the
cockpit and CLI show. Every row is checked and applied on its own: a malformed
row is marked failed with the reason and the queue moves on; nothing in a row
can stop the engine or hold up the rows behind it. Every command is audited,
under the requester the row names once it has passed `parse_row`.

Exactly once: a row is claimed (status `running`) in the same transaction as
its handler's effects. A crash before the handler's first commit rolls both
back and the row runs again on restart; a crash after it leaves the row
`running`, and the restarted engine marks it failed instead of running it a
second time (`recover_interrupted`). Effects that must not repeat are committed
before they leave the process (the emergency stop commits HALTED first, the OMS
commits an order before the broker sees it), so the claim is durable before they
are; what may leave uncommitted is harmless twice (a cancel, a training request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engine.alerts.alerts import acknowledge
from engine.alerts.audit import append_audit
from engine.cycle import Trader
from engine.domain import Severity, TradingState
from engine.process.control import TransitionRefused
from store.commands import (
    ENGINE_ACTOR,
    Command,
    CommandError,
    CommandKind,
    CommandRow,
    CommandStatus,
    parse_row,
    pending_rows,
)
from store.db import is_store_full

log = logging.getLogger(__name__)

ExtraHandler = Callable[[Command], str]


class CommandFailed(Exception):
    """The command could not be carried out; the message is its result."""


def _pause(trader: Trader, cmd: Command) -> str:
    if trader.state is TradingState.HALTED:
        raise CommandFailed("trading is HALTED; resume it (with a reason) before pausing")
    if trader.state is TradingState.PAUSED:
        return "already PAUSED"
    trader.set_state(
        TradingState.PAUSED, cmd.args.get("reason") or "paused by operator", cmd.requested_by
    )
    return "PAUSED: no new entries; exits, stops and cancels continue"


def _resume(trader: Trader, cmd: Command) -> str:
    if trader.state is TradingState.ACTIVE:
        return "already ACTIVE"
    confirm = cmd.args.get("confirm") is True
    reason = str(cmd.args.get("reason") or "")
    if trader.state is TradingState.PAUSED and not reason:
        reason = "resumed by operator"
    try:
        trader.set_state(TradingState.ACTIVE, reason, cmd.requested_by, confirm=confirm)
    except TransitionRefused as exc:
        raise CommandFailed(str(exc)) from None
    return f"ACTIVE ({reason})"


def _flatten(trader: Trader, cmd: Command) -> str:
    symbol = cmd.args.get("symbol")
    symbols = {str(symbol).upper()} if symbol else None
    if symbols and not set(symbols) & set(trader.feed.symbols):
        raise CommandFailed(f"unknown symbol {symbol!r}; trading {', '.join(trader.feed.symbols)}")
    canceled = sum(
        1
        for o in trader.oms.open_orders()
        if (symbols is None or o.symbol in symbols)
        and trader.oms.cancel(o.client_order_id) is not None
    )
    sent = trader.flatten_step(symbols)
    what = f"{symbol}" if symbols else "all positions"
    if trader.state is TradingState.ACTIVE:
        trader.set_state(TradingState.PAUSED, f"after manual flatten of {what}", cmd.requested_by)
    flat = "flat" if trader.is_flat(symbols) else "closing orders working"
    return (
        f"flatten {what}: canceled {canceled} orders, sent {sent} closing orders,"
        f" {flat}; {trader.state}"
    )


def _emergency_stop(trader: Trader, cmd: Command) -> str:
    reason = str(cmd.args.get("reason") or "emergency stop by operator")
    return trader.emergency_stop(cmd.requested_by, reason)


def _ack_alert(trader: Trader, cmd: Command) -> str:
    alert_id = None if cmd.args.get("all") is True else int(cmd.args["id"])
    n = acknowledge(trader.db, alert_id, cmd.requested_by, trader.clock())
    if alert_id is None:
        return f"acknowledged {n} alert(s)"
    if n == 0:
        raise CommandFailed(f"alert #{alert_id} does not exist or is already acknowledged")
    return f"acknowledged alert #{alert_id}"


def _cash_movement(trader: Trader, cmd: Command) -> str:
    try:
        amount = float(cmd.args.get("amount", 0.0))
        return trader.move_cash(amount, str(cmd.args.get("reason") or ""), cmd.requested_by)
    except (TypeError, ValueError) as exc:
        raise CommandFailed(str(exc)) from None


HANDLERS: dict[str, Callable[[Trader, Command], str]] = {
    CommandKind.PAUSE: _pause,
    CommandKind.RESUME: _resume,
    CommandKind.FLATTEN: _flatten,
    CommandKind.EMERGENCY_STOP: _emergency_stop,
    CommandKind.ACK_ALERT: _ack_alert,
    CommandKind.CASH_MOVEMENT: _cash_movement,
}


def run_pending(trader: Trader, extra: dict[str, ExtraHandler] | None = None) -> int:
    """Apply every pending command, each on its own; returns how many were taken."""
    trader.db.conn.commit()  # the claims below share no transaction with earlier work
    rows = pending_rows(trader.db.conn)
    # An emergency stop jumps the queue: nothing queued before it may trade first.
    rows.sort(key=lambda r: (r.kind != CommandKind.EMERGENCY_STOP, r.id))
    for row in rows:
        try:
            _apply(trader, row, extra or {})
        except Exception:
            # The row's own failures are handled in _apply; this is the store itself
            # failing. Leave the row pending for the next tick and stop this one.
            trader.db.conn.rollback()
            raise
    return len(rows)


def _apply(trader: Trader, row: CommandRow, extra: dict[str, ExtraHandler]) -> None:
    conn = trader.db.conn
    try:
        cmd = parse_row(row)
    except CommandError as exc:
        _reject(trader, row, str(exc))
        return
    claimed = conn.execute(
        "UPDATE commands SET status = 'running' WHERE id = ? AND status = 'pending'", (cmd.id,)
    ).rowcount
    if not claimed:
        return
    handler = HANDLERS.get(cmd.kind)
    try:
        if handler is not None:
            result, status = handler(trader, cmd), CommandStatus.DONE
        elif cmd.kind in extra:
            result, status = extra[cmd.kind](cmd), CommandStatus.DONE
        else:
            raise CommandFailed(f"no handler for command {cmd.kind.value!r} in this engine")
    except CommandFailed as exc:
        conn.rollback()
        result, status = str(exc), CommandStatus.FAILED
    except Exception as exc:
        conn.rollback()
        if is_store_full(exc):
            raise  # the row stays pending; it runs once the store has room again
        log.exception("command %s #%d failed", cmd.kind, cmd.id)
        result, status = f"{type(exc).__name__}: {exc}", CommandStatus.FAILED
    _finish(trader, cmd.id, status, result)
    append_audit(
        trader.db,
        cmd.requested_by,
        f"command:{cmd.kind.value}",
        {"id": cmd.id, "args": cmd.args, "status": status.value, "result": result},
        ts=trader.clock(),
    )
    conn.commit()
    log.info("command %s #%d %s: %s", cmd.kind, cmd.id, status, result)


def _reject(trader: Trader, row: CommandRow, reason: str) -> None:
    """A row that does not parse: failed with the reason, audited and alerted once."""
    kind = str(row.kind)[:40]
    _finish(trader, row.id, CommandStatus.FAILED, f"rejected: {reason}")
    append_audit(
        trader.db,
        ENGINE_ACTOR,
        "command_rejected",
        {"id": row.id, "kind": kind, "reason": reason},
        ts=trader.clock(),
    )
    trader.alerts.raise_(
        Severity.WARNING,
        "commands",
        "Command rejected",
        f"command #{row.id} ({kind}): {reason}",
        dedupe_key="command-rejected",
    )
    trader.db.conn.commit()  # the alert logs it: one line per rejected row


def _finish(trader: Trader, command_id: int, status: CommandStatus, result: str) -> None:
    trader.db.conn.execute(
        "UPDATE commands SET status = ?, result = ?, done_at = ? WHERE id = ?",
        (status.value, result, trader.clock(), command_id),
    )


def recover_interrupted(trader: Trader) -> int:
    """At start: a row left `running` by a crash is failed, never applied again.

    Its effects up to its last commit stand (an emergency stop's HALTED does, and
    the flattening it started continues because HALTED means flatten).
    """
    conn = trader.db.conn
    ids = [r[0] for r in conn.execute("SELECT id FROM commands WHERE status = 'running'")]
    for command_id in ids:
        _finish(
            trader,
            command_id,
            CommandStatus.FAILED,
            "interrupted: the engine stopped while applying it; what it had committed"
            " stands, and it is not applied a second time",
        )
        append_audit(
            trader.db,
            ENGINE_ACTOR,
            "command_interrupted",
            {"id": command_id},
            ts=trader.clock(),
        )
    conn.commit()
    return len(ids)
