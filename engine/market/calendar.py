"""Market hours, holidays and event blackouts: when the gate lets entries through.

A symbol trades on the exchange calendar configured for it (`risk.exchanges`,
e.g. `{AAPL = "XNYS"}`, any exchange_calendars name); a symbol without one (the
simulator's) trades around the clock. Event blackouts come from a CSV file the
operator edits (`events.csv` at the project root unless `risk.events_file` says
otherwise; its header comment documents the format). The file is read again when
it changes, so an edit takes effect without a restart.

Exceptions:

    ValueError
     └── EventsFileError   a row of the events file cannot be read; names file, line, why
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from store.db import PROJECT_ROOT

logger = logging.getLogger(__name__)

DEFAULT_EVENTS_FILE = PROJECT_ROOT / "events.csv"
EVENT_COLUMNS = ("start", "name", "kind", "symbols", "before_minutes", "after_minutes")
_MINUTE_MS = 60_000
_DAY_MS = 86_400_000


class EventsFileError(ValueError):
    """The events file has a row that cannot be read."""


@dataclass(frozen=True, slots=True)
class Blackout:
    """No entries on `symbols` (empty = every symbol) from `start` to `end` (ms, end excluded)."""

    name: str
    start: int
    end: int
    kind: str = "event"
    symbols: frozenset[str] = frozenset()
    event_at: int | None = None

    def applies_to(self, symbol: str) -> bool:
        return not self.symbols or symbol in self.symbols

    def covers(self, symbol: str, now: int) -> bool:
        return self.start <= now < self.end and self.applies_to(symbol)


@dataclass(frozen=True, slots=True)
class Session:
    exchange: str
    symbols: tuple[str, ...]
    open: int
    close: int


def parse_event_time(text: str) -> tuple[int, bool]:
    """Epoch ms of an ISO date or date-time (naive = UTC); True when only a date was given."""
    text = text.strip()
    if len(text) == 10:
        day = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return int(day.timestamp() * 1000), True
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000), False


def parse_events(text: str, source: str = "events.csv") -> list[Blackout]:
    """Blackouts from the events file's text; lines starting with # are comments.

    A date without a time blacks out that whole UTC day, widened by the windows.
    """
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = [(n, line) for n, line in lines if not line.lstrip().startswith("#")]
    if not rows:
        return []
    header = [c.strip().lower() for c in next(csv.reader([rows[0][1]]))]
    missing = [c for c in ("start", "name") if c not in header]
    if missing:
        raise EventsFileError(
            f"{source}:{rows[0][0]}: the header needs the columns {', '.join(EVENT_COLUMNS)};"
            f" missing {', '.join(missing)}"
        )
    out = []
    for n, line in rows[1:]:
        values = next(csv.reader(io.StringIO(line)))
        row = {k: (values[i].strip() if i < len(values) else "") for i, k in enumerate(header)}
        try:
            out.append(_blackout(row))
        except ValueError as exc:
            raise EventsFileError(f"{source}:{n}: {exc}") from None
    return out


def _minutes(row: Mapping[str, str], key: str) -> int:
    text = row.get(key, "") or "0"
    value = float(text)
    if not 0 <= value <= 60 * 24 * 30:
        raise ValueError(f"{key} = {text!r}: minutes between 0 and 43200")
    return int(value * _MINUTE_MS)


def _blackout(row: Mapping[str, str]) -> Blackout:
    if not row.get("name"):
        raise ValueError("the event needs a name")
    try:
        at, whole_day = parse_event_time(row.get("start", ""))
    except ValueError:
        raise ValueError(
            f"start = {row.get('start', '')!r}: an ISO date or date-time such as"
            " 2026-12-16 or 2026-12-16T19:00Z"
        ) from None
    before, after = _minutes(row, "before_minutes"), _minutes(row, "after_minutes")
    end = at + (_DAY_MS if whole_day else 0)
    symbols = row.get("symbols", "").replace(";", " ").replace(",", " ").split()
    return Blackout(
        name=row["name"],
        start=at - before,
        end=end + after,
        kind=row.get("kind") or "event",
        symbols=frozenset(s.upper() for s in symbols if s != "*"),
        event_at=at,
    )


@dataclass(frozen=True, slots=True)
class _Schedule:
    """One exchange's sessions as epoch-ms arrays, for lookups without pandas."""

    name: str
    opens: npt.NDArray[np.int64]
    closes: npt.NDArray[np.int64]
    break_starts: npt.NDArray[np.int64]  # -1 where the session has no break
    break_ends: npt.NDArray[np.int64]

    def index(self, now: int) -> int:
        """The session that opened last at or before `now` (-1 before the first)."""
        return int(np.searchsorted(self.opens, now, side="right")) - 1

    def is_open(self, now: int) -> bool:
        i = self.index(now)
        if i < 0 or now >= self.closes[i]:
            return False
        return not (self.break_starts[i] >= 0 and self.break_starts[i] <= now < self.break_ends[i])

    def covers(self, now: int) -> bool:
        return bool(self.opens[0] - _DAY_MS <= now <= self.closes[-1])

    def has_session_on(self, day_start: int) -> bool:
        """A session whose open falls on the UTC day starting at `day_start`."""
        i = int(np.searchsorted(self.opens, day_start, side="left"))
        return i < len(self.opens) and self.opens[i] < day_start + _DAY_MS


