"""Execute the operator's commands on the trading thread.

The command job drains pending `commands` rows, emergency stops first, then
oldest first, and marks each done or failed with a result the
cockpit and CLI show. Every row is checked and applied on its own: a malformed
row is marked failed with the reason and the queue moves on; nothing in a row
can stop the engine or hold up the rows behind it. Every command is audited,
under the requester the row names once it has passed `parse_row`.

How long a command waits is bounded by what runs on the trading thread, not by a
polling period: the queue is looked at every 50 ms and again before every cycle
(`run_if_queued`), so a command queued before a cycle starts is applied before
that cycle trades. Looking costs one PRAGMA: the queue is read only when another
connection has committed since it was last drained (`data_version`), since only
the cockpit and the CLI, never the engine's own writer, queue rows.

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
from dataclasses import dataclass

from engine.alerts.alerts import acknowledge
from engine.alerts.audit import append_audit
from engine.cycle import Trader
from engine.cycle.controls import TransitionRefused
from engine.domain import Severity
from engine.execution.brokers.base import BrokerUnavailable
from engine.execution.reconcile import adopt_broker, reconcile
from engine.ml.jobs import Retrainer
from engine.ml.registry import RegistryError
from engine.ml.service import ModelService
from store.commands import (
    ENGINE_ACTOR,
    Command,
    CommandError,
    CommandKind,
    CommandRow,
    CommandStatus,
    claim,
    data_version,
    finish,
    parse_row,
    pending_rows,
    running_ids,
)
from store.db import is_store_full

log = logging.getLogger(__name__)


class CommandFailed(Exception):
    """The command could not be carried out; the message is its result."""


@dataclass
class CommandContext:
    """What the handlers act through: the trader's own operations, and the
    engine's services for the commands that are not the trader's."""

    trader: Trader
    retrainer: Retrainer | None = None
    model: ModelService | None = None  # the live model service, for the registry commands
    backtests: Callable[[Command], str] | None = None  # starts a backtest process
    # The writer's data_version when the queue was last drained empty; None until then.
    drained_at: int | None = None


def _unhandled(cmd: Command) -> CommandFailed:
    return CommandFailed(f"no handler for command {cmd.kind.value!r} in this engine")


def _pause(ctx: CommandContext, cmd: Command) -> str:
    reason = cmd.args.get("reason") or "paused by operator"
    try:
        return ctx.trader.controls.pause(str(reason), cmd.requested_by)
    except TransitionRefused as exc:
        raise CommandFailed(str(exc)) from None


def _resume(ctx: CommandContext, cmd: Command) -> str:
    confirm = cmd.args.get("confirm") is True
    reason = str(cmd.args.get("reason") or "")
    try:
        return ctx.trader.controls.resume(reason, cmd.requested_by, confirm=confirm)
    except TransitionRefused as exc:
        raise CommandFailed(str(exc)) from None


def _flatten(ctx: CommandContext, cmd: Command) -> str:
    symbol = cmd.args.get("symbol")
    try:
        return ctx.trader.controls.flatten(str(symbol) if symbol else None, cmd.requested_by)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None


def _emergency_stop(ctx: CommandContext, cmd: Command) -> str:
    reason = str(cmd.args.get("reason") or "emergency stop by operator")
    return ctx.trader.controls.emergency_stop(cmd.requested_by, reason)


def _ack_alert(ctx: CommandContext, cmd: Command) -> str:
    trader = ctx.trader
    alert_id = None if cmd.args.get("all") is True else int(cmd.args["id"])
    n = acknowledge(trader.db, alert_id, cmd.requested_by, trader.clock())
    if alert_id is None:
        return f"acknowledged {n} alert(s)"
    if n == 0:
        raise CommandFailed(f"alert #{alert_id} does not exist or is already acknowledged")
    return f"acknowledged alert #{alert_id}"


def _cash_movement(ctx: CommandContext, cmd: Command) -> str:
    try:
        amount = float(cmd.args.get("amount", 0.0))
        return ctx.trader.move_cash(amount, str(cmd.args.get("reason") or ""), cmd.requested_by)
    except (TypeError, ValueError) as exc:
        raise CommandFailed(str(exc)) from None


def _train(ctx: CommandContext, cmd: Command) -> str:
    if ctx.retrainer is None:
        raise _unhandled(cmd)
    if ctx.retrainer.request(f"requested by {cmd.requested_by}"):
        return "training started off the trading thread; the model registers when done"
    return "a training run is already in progress"


def _registry(ctx: CommandContext, cmd: Command) -> str:
    model = ctx.model
    if model is None:
        raise _unhandled(cmd)
    try:
        return model.handle_command(cmd.kind, cmd.args, actor=cmd.requested_by)
    except RegistryError as exc:
        raise CommandFailed(str(exc)) from None


def _backtest(ctx: CommandContext, cmd: Command) -> str:
    # Backtests and sweeps run in their own processes; the handler only starts them.
    if ctx.backtests is None:
        raise _unhandled(cmd)
    return ctx.backtests(cmd)


def _reconcile(ctx: CommandContext, cmd: Command) -> str:
    try:
        found = reconcile(ctx.trader, f"asked by {cmd.requested_by}")
    except BrokerUnavailable as exc:
        raise CommandFailed(f"the broker cannot answer: {exc}") from None
    if not found:
        return "the engine and the broker agree"
    return "trading halted; differences: " + "; ".join(d.describe() for d in found)


def _adopt(ctx: CommandContext, cmd: Command) -> str:
    try:
        return adopt_broker(ctx.trader, cmd.requested_by, str(cmd.args.get("reason", "")))
    except (BrokerUnavailable, ValueError) as exc:
        raise CommandFailed(str(exc)) from None


Handler = Callable[[CommandContext, Command], str]

HANDLERS: dict[str, Handler] = {
    CommandKind.PAUSE: _pause,
    CommandKind.RESUME: _resume,
    CommandKind.FLATTEN: _flatten,
    CommandKind.EMERGENCY_STOP: _emergency_stop,
    CommandKind.ACK_ALERT: _ack_alert,
    CommandKind.CASH_MOVEMENT: _cash_movement,
    CommandKind.TRAIN: _train,
    CommandKind.PROMOTE: _registry,
    CommandKind.ROLLBACK: _registry,
    CommandKind.RETIRE: _registry,
    CommandKind.BACKTEST: _backtest,
    CommandKind.RECONCILE: _reconcile,
    CommandKind.ADOPT_BROKER: _adopt,
}


def run_if_queued(ctx: CommandContext) -> int:
    """`run_pending` unless no other connection has committed since the queue was
    last drained (then nothing can be pending): cheap enough to call often."""
    conn = ctx.trader.db.conn
    # Inside a transaction the version is that of its snapshot: read the queue instead.
    unchanged = (
        ctx.drained_at is not None
        and not conn.in_transaction
        and data_version(conn) == ctx.drained_at
    )
    return 0 if unchanged else run_pending(ctx)


def run_pending(ctx: CommandContext) -> int:
    """Apply every pending command, each on its own; returns how many were taken."""
    conn = ctx.trader.db.conn
    conn.commit()  # the claims below share no transaction with earlier work
    # Read before the rows: a row committed after this changes the version again.
    version = data_version(conn)
    rows = pending_rows(conn)
    # An emergency stop jumps the queue: nothing queued before it may trade first.
    rows.sort(key=lambda r: (r.kind != CommandKind.EMERGENCY_STOP, r.id))
    for row in rows:
        try:
            _apply(ctx, row)
        except Exception:
            # The row's own failures are handled in _apply; this is the store itself
            # failing. Leave the row pending for the next tick and stop this one.
            conn.rollback()
            raise
    ctx.drained_at = version
    return len(rows)


def _run(ctx: CommandContext, cmd: Command) -> tuple[str, CommandStatus]:
    conn = ctx.trader.db.conn
    handler = HANDLERS.get(cmd.kind)
    try:
        if handler is None:
            raise _unhandled(cmd)
        return handler(ctx, cmd), CommandStatus.DONE
    except CommandFailed as exc:
        conn.rollback()
        return str(exc), CommandStatus.FAILED
    except Exception as exc:
        conn.rollback()
        if is_store_full(exc):
            raise  # the row stays pending; it runs once the store has room again
        log.exception("command %s #%d failed", cmd.kind, cmd.id)
        return f"{type(exc).__name__}: {exc}", CommandStatus.FAILED


def _apply(ctx: CommandContext, row: CommandRow) -> None:
    trader = ctx.trader
    try:
        cmd = parse_row(row)
    except CommandError as exc:
        _reject(trader, row, str(exc))
        return
    if not claim(trader.db.conn, cmd.id):
        return
    result, status = _run(ctx, cmd)
    finish(trader.db.conn, cmd.id, status, result, trader.clock())
    append_audit(
        trader.db,
        cmd.requested_by,
        f"command:{cmd.kind.value}",
        {"id": cmd.id, "args": cmd.args, "status": status.value, "result": result},
        ts=trader.clock(),
    )
    trader.db.conn.commit()
    log.info("command %s #%d %s: %s", cmd.kind, cmd.id, status, result)


def _reject(trader: Trader, row: CommandRow, reason: str) -> None:
    """A row that does not parse: failed with the reason, audited and alerted once."""
    kind = str(row.kind)[:40]
    finish(trader.db.conn, row.id, CommandStatus.FAILED, f"rejected: {reason}", trader.clock())
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


def recover_interrupted(trader: Trader) -> int:
    """At start: a row left `running` by a crash is failed, never applied again.

    Its effects up to its last commit stand (an emergency stop's HALTED does, and
    the flattening it started continues because HALTED means flatten).
    """
    conn = trader.db.conn
    ids = running_ids(conn)
    for command_id in ids:
        finish(
            conn,
            command_id,
            CommandStatus.FAILED,
            "interrupted: the engine stopped while applying it; what it had committed"
            " stands, and it is not applied a second time",
            trader.clock(),
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
