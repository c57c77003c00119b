"""The risk gate: every check on one intent, in a stable order, as typed verdicts.

Checks are pure functions `(intent, ctx, settings) -> Verdict`, one module per
family. Sanity checks (`trading_state`, `quantity`, `price`, `exit_size`) apply
to every intent. The others guard against new exposure; an intent that shrinks an
existing position (an EXIT or FLATTEN within it) passes them with the reason
"reduces exposure", so no loss limit can ever keep the engine in a position.
A check that raises is a denial (fail closed), logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from engine.config import RiskSettings
from engine.domain import Intent, Verdict
from engine.market.calendar import MarketCalendar
from engine.risk import capital, limits, market, state, trade
from engine.risk.context import GUARDS, RiskContext, non_finite, reduces_exposure

logger = logging.getLogger(__name__)

Check = Callable[[Intent, RiskContext, RiskSettings], Verdict]

ALWAYS: tuple[tuple[str, Check], ...] = (
    ("trading_state", state.trading_state),
    ("quantity", trade.quantity),
    ("price", trade.price),
    ("exit_size", trade.exit_size),
)
ENTRY_ONLY: tuple[tuple[str, Check], ...] = (
    ("health", state.health),
    ("stop_loss", trade.stop_loss),
    ("risk_per_trade", trade.risk_per_trade),
    ("reward_risk", trade.reward_risk),
    ("daily_loss", limits.daily_loss),
    ("max_drawdown", limits.max_drawdown),
    ("consecutive_losses", limits.consecutive_losses),
    ("trades_per_day", limits.trades_per_day),
    ("order_rate", limits.order_rate),
    ("order_fill_ratio", limits.order_fill_ratio),
    ("cooldown", limits.cooldown),
    ("volatility", market.volatility),
    ("market_hours", market.market_hours),
    ("blackout", market.blackout),
    ("buying_power", capital.buying_power_check),
    ("position_qty", capital.position_qty),
    ("position_notional", capital.position_notional),
    ("open_positions", capital.open_positions),
    ("gross_exposure", capital.gross_exposure),
    ("net_exposure", capital.net_exposure),
    ("correlated_exposure", capital.correlated_exposure),
)
CHECK_NAMES: tuple[str, ...] = tuple(n for n, _ in ALWAYS + ENTRY_ONLY)
REDUCES_EXPOSURE = "reduces exposure"


class RiskGate:
    """`RiskGate(settings.risk, calendar)`; the calendar is optional (no calendar:
    markets always open, no blackouts, unless the context says otherwise)."""

    def __init__(self, settings: RiskSettings, calendar: MarketCalendar | None = None):
        self.settings = settings
        self.calendar = calendar

    @classmethod
    def from_settings(
        cls, settings: RiskSettings, exchanges: Mapping[str, str] | None = None
    ) -> RiskGate:
        """A gate with the exchange calendars (`exchanges`, else the configured ones)
        and the events file.

        Reads the events file once, so a bad row stops the start (EventsFileError,
        naming file and line) instead of surfacing in the first cycle.
        """
        calendar = MarketCalendar.from_settings(
            settings.exchanges if exchanges is None else exchanges, settings.events_file
        )
        calendar.blackouts()
        return cls(settings, calendar)

    def evaluate(self, intent: Intent, ctx: RiskContext) -> list[Verdict]:
        """One verdict per check, in `CHECK_NAMES` order."""
        return list(self._verdicts(intent, ctx, passed_over=True))

    def check(self, intent: Intent, ctx: RiskContext) -> Verdict:
        """The first denial, else an allowed verdict named "all". The checks after
        a denial are not run, and an intent that reduces exposure skips the
        entry-only checks instead of collecting their "reduces exposure" verdicts:
        the answer is the same as `evaluate`'s first denial, at a fraction of the work."""
        for verdict in self._verdicts(intent, ctx, passed_over=False):
            if not verdict.allowed:
                return verdict
        return Verdict.ok("all")

    def _verdicts(
        self, intent: Intent, ctx: RiskContext, *, passed_over: bool
    ) -> Iterator[Verdict]:
        """The verdicts in `CHECK_NAMES` order, run as they are asked for; with
        `passed_over`, the entry-only checks an exposure-reducing intent passes by
        rule are listed too."""
        ctx = self._with_calendar(intent, ctx)
        figures = _Figures(intent, ctx)
        for name, fn in ALWAYS:
            yield self._run(name, fn, intent, ctx, figures)
        if reduces_exposure(intent, ctx):
            if passed_over:
                yield from (Verdict(True, name, REDUCES_EXPOSURE) for name, _ in ENTRY_ONLY)
            return
        for name, fn in ENTRY_ONLY:
            yield self._run(name, fn, intent, ctx, figures)

    def _run(
        self, name: str, fn: Check, intent: Intent, ctx: RiskContext, figures: _Figures
    ) -> Verdict:
        try:
            guard = GUARDS.get(fn)
            if guard is None:
                return fn(intent, ctx, self.settings)
            problem = figures.problem(guard.account)
            if problem is not None:
                return Verdict.deny(guard.name, f"fail closed: {problem}")
            return guard.check(intent, ctx, self.settings)
        except Exception as exc:
            logger.exception("risk check %s failed on %s %s", name, intent.side, intent.symbol)
            return Verdict.deny(name, f"check failed: {type(exc).__name__}: {exc}")

    def _with_calendar(self, intent: Intent, ctx: RiskContext) -> RiskContext:
        if self.calendar is None:
            return ctx
        changes: dict[str, object] = {}
        if ctx.market_open is None:
            why = self.calendar.closed_reason(intent.symbol, ctx.now)
            changes["market_open"] = {intent.symbol: why is None}
            changes["closed_reasons"] = {intent.symbol: why} if why else {}
        if ctx.blackouts is None:
            changes["blackouts"] = self.calendar.blackouts()
        return ctx.adjusted(**changes) if changes else ctx


class _Figures:
    """`non_finite` of one intent and context, computed at most once per kind."""

    def __init__(self, intent: Intent, ctx: RiskContext) -> None:
        self._intent, self._ctx = intent, ctx
        self._found: dict[bool, str | None] = {}

    def problem(self, account: bool) -> str | None:
        if account not in self._found:
            self._found[account] = non_finite(self._intent, self._ctx, account=account)
        return self._found[account]
