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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from state.db import PROJECT_ROOT

if TYPE_CHECKING:
    import exchange_calendars

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


@cache
def _exchange(name: str) -> exchange_calendars.ExchangeCalendar:
    import exchange_calendars

    return exchange_calendars.get_calendar(name)


def _ts(ms: int) -> object:
    import pandas as pd

    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _ms(ts: object) -> int:
    import pandas as pd

    return int(pd.Timestamp(ts).value // 1_000_000)  # type: ignore[arg-type]


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


class MarketCalendar:
    """Sessions per symbol and the event blackouts; queried by the gate and the Risk page."""

    def __init__(
        self,
        exchanges: Mapping[str, str] | None = None,
        events_file: Path | None = None,
        blackouts: Iterable[Blackout] = (),
    ):
        self._exchanges = {s.upper(): e for s, e in (exchanges or {}).items()}
        self._file = events_file
        self._fixed = tuple(blackouts)
        self._loaded: tuple[float, tuple[Blackout, ...]] | None = None

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
        cal = _exchange(name)
        ts = _ts(now - now % _MINUTE_MS)
        try:
            if cal.is_open_on_minute(ts):
                return None
            day = datetime.fromtimestamp(now / 1000, UTC).date().isoformat()
            if not cal.is_session(day):
                return f"{name} has no session on {day} (holiday or weekend)"
            nxt = _ms(cal.next_open(ts))
        except (ValueError, KeyError, IndexError) as exc:  # outside the calendar's range
            return f"{name} calendar does not cover {_hhmm(now)}: {exc}"
        return f"{name} is closed at {_hhmm(now)}; next open {_hhmm(nxt)}"

    def is_open(self, symbol: str, now: int) -> bool:
        return self.closed_reason(symbol, now) is None

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
        ts = _ts(now)
        for name, members in by_exchange.items():
            cal = _exchange(name)
            try:
                first = cal.date_to_session(ts.date(), direction="next")  # type: ignore[attr-defined]
                sessions = cal.sessions_window(first, per_exchange + 1)
            except (ValueError, KeyError, IndexError) as exc:
                logger.warning("calendar %s cannot list sessions after %s: %s", name, now, exc)
                continue
            for session in sessions:
                close = _ms(cal.session_close(session))
                if close > now and len([s for s in out if s.exchange == name]) < per_exchange:
                    out.append(Session(name, tuple(members), _ms(cal.session_open(session)), close))
        return sorted(out, key=lambda s: (s.open, s.exchange))

    def _from_file(self) -> tuple[Blackout, ...]:
        if self._file is None:
            return ()
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
