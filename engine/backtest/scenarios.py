"""Stress scenarios: named transformations of any data set, and historical windows
named by a date range.

A synthetic scenario strikes at the middle of the traded bars (the same moment for
every symbol), so the strategy has warmed up and positions are likely open:

- `gap`: an overnight gap of -20%: the bar opens 20% below the previous close and
  every later price is 20% lower;
- `vol3`: volatility x3 for a week: each bar's move and range are tripled for seven
  days, later moves are the original ones from the new level;
- `flash`: a flash crash of -10% that recovers within an hour: prices fall in a V to
  90% and are back by the end of the hour (on bars of an hour or more, one bar's low);
- `drought`: a liquidity drought: volume x0.05 for twenty days;
- `whipsaw`: twenty bars alternating +4% and -4%, then the original moves.

A historical window is `YYYY-MM[-DD]:YYYY-MM[-DD]` (e.g. 2008-09:2009-03), or one
of the names in `WINDOWS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from engine.domain import Bar

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WINDOWS = {
    "gfc": ("2008-09-01", "2009-03-31"),
    "covid": ("2020-02-15", "2020-04-30"),
    "dotcom": ("2000-03-01", "2002-10-31"),
    "flash2010": ("2010-05-01", "2010-05-31"),
}

Bars = dict[str, list[Bar]]


class ScenarioError(ValueError):
    """An unknown scenario or an unreadable window; says what is allowed."""


def _scaled(bar: Bar, k: float) -> Bar:
    return replace(bar, open=bar.open * k, high=bar.high * k, low=bar.low * k, close=bar.close * k)


def strike_time(bars: Mapping[str, list[Bar]]) -> int:
    times = sorted({b.ts for rows in bars.values() for b in rows if b.ts > 0})
    return times[len(times) // 2]


def gap(bars: Mapping[str, list[Bar]], at: int) -> Bars:
    return {s: [_scaled(b, 0.8) if b.ts >= at else b for b in rows] for s, rows in bars.items()}


def _reshape(
    rows: list[Bar], start: int, stop: int, move: Callable[[int, float], float]
) -> list[Bar]:
    """Rebuild closes from start to stop with each bar's return replaced by
    move(i, r); later bars keep their own returns from the new level."""
    out: list[Bar] = []
    level = 1.0
    prev_close: float | None = None
    i = 0
    for b in rows:
        if prev_close is None or b.ts < start:
            out.append(_scaled(b, level))
            prev_close = b.close
            continue
        r = b.close / prev_close - 1 if prev_close > 0 else 0.0
        prev_close = b.close
        new_r = move(i, r) if b.ts < stop else r
        i += 1 if b.ts < stop else 0
        new_close = out[-1].close * (1 + new_r)
        k = new_close / b.close if b.close > 0 else level
        level = k
        out.append(_scaled(b, k))
    return out


def vol3(bars: Mapping[str, list[Bar]], at: int) -> Bars:
    out: Bars = {}
    for s, rows in bars.items():
        reshaped = _reshape(rows, at, at + 7 * DAY_MS, lambda i, r: max(3 * r, -0.9))
        out[s] = [_widened(b) if at <= b.ts < at + 7 * DAY_MS else b for b in reshaped]
    return out


def _widened(b: Bar) -> Bar:
    mid = b.close
    return replace(b, high=mid + 3 * (b.high - mid), low=max(mid - 3 * (mid - b.low), mid * 0.01))


def flash(bars: Mapping[str, list[Bar]], at: int) -> Bars:
    out: Bars = {}
    for s, rows in bars.items():
        window = [i for i, b in enumerate(rows) if at <= b.ts < at + HOUR_MS]
        new = list(rows)
        if len(window) <= 1:
            for i in window:
                b = rows[i]
                new[i] = replace(b, low=min(b.low, b.open * 0.9))
        else:
            n = len(window)
            for j, i in enumerate(window):
                bottom = n // 2
                depth = j / bottom if j <= bottom else (n - 1 - j) / (n - 1 - bottom)  # 0, 1, 0
                k = 1 - 0.10 * depth
                b = rows[i]
                new[i] = replace(
                    _scaled(b, k) if j < n - 1 else b,
                    low=min(b.low * k, b.low),
                )
        out[s] = new
    return out


def drought(bars: Mapping[str, list[Bar]], at: int) -> Bars:
    stop = at + 20 * DAY_MS
    return {
        s: [replace(b, volume=b.volume * 0.05) if at <= b.ts < stop else b for b in rows]
        for s, rows in bars.items()
    }


def whipsaw(bars: Mapping[str, list[Bar]], at: int) -> Bars:
    out: Bars = {}
    for s, rows in bars.items():
        times = [b.ts for b in rows if b.ts >= at]
        stop = times[min(20, len(times) - 1)] if times else at
        out[s] = _reshape(rows, at, stop, lambda i, r: 0.04 if i % 2 == 0 else -0.04)
    return out


SYNTHETIC: dict[str, tuple[str, Callable[[Mapping[str, list[Bar]], int], Bars]]] = {
    "gap": ("overnight gap of -20%", gap),
    "vol3": ("volatility x3 for a week", vol3),
    "flash": ("flash crash -10%, recovered within an hour", flash),
    "drought": ("liquidity drought: volume x0.05 for 20 days", drought),
    "whipsaw": ("whipsaw: 20 bars of +4% / -4%", whipsaw),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    transform: Callable[[Mapping[str, list[Bar]], int], Bars] | None = None
    start: int | None = None
    end: int | None = None


def _day(text: str, end: bool) -> int:
    parts = text.strip().split("-")
    try:
        year, month = int(parts[0]), int(parts[1]) if len(parts) > 1 else (12 if end else 1)
        day = int(parts[2]) if len(parts) > 2 else None
    except (ValueError, IndexError):
        raise ScenarioError(f"{text!r}: a date as YYYY-MM or YYYY-MM-DD") from None
    try:
        if day is None:
            if end:
                nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
                return int(nxt.timestamp() * 1000) - 1
            day = 1
        moment = datetime(year, month, day, tzinfo=UTC)
    except ValueError as exc:
        raise ScenarioError(f"{text!r}: {exc}") from None
    return int(moment.timestamp() * 1000) + (DAY_MS - 1 if end else 0)


def scenario(name: str) -> Scenario:
    if name in SYNTHETIC:
        description, transform = SYNTHETIC[name]
        return Scenario(name, description, transform)
    span = WINDOWS.get(name)
    if span is None and ":" in name:
        first, _, last = name.partition(":")
        span = (first, last)
    if span is None:
        known = ", ".join([*SYNTHETIC, *WINDOWS])
        raise ScenarioError(
            f"unknown scenario {name!r}: use one of {known}, or a window YYYY-MM:YYYY-MM"
        )
    start, end = _day(span[0], end=False), _day(span[1], end=True)
    if start > end:
        raise ScenarioError(f"scenario {name!r}: the window ends before it starts")
    return Scenario(name, f"history {span[0]} to {span[1]}", None, start, end)


def all_synthetic() -> list[Scenario]:
    return [scenario(name) for name in SYNTHETIC]


@dataclass(frozen=True)
class StressFigures:
    max_drawdown: float
    kill_switch_at: int | None
    worst_day: float | None
    worst_day_at: int | None
    recovery_days: float | None  # from the strike back to the equity before it; None: never


def stress_figures(
    equity: list[tuple[int, float]],
    daily: Mapping[int, float],
    strike: int | None,
    kill_switch_at: int | None,
) -> StressFigures:
    values = [e for _, e in equity]
    peak, worst = -math.inf, 0.0
    for v in values:
        peak = max(peak, v)
        worst = min(worst, v / peak - 1 if peak > 0 else 0.0)
    worst_day_at = min(daily, key=lambda d: daily[d]) if daily else None
    recovery: float | None = None
    if strike is not None:
        before = [e for t, e in equity if t < strike]
        if before:
            level = before[-1]
            after = [(t, e) for t, e in equity if t >= strike]
            dipped = False
            for t, e in after:
                if e < level:
                    dipped = True
                elif dipped:
                    recovery = (t - strike) / DAY_MS
                    break
            if not dipped:
                recovery = 0.0
    return StressFigures(
        max_drawdown=worst,
        kill_switch_at=kill_switch_at,
        worst_day=daily[worst_day_at] if worst_day_at is not None else None,
        worst_day_at=worst_day_at,
        recovery_days=recovery,
    )
