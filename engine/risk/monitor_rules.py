"""The monitor's account and health rules, one rule per function.

Each rule looks at one step's `Look` and returns a `Verdict`: the actions it asks
for and the alert condition it holds active (edge-triggered by `transitions`).
`Monitor` runs them in `ACCOUNT_RULES` order, then the position rules."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.config import RiskSettings
from engine.domain import Severity, TradingState
from engine.market.calendar import MarketCalendar
from engine.risk import limits
from engine.risk.context import RiskContext, fmt_money, fmt_pct
from engine.risk.monitor_io import (
    DAY_LIMIT_LIFTED,
    DEADMAN_KEY,
    BlockEntries,
    KillSwitch,
    MonitorAction,
    MonitorInput,
    Pause,
    RaiseAlert,
    TrailState,
)


def hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S UTC")


def day_and_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class Look:
    """One step's view, worked out once and shared by every rule."""

    inp: MonitorInput
    settings: RiskSettings
    stale: Mapping[str, int]  # symbol -> its last bar's time, for symbols gone stale
    disconnected_since: int | None
    trails: Mapping[str, TrailState]
    ctx: RiskContext  # inp.ctx, read by every rule
    fault: str | None  # `equity_fault_reason(ctx)`: two rules read it


@dataclass(frozen=True, slots=True)
class Verdict:
    actions: tuple[MonitorAction, ...] = ()
    alert: RaiseAlert | None = None  # a condition active now, keyed by its dedupe_key


NOTHING = Verdict()


def stale_symbols(
    settings: RiskSettings, calendar: MarketCalendar | None, inp: MonitorInput
) -> dict[str, int]:
    """Symbols that missed too many bars, with the time of their last bar. Only
    open market time counts (with a calendar): a night, weekend or holiday is not stale."""

    def missed(symbol: str, last_ts: int) -> float:
        now, bar_ms = inp.ctx.now, inp.bar_interval_ms
        if calendar is None:
            return (now - last_ts) / bar_ms if now > last_ts else 0.0
        return calendar.missed_bars(symbol, last_ts, now, bar_ms)

    limit = settings.stale_bar_intervals
    return {s: b.ts for s, b in inp.bars.items() if missed(s, b.ts) > limit}


def disconnected_since(inp: MonitorInput) -> int | None:
    """When the broker went away (wall clock), None while it is connected."""
    if inp.ctx.broker_connected:
        return None
    return inp.state.disconnected_since or inp.wall


def equity_fault_reason(ctx: RiskContext) -> str | None:
    equity, start, peak = ctx.equity, ctx.day_start_equity, ctx.peak_equity
    if (
        math.isfinite(equity)
        and (start is None or math.isfinite(start))
        and (peak is None or math.isfinite(peak))
    ):
        return None  # the usual answer, without naming the figures
    for name, value in (
        ("equity", ctx.equity),
        ("day-start equity", ctx.start_equity),
        ("peak equity", ctx.peak_equity if ctx.peak_equity is not None else ctx.equity),
    ):
        if not math.isfinite(value):
            return f"{name} is {value!r}; the loss limits cannot be checked"
    return None


def equity_fault(look: Look) -> Verdict:
    """NaN compares false with every limit: the kill switch could never fire, so
    trading pauses until the figures can be trusted again."""
    fault = look.fault
    if fault is None:
        return NOTHING
    alert = RaiseAlert(
        Severity.CRITICAL, "Account figures are not numbers: trading paused", fault, "equity-fault"
    )
    active = look.ctx.trading_state is TradingState.ACTIVE
    return Verdict((Pause(f"equity fault: {fault}"),) if active else (), alert)


def loss_limits(look: Look) -> Verdict:
    """The kill switch: the day's loss or the drawdown from the peak reached its limit."""
    ctx, s = look.ctx, look.settings
    if ctx.trading_state is TradingState.HALTED or look.fault is not None:
        return NOTHING
    lost, base = limits.loss_today(ctx), ctx.start_equity
    if base > 0 and lost >= s.daily_loss * base:
        return Verdict(
            (
                KillSwitch(
                    f"daily loss {fmt_money(lost)} = {fmt_pct(lost / base)} of day-start"
                    f" equity {fmt_money(base)} reached the {fmt_pct(s.daily_loss)} limit"
                ),
            )
        )
    dd = limits.drawdown(ctx)
    if dd >= s.max_drawdown:
        return Verdict(
            (
                KillSwitch(
                    f"drawdown {fmt_pct(dd)} from the peak {fmt_money(ctx.peak)} reached the"
                    f" {fmt_pct(s.max_drawdown)} limit"
                ),
            )
        )
    return NOTHING


