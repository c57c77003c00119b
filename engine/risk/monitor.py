"""The monitor: every second, what must happen to protect the account now.

`Monitor(settings.risk).step(MonitorInput) -> MonitorResult(actions, state)` is
pure: it decides, the runner acts. The runner keeps `result.state` (trailing
stops' best prices, when the broker went away, which alert conditions are
active) and passes it back in the next input.

Actions, and what the runner does with each:

- `ExitPosition(symbol, side, qty, reason, kind)`: submit `action.intent()` (a
  market EXIT of the whole position) through the gate. Not emitted while an exit
  for the symbol is already working.
- `MoveStop(symbol, client_order_id, stop, reason)`: the trailing stop moved past
  the resting stop order; modify that order to `stop`. Emitted instead of an exit
  while a resting stop guards the position (the broker fills it where it trades).
- `KillSwitch(reason)`: the emergency stop (HALTED, cancel all, flatten, CRITICAL
  alert). Not emitted while already HALTED.
- `Pause(reason)`: set PAUSED with this reason; only for a fault the monitor cannot
  judge past (an equity that is not a number), so it stays until someone acts.
  Only emitted while ACTIVE; a CRITICAL `RaiseAlert` comes with it.
- `BlockEntries(reason, symbols)`: level-triggered; while any is emitted the
  cycle denies entries (`RiskContext.entries_blocked` / `stale_symbols`); when
  none is emitted, entries are free again. `symbols` empty = every symbol.
- `RaiseAlert(severity, title, message, dedupe_key)`: raise it. Edge-triggered:
  once when a condition starts, and an INFO note when it clears.

Limits that belong to the trading day (the losing streak, trades per day) block
entries until the next trading day and lift by themselves with an INFO alert;
exits go on meanwhile. Only the kill switch (HALTED), a fault's pause and an
operator's pause stay until someone acts.

Two clocks: `ctx.now` is market time (staleness, time stops, day limits);
`wall_now` is the wall clock (the dead-man's switch, how long the broker has been
away), because those are about this process being alive, not about the market.
"""

from __future__ import annotations

from engine.config import RiskSettings
from engine.market.calendar import MarketCalendar
from engine.risk import monitor_rules, position_rules
from engine.risk.monitor_io import (
    MonitorAction,
    MonitorInput,
    MonitorResult,
    MonitorState,
    RaiseAlert,
    TrailState,
)
from engine.risk.monitor_rules import (
    ACCOUNT_RULES,
    NOTHING,
    Look,
    equity_fault_reason,
    transitions,
)


class Monitor:
    """Runs the rules: the account and health rules (`monitor_rules.ACCOUNT_RULES`),
    then the position rules (`position_rules.positions`), then turns the alert
    conditions into edges. `calendar` tells which hours are open, so a closed market
    is not stale data."""

    def __init__(self, settings: RiskSettings, calendar: MarketCalendar | None = None):
        self.settings = settings
        self.calendar = calendar

    def evaluate(self, inp: MonitorInput) -> list[MonitorAction]:
        """The actions only; use `step` to keep trailing stops and alert state."""
        return list(self.step(inp).actions)

    def step(self, inp: MonitorInput) -> MonitorResult:
        ctx = inp.ctx
        look = Look(
            inp,
            self.settings,
            self.stale_symbols(inp),
            monitor_rules.disconnected_since(inp),
            position_rules.trails(inp),
            ctx,
            equity_fault_reason(ctx),
        )
        actions: list[MonitorAction] = []
        active: dict[str, RaiseAlert] = {}
        for rule in ACCOUNT_RULES:
            verdict = rule(look)
            if verdict is NOTHING:
                continue  # most rules on most steps: nothing to add
            actions += verdict.actions
            if verdict.alert is not None:
                active[verdict.alert.dedupe_key] = verdict.alert
        actions += position_rules.positions(look).actions
        actions += transitions(inp.state.conditions, active, ctx.now)
        state = MonitorState(look.trails, look.disconnected_since, frozenset(active))
        return MonitorResult(tuple(actions), state)

    def stale_symbols(self, inp: MonitorInput) -> dict[str, int]:
        """Symbols that missed too many bars, with the time of their last bar."""
        return monitor_rules.stale_symbols(self.settings, self.calendar, inp)

    def trail_level(self, trail: TrailState | None, atr: float | None) -> float | None:
        """The trailing stop's price for a position, None when trailing is off or unknown."""
        return position_rules.trail_level(self.settings, trail, atr)
