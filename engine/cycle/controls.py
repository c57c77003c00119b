"""Trading-state control: the one place that changes the trading state
(docs/ARCHITECTURE.md, Trading state).

ACTIVE, PAUSED, HALTED. The state lives in the `engine` row and in memory here;
every change is an audit record with who, when and why. Leaving HALTED needs an
explicit confirmation and a reason. The emergency stop (HALTED, cancel every
open order, close every position at market, retried until flat) and the
operator's flatten live here too, and so does the state the gate reads: made
stricter by a stop or pause still waiting in the queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.alerts.audit import append_audit
from engine.cycle.market import MarketClock
from engine.cycle.router import OrderRouter
from engine.domain import ExitReason, Intent, OrderType, Purpose, Severity, Side, TradingState
from engine.execution.oms import Oms
from engine.execution.portfolio import Portfolio
from engine.risk.daily import DailyFacts
from store import engine_row
from store.commands import CommandKind, pending_stop


class TransitionRefused(ValueError):
    """The requested state change is not allowed; the message says why."""


def read_state(db: Database) -> tuple[TradingState, str]:
    row = engine_row.read_state(db.conn)
    if row is None:
        return TradingState.ACTIVE, ""
    return TradingState(row[0]), row[1]


def check_transition(
    current: TradingState, target: TradingState, confirm: bool, reason: str
) -> None:
    leaving_halt = current is TradingState.HALTED and target is not TradingState.HALTED
    if leaving_halt and (not confirm or not reason.strip()):
        raise TransitionRefused(
            "trading is HALTED: resuming needs an explicit confirmation and a reason"
        )


class Controls:
    def __init__(
        self,
        db: Database,
        wall: Callable[[], int],
        market: MarketClock,
        *,
        oms: Oms,
        portfolio: Portfolio,
        daily: DailyFacts,
        alerts: Alerts,
        symbols: tuple[str, ...],
    ) -> None:
        self.db = db
        self.wall = wall
        self.market = market
        self.oms = oms
        self.portfolio = portfolio
        self.daily = daily
        self.alerts = alerts
        self.symbols = symbols
        self.router: OrderRouter | None = None  # set once the router exists
        self.state, self.state_reason = read_state(db)
        self.flattening = self.state is TradingState.HALTED
        self.flatten_reason = ExitReason.EMERGENCY_STOP

    def effective_state(self) -> TradingState:
        """The trading state, made stricter by a stop or pause still waiting in the
        queue, so an operator's stop takes effect even in the middle of a cycle."""
        if self.state is TradingState.HALTED:
            return self.state
        waiting = pending_stop(self.db.conn)
        if waiting is None:
            return self.state
        return TradingState.HALTED if waiting is CommandKind.EMERGENCY_STOP else TradingState.PAUSED

    def set_state(
        self, target: TradingState, reason: str, actor: str, *, confirm: bool = False
    ) -> TradingState:
        """Change the trading state (not committed: the caller's transaction owns it).

        Returns the previous state. Raises TransitionRefused when not allowed."""
        now = self.wall()
        current, _ = read_state(self.db)
        check_transition(current, target, confirm, reason)
        engine_row.write_state(self.db.conn, target.value, reason, now)
        append_audit(
            self.db,
            actor,
            "state_change",
            {"from": current.value, "to": target.value, "reason": reason},
            ts=now,
        )
        engine_row.state_changed_in_market(self.db.conn, self.market.now)
        self.daily.state_changed(target, self.market.now)
        self.state, self.state_reason = target, reason
        if target is not TradingState.HALTED:
            self.flattening = False
        return current

    def halt(self, reason: str, actor: str) -> None:
        if self.state is not TradingState.HALTED:
            self.set_state(TradingState.HALTED, reason, actor)

    def pause(self, reason: str, actor: str) -> str:
        if self.state is TradingState.HALTED:
            raise TransitionRefused("trading is HALTED; resume it (with a reason) before pausing")
        if self.state is TradingState.PAUSED:
            return "already PAUSED"
        self.set_state(TradingState.PAUSED, reason, actor)
        return "PAUSED: no new entries; exits, stops and cancels continue"

    def resume(self, reason: str, actor: str, *, confirm: bool) -> str:
        if self.state is TradingState.ACTIVE:
            return "already ACTIVE"
        if self.state is TradingState.PAUSED and not reason:
            reason = "resumed by operator"
        self.set_state(TradingState.ACTIVE, reason, actor, confirm=confirm)
        return f"ACTIVE ({reason})"

    def flatten(self, symbol: str | None, actor: str) -> str:
        """The operator's flatten: cancel the symbol's (or every) open order, close
        its position at market, and pause. Raises ValueError for a symbol not traded."""
        symbols = {symbol.upper()} if symbol else None
        if symbols and not symbols & set(self.symbols):
            raise ValueError(f"unknown symbol {symbol!r}; trading {', '.join(self.symbols)}")
        canceled = sum(
            1
            for o in self.oms.open_orders()
            if (symbols is None or o.symbol in symbols)
            and self.oms.cancel(o.client_order_id) is not None
        )
        sent = self.flatten_step(symbols)
        what = f"{symbol}" if symbols else "all positions"
        if self.state is TradingState.ACTIVE:
            self.set_state(TradingState.PAUSED, f"after manual flatten of {what}", actor)
        flat = "flat" if self.is_flat(symbols) else "closing orders working"
        return (
            f"flatten {what}: canceled {canceled} orders, sent {sent} closing orders,"
            f" {flat}; {self.state}"
        )

    def flatten_step(
        self, symbols: set[str] | None = None, reason: ExitReason = ExitReason.FLATTEN
    ) -> int:
        """Send a closing market order for every open position not already being
        closed; returns how many were sent."""
        assert self.router is not None
        working = {o.symbol for o in self.oms.open_orders() if o.purpose is Purpose.FLATTEN}
        sent = 0
        ctx = self.router.risk_context(self.market.now)
        for symbol, position in list(self.portfolio.positions.items()):
            if position.qty == 0 or symbol in working:
                continue
            if symbols is not None and symbol not in symbols:
                continue
            intent = Intent(
                symbol=symbol,
                side=Side.SELL if position.qty > 0 else Side.BUY,
                qty=abs(position.qty),
                purpose=Purpose.FLATTEN,
                order_type=OrderType.MARKET,
                reason=str(reason),
                exit_reason=reason,
            )
            if self.router.submit(intent, ctx=ctx) is not None:
                sent += 1
        return sent

    def is_flat(self, symbols: set[str] | None = None) -> bool:
        return all(
            p.qty == 0
            for s, p in self.portfolio.positions.items()
            if symbols is None or s in symbols
        )

    def emergency_stop(
        self, actor: str, reason: str, exit_reason: ExitReason = ExitReason.EMERGENCY_STOP
    ) -> str:
        """HALTED, cancel every open order, close every position at market; the
        monitor keeps retrying until flat. Returns a summary."""
        started = time.perf_counter()
        self.halt(reason, actor)
        self.db.conn.commit()  # the halt is durable before anything else happens
        canceled = self.oms.cancel_all()
        self.flattening = True
        self.flatten_reason = exit_reason
        sent = self.flatten_step(reason=exit_reason)
        elapsed = (time.perf_counter() - started) * 1000
        summary = f"HALTED; canceled {canceled} orders; sent {sent} closing orders"
        if self.is_flat():
            self.flattening = False
            summary += f"; flat in {elapsed:.0f} ms"
            title, key = "Emergency stop: trading halted, book flat", None
        else:
            summary += "; flattening continues until flat"
            title, key = "Emergency stop: trading halted, flattening", "estop-flattening"
        self.alerts.raise_(
            Severity.CRITICAL, "control", title, f"{reason} (by {actor}); {summary}", dedupe_key=key
        )
        self.db.conn.commit()
        return summary

    def continue_flattening(self) -> None:
        """Monitor step while HALTED: retry closing orders until the book is flat."""
        if not self.flattening:
            return
        self.flatten_step(reason=self.flatten_reason)
        if self.is_flat():
            self.flattening = False
            self.alerts.raise_(
                Severity.CRITICAL,
                "control",
                "Emergency stop complete: book flat",
                "every position is closed; trading stays HALTED until resumed",
            )
        self.db.conn.commit()

    def halt_in_memory(self, reason: str) -> None:
        """The store refused the HALTED write: at least nothing new trades in this
        process before it stops."""
        self.state, self.state_reason = TradingState.HALTED, reason