def _day_limit(look: Look, reason: str, severity: Severity, title: str, key: str) -> Verdict:
    """A limit of the trading day: entries wait for the next one, exits go on."""
    next_day = look.inp.next_day
    until = f" until {day_and_time(next_day)}" if next_day is not None else ""
    message = f"{reason}; no new entries{until}, the next trading day; exits go on"
    alert = RaiseAlert(severity, title, message, key)
    return Verdict((BlockEntries(reason, until=next_day),), alert)


def losing_streak(look: Look) -> Verdict:
    ctx, s = look.ctx, look.settings
    if ctx.consecutive_losses < s.max_consecutive_losses:
        return NOTHING
    reason = (
        f"{ctx.consecutive_losses} losing trades in a row today (limit {s.max_consecutive_losses})"
    )
    title = "Entries paused for the day: losing streak"
    return _day_limit(look, reason, Severity.HIGH, title, "losing-streak")


def trades_per_day(look: Look) -> Verdict:
    ctx, s = look.ctx, look.settings
    if ctx.trades_today < s.max_trades_per_day:
        return NOTHING
    reason = f"{ctx.trades_today} trades today (limit {s.max_trades_per_day})"
    title = "Entries paused for the day: trade limit"
    return _day_limit(look, reason, Severity.WARNING, title, "trades-per-day")


def broker_connection(look: Look) -> Verdict:
    if look.disconnected_since is None:
        return NOTHING
    reason = f"broker disconnected since {hhmm(look.disconnected_since)}"
    alert = RaiseAlert(
        Severity.HIGH,
        "Broker disconnected: entries blocked",
        f"{reason}; exits and stops still run",
        "broker-disconnected",
    )
    return Verdict((BlockEntries(reason),), alert)


def stale_data(look: Look) -> Verdict:
    stale = look.stale
    if not stale:
        return NOTHING
    reason = f"no bar for {', '.join(sorted(stale))} since {hhmm(min(stale.values()))}"
    alert = RaiseAlert(
        Severity.WARNING,
        "Stale market data: entries blocked",
        f"{reason} (limit {look.settings.stale_bar_intervals:g} bar intervals)",
        "stale-data",
    )
    return Verdict((BlockEntries(reason, frozenset(stale)),), alert)


def deadman(look: Look) -> Verdict:
    inp = look.inp
    alert = deadman_alert(
        inp.last_cycle_at,
        inp.started_at,
        inp.wall,
        inp.cycle_interval_ms,
        look.settings.deadman_intervals,
    )
    return NOTHING if alert is None else Verdict(alert=alert)


def deadman_alert(
    last_cycle_at: int | None,
    started_at: int | None,
    now: int,
    cycle_interval_ms: int,
    intervals: float,
) -> RaiseAlert | None:
    """The dead-man's switch: no completed cycle for `intervals` cycle intervals.

    One rule for the monitor (on the trading thread) and the watchdog (on its own
    thread, for when the trading thread is stuck): same limit, title and key.
    """
    last = last_cycle_at if last_cycle_at is not None else started_at
    if last is None:
        return None
    silent = now - last
    limit = intervals * cycle_interval_ms
    if silent < limit:
        return None
    return RaiseAlert(
        Severity.CRITICAL,
        "Dead-man's switch: no completed cycle",
        f"no cycle completed for {silent / 1000:.1f} s"
        f" (limit {limit / 1000:.1f} s); positions are not being managed by the cycle",
        DEADMAN_KEY,
    )


ACCOUNT_RULES: tuple[Callable[[Look], Verdict], ...] = (
    equity_fault,
    loss_limits,
    losing_streak,
    trades_per_day,
    broker_connection,
    stale_data,
    deadman,
)


def transitions(
    before: frozenset[str], active: Mapping[str, RaiseAlert], now: int
) -> list[MonitorAction]:
    """Edge-triggered alerts: each condition once when it starts, an INFO note when it clears."""
    if not before and not active:
        return []  # nothing held before or now: most steps
    out: list[MonitorAction] = [a for k, a in sorted(active.items()) if k not in before]
    for key in sorted(before - set(active)):
        lifted = DAY_LIMIT_LIFTED.get(key)
        if lifted is None:
            out.append(
                RaiseAlert(Severity.INFO, f"Recovered: {key}", f"cleared at {hhmm(now)}", key)
            )
        else:
            # Its own alert, not folded into the limit's: the operator sees it lift.
            message = f"entries allowed again from {day_and_time(now)}"
            out.append(RaiseAlert(Severity.INFO, lifted, message, f"{key}:lifted"))
    return out