def _to_ms(series: object) -> npt.NDArray[np.int64]:
    import pandas as pd

    values = pd.Series(series).dt.tz_convert(None)
    out: npt.NDArray[np.int64] = values.to_numpy(dtype="datetime64[ms]").astype(np.int64)
    out[values.isna().to_numpy()] = -1
    return out


@cache
def _schedule(name: str) -> _Schedule:
    import exchange_calendars

    # exchange_calendars uses pandas APIs that pandas 3.1 deprecates; the values
    # are right, and we read them once into plain arrays.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = exchange_calendars.get_calendar(name)
        return _Schedule(
            name,
            _to_ms(cal.opens),
            _to_ms(cal.closes),
            _to_ms(cal.break_starts),
            _to_ms(cal.break_ends),
        )


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


AROUND_THE_CLOCK = "24/7"


def symbol_exchanges(
    configured: Mapping[str, str], symbols: Iterable[str], default: str | None = None
) -> dict[str, str]:
    """Each traded symbol's exchange calendar: its configured one, else `default`
    (the simulated market's sessions), else none (around the clock)."""
    out = {s.upper(): e for s, e in configured.items()}
    if default is not None:
        for symbol in symbols:
            out.setdefault(symbol.upper(), default)
    return out


def next_slot(ts: int, bar_ms: int, exchange: str | None) -> int:
    """When the bar after one at `ts` starts: one interval later around the clock;
    on an exchange calendar the next open minute (closed hours pass in no time),
    and for daily or longer bars the next session's open."""
    if exchange is None:
        return ts + bar_ms
    cal = _schedule(exchange)
    if bar_ms >= _DAY_MS:
        i = int(np.searchsorted(cal.opens, ts, side="right"))
        return int(cal.opens[i]) if i < len(cal.opens) else ts + bar_ms
    t = ts + bar_ms
    if cal.is_open(t) or not cal.covers(t):
        return t
    i = cal.index(t)
    if i >= 0 and t < cal.closes[i] and cal.break_starts[i] >= 0:
        return int(cal.break_ends[i])  # inside the lunch break
    return int(cal.opens[i + 1]) if i + 1 < len(cal.opens) else t


def previous_slot(ts: int, bar_ms: int, exchange: str | None) -> int:
    """When the bar before one at `ts` started; `next_slot` backwards."""
    if exchange is None:
        return ts - bar_ms
    cal = _schedule(exchange)
    if bar_ms >= _DAY_MS:
        i = int(np.searchsorted(cal.opens, ts, side="left")) - 1
        return int(cal.opens[i]) if i >= 0 else ts - bar_ms
    t = ts - bar_ms
    if cal.is_open(t) or not cal.covers(t):
        return t
    i = cal.index(t)
    if i < 0:
        return t
    if t < cal.closes[i] and cal.break_starts[i] >= 0:
        return int(cal.break_starts[i]) - bar_ms
    return int(cal.closes[i]) - bar_ms


