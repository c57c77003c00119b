"""Execute the operator's commands on the trading thread.

The command job drains pending `commands` rows every 250 ms, oldest first, and
marks each done or failed with a result the cockpit and CLI show. A bad command
fails with a clear result and never stops the engine. Every command is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engine.audit import append_audit
from engine.control import TransitionRefused
from engine.cycle import Trader
from engine.domain import TradingState
from state.commands import Command, CommandKind, CommandStatus, pending_commands

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
    confirm = bool(cmd.args.get("confirm"))
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


HANDLERS: dict[str, Callable[[Trader, Command], str]] = {
    CommandKind.PAUSE: _pause,
    CommandKind.RESUME: _resume,
    CommandKind.FLATTEN: _flatten,
    CommandKind.EMERGENCY_STOP: _emergency_stop,
}


def run_pending(trader: Trader, extra: dict[str, ExtraHandler] | None = None) -> int:
    """Execute every pending command; returns how many ran."""
    conn = trader.db.conn
    commands = pending_commands(conn)
    # An emergency stop jumps the queue: nothing queued before it may trade first.
    commands.sort(key=lambda c: (c.kind != CommandKind.EMERGENCY_STOP, c.id))
    for cmd in commands:
        handler = HANDLERS.get(cmd.kind)
        try:
            if handler is not None:
                result, status = handler(trader, cmd), CommandStatus.DONE
            elif extra and cmd.kind in extra:
                result, status = extra[cmd.kind](cmd), CommandStatus.DONE
            else:
                raise CommandFailed(f"no handler for command {cmd.kind!r} in this engine")
        except CommandFailed as exc:
            result, status = str(exc), CommandStatus.FAILED
        except Exception as exc:
            log.exception("command %s failed", cmd.kind)
            conn.rollback()
            result, status = f"{type(exc).__name__}: {exc}", CommandStatus.FAILED
        append_audit(
            trader.db,
            cmd.requested_by or "operator",
            f"command:{cmd.kind}",
            {"id": cmd.id, "args": cmd.args, "status": status.value, "result": result},
            ts=trader.clock(),
        )
        conn.execute(
            "UPDATE commands SET status = ?, result = ?, done_at = ? WHERE id = ?",
            (status.value, result, trader.clock(), cmd.id),
        )
        conn.commit()
        log.info("command %s #%d %s: %s", cmd.kind, cmd.id, status, result)
    return len(commands)