@dataclass(frozen=True, slots=True)
class TradingDay:
    """The one definition of "today" for daily limits, day P&L and per-day figures.

    A trader's day is a session, not a calendar date: "15 trades per session",
    "6% daily loss" reset when the venue's next session begins. So:

    - when every traded symbol follows one exchange calendar, a trading day runs
      from one session's close to the next close: it is the session about to
      close (pre-market and the evening before belong to it);
    - otherwise (24/7 symbols, or a book spread over venues with different
      hours) a day starts at `boundary_minutes` after 00:00 UTC every day
      (`risk.day_boundary`, default 00:00).

    Every caller (gate, monitor, cockpit pages, CLI) takes its day from here, on
    market time, so they agree on what today is.
    """

    exchange: str | None = None
    boundary_minutes: int = 0

    @classmethod
    def for_symbols(
        cls, exchanges: Mapping[str, str], symbols: Iterable[str], boundary_minutes: int = 0
    ) -> TradingDay:
        names = {exchanges.get(s.upper()) for s in symbols}
        if len(names) == 1:
            (only,) = names
            return cls(only, boundary_minutes)
        return cls(None, boundary_minutes)

    @property
    def spec(self) -> str:
        """Text that rebuilds this definition (stored on the engine row for the cockpit)."""
        minutes = f"{self.boundary_minutes // 60:02d}:{self.boundary_minutes % 60:02d}"
        return f"{self.exchange or AROUND_THE_CLOCK}@{minutes}"

    @classmethod
    def from_spec(cls, spec: str | None) -> TradingDay:
        if not spec:
            return cls()
        name, _, minutes = spec.partition("@")
        hours, _, mins = (minutes or "00:00").partition(":")
        boundary = int(hours or 0) * 60 + int(mins or 0)
        return cls(None if name == AROUND_THE_CLOCK else name, boundary)

    def _closes(self, ts: int) -> tuple[int, int] | None:
        if self.exchange is None:
            return None
        cal = _schedule(self.exchange)
        i = int(np.searchsorted(cal.closes, ts, side="right"))
        if i <= 0 or i >= len(cal.closes):
            return None  # outside the calendar's years: fall back to the boundary
        return int(cal.closes[i - 1]), int(cal.closes[i])

    def start(self, ts: int) -> int:
        """Epoch ms at which the trading day holding `ts` began."""
        session = self._closes(ts)
        if session is not None:
            return session[0]
        offset = self.boundary_minutes * _MINUTE_MS
        return ts - (ts - offset) % _DAY_MS

    def next_start(self, ts: int) -> int:
        """Epoch ms at which the next trading day begins (when day-scoped limits lift)."""
        session = self._closes(ts)
        if session is not None:
            return session[1]
        return self.start(ts) + _DAY_MS

    def label(self, ts: int) -> str:
        """The day's date: the session's date, or the date the 24/7 day mostly falls on."""
        session = self._closes(ts)
        if session is not None:
            cal = _schedule(self.exchange or "")
            i = int(np.searchsorted(cal.opens, session[0], side="right"))
            return _date(int(cal.opens[min(i, len(cal.opens) - 1)]))
        return _date(self.start(ts) + _DAY_MS // 2)

    def starts(self, first: int, last: int) -> list[int]:
        """Starts of the trading days from the one holding `first` to the one after `last`."""
        out = [self.start(first)]
        while out[-1] <= last:
            out.append(self.next_start(out[-1]))
        return out

    def count(self, first: int, last: int) -> int:
        """How many trading days the span from `first` to `last` touches."""
        return len(self.starts(first, last)) - 1


def missed_bars(exchange: str | None, last_ts: int, now: int, bar_ms: int) -> float:
    """Bars that should have arrived after `last_ts` by `now`, counting only open
    market time, so a night, weekend or holiday is not missing data.

    Around the clock every interval counts. On an exchange calendar an intraday
    interval counts the open minutes in between; a daily (or longer) interval
    counts the sessions that closed in between.
    """
    if now <= last_ts:
        return 0.0
    if exchange is None:
        return (now - last_ts) / bar_ms
    cal = _schedule(exchange)
    if bar_ms >= _DAY_MS:
        closed = np.searchsorted(cal.closes, now, side="right") - np.searchsorted(
            cal.closes, last_ts, side="right"
        )
        return float(closed) * _DAY_MS / bar_ms
    first = int(np.searchsorted(cal.closes, last_ts, side="right"))
    last = int(np.searchsorted(cal.opens, now, side="left"))
    opens = np.maximum(cal.opens[first:last], last_ts)
    closes = np.minimum(cal.closes[first:last], now)
    open_ms = float(np.clip(closes - opens, 0, None).sum())
    return open_ms / bar_ms


# How often the events file is looked at for an edit: the gate asks for the
# blackouts on every order, and a stat of the file each time was 2% of the order path.
EVENTS_RECHECK_SECONDS = 1.0


class MarketCalendar:
    """Sessions per symbol and the event blackouts; queried by the gate and the Risk page.

    An edit of the events file takes effect within EVENTS_RECHECK_SECONDS (measured
    on `monotonic`, wall time, whatever the market clock)."""

    def __init__(
        self,
        exchanges: Mapping[str, str] | None = None,
        events_file: Path | None = None,
        blackouts: Iterable[Blackout] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._exchanges = {s.upper(): e for s, e in (exchanges or {}).items()}
        self._file = events_file
        self._fixed = tuple(blackouts)
        self._loaded: tuple[float, tuple[Blackout, ...]] | None = None
        self._monotonic = monotonic
        self._next_look = 0.0

    @classmethod
    def from_settings(
        cls, exchanges: Mapping[str, str], events_file: Path | None
    ) -> MarketCalendar:
        return cls(exchanges, events_file or DEFAULT_EVENTS_FILE)

    def exchange_of(self, symbol: str) -> str | None:
        return self._exchanges.get(symbol.upper())

    def closed_reason(self, symbol: str, now: int) -> str | None:
        """Why `symbol` cannot trade at `now`, or None when its market is open."""
        name = self.exchange_of(symbol)
        if name is None:
            return None
        cal = _schedule(name)
        if not cal.covers(now):
            return f"the {name} calendar does not cover {_hhmm(now)}"
        if cal.is_open(now):
            return None
        day = now - now % _DAY_MS
        if not cal.has_session_on(day):
            date = datetime.fromtimestamp(day / 1000, UTC).date().isoformat()
            return f"{name} has no session on {date} (holiday or weekend)"
        nxt = cal.index(now) + 1
        after = f"; next open {_hhmm(int(cal.opens[nxt]))}" if nxt < len(cal.opens) else ""
        return f"{name} is closed at {_hhmm(now)}{after}"

    def is_open(self, symbol: str, now: int) -> bool:
        return self.closed_reason(symbol, now) is None

    def trading_day(self, symbols: Iterable[str], boundary_minutes: int = 0) -> TradingDay:
        return TradingDay.for_symbols(self._exchanges, symbols, boundary_minutes)

    def missed_bars(self, symbol: str, last_ts: int, now: int, bar_ms: int) -> float:
        return missed_bars(self.exchange_of(symbol), last_ts, now, bar_ms)

    def blackouts(self) -> tuple[Blackout, ...]:
        return self._fixed + self._from_file()

    def active_blackouts(self, symbol: str, now: int) -> list[Blackout]:
        return [b for b in self.blackouts() if b.covers(symbol, now)]

    def next_blackouts(self, now: int, limit: int = 10) -> list[Blackout]:
        """Blackouts not yet over, soonest first."""
        return sorted((b for b in self.blackouts() if b.end > now), key=lambda b: b.start)[:limit]

    def next_sessions(
        self, now: int, symbols: Sequence[str] | None = None, per_exchange: int = 3
    ) -> list[Session]:
        """The current or next sessions of each configured exchange, soonest first."""
        by_exchange: dict[str, list[str]] = {}
        for symbol, name in sorted(self._exchanges.items()):
            if symbols is None or symbol in symbols:
                by_exchange.setdefault(name, []).append(symbol)
        out: list[Session] = []
        for name, members in by_exchange.items():
            cal = _schedule(name)
            first = int(np.searchsorted(cal.closes, now, side="right"))
            for i in range(first, min(first + per_exchange, len(cal.opens))):
                out.append(Session(name, tuple(members), int(cal.opens[i]), int(cal.closes[i])))
        return sorted(out, key=lambda s: (s.open, s.exchange))

    def _from_file(self) -> tuple[Blackout, ...]:
        if self._file is None:
            return ()
        now = self._monotonic()
        if self._loaded is not None and now < self._next_look:
            return self._loaded[1]
        self._next_look = now + EVENTS_RECHECK_SECONDS
        try:
            mtime = os.stat(self._file).st_mtime
        except FileNotFoundError:
            return ()
        if self._loaded is None or self._loaded[0] != mtime:
            try:
                events = tuple(parse_events(self._file.read_text(), str(self._file)))
            except EventsFileError as exc:
                # Keep the last good list rather than trading through a typo's blackout.
                logger.error("events file ignored: %s", exc)
                if self._loaded is None:
                    raise
                return self._loaded[1]
            self._loaded = (mtime, events)
        return self._loaded[1]
