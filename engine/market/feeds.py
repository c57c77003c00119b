"""Market data feeds and the bar validator that stands between them and the cycle.

A feed yields raw bars; it never judges them. `BarValidator.check` decides, so a bad
bar from any feed (simulated, CSV replay, Interactive Brokers) is rejected the same
way, with a reason that names the fields, and never reaches signal or risk.

- `SimulatedFeed`: seeded regime-switching market (the embedded default). Each bar
  carries its `true_regime` so regime detection can be scored.
- `generate_history`: the same simulator as DataFrames, for backtests and training.
- `CsvReplayFeed`: one `SYMBOL.csv` per symbol, replayed in time order.

Market time: a feed owns the market clock. Every bar is stamped with the market
time it covers, and the cycle's clock is the time of the bars it processes. The
simulator and a replay have no other clock (`market_time` returns None), so a
replay of 2006 runs in 2006 and the simulator's minutes pass at `engine.speed`;
a live feed (a broker's or an exchange's) returns the wall time, because its
market moves with the world even when no bar arrives.

Exceptions:

    Exception
     └── FeedError   the feed cannot start (missing folder or file, missing columns,
                     unreadable file): a configuration error, raised at construction.

A bad row inside a readable CSV does not raise: it is yielded with NaN (or ts 0)
where the value could not be read, so the validator rejects it with a reason.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from engine.domain import Bar, Regime
from engine.market.calendar import next_slot, previous_slot

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY_MS = 86_400_000
# A fixed minute (2023-11-14T22:14:00Z), so history is reproducible without reading a clock.
DEFAULT_END_TS = 1_700_000_040_000


class FeedError(Exception):
    """A feed cannot start; the message names the file and what is wrong."""


class Feed(Protocol):
    @property
    def symbols(self) -> tuple[str, ...]: ...

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        """Up to n bars per symbol from before the live start, oldest first."""
        ...

    def next_bars(self, now_ms: int) -> list[Bar]:
        """At most one new bar per symbol, stamped with the market time it covers;
        none for a symbol that has run out or has no new bar yet. `now_ms` is the
        wall time, for a live feed's polling; a simulated market ignores it."""
        ...

    def market_time(self, wall_ms: int) -> int | None:
        """The market clock when no bar says otherwise: wall_ms for a live feed,
        None for a simulated or replayed market (its time is its bars' time)."""
        ...


# ---------------------------------------------------------------------------------------
# Simulator parameters


@dataclass(frozen=True, slots=True)
class RegimeParams:
    """Per-bar parameters of one regime, calibrated for one-minute bars."""

    drift: float  # mean log return per bar
    vol: float  # standard deviation of the log return per bar
    mean_bars: float  # expected duration; durations are geometric
    volume_mult: float  # volume relative to the symbol's base volume


REGIME_PARAMS: Mapping[Regime, RegimeParams] = MappingProxyType(
    {
        Regime.TREND_UP: RegimeParams(drift=0.00037, vol=0.0010, mean_bars=240, volume_mult=1.0),
        Regime.TREND_DOWN: RegimeParams(
            drift=-0.00030, vol=0.0012, mean_bars=180, volume_mult=1.15
        ),
        Regime.RANGE: RegimeParams(drift=0.0, vol=0.0007, mean_bars=300, volume_mult=0.8),
        Regime.HIGH_VOL: RegimeParams(drift=0.0, vol=0.0028, mean_bars=90, volume_mult=1.8),
        Regime.CRASH: RegimeParams(drift=-0.0035, vol=0.0050, mean_bars=25, volume_mult=3.0),
    }
)

# Where a regime goes when it ends. A crash only follows a down trend or high
# volatility: straight out of a quiet range it would look like a bad tick.
TRANSITIONS: Mapping[Regime, Mapping[Regime, float]] = MappingProxyType(
    {
        Regime.TREND_UP: {Regime.RANGE: 0.50, Regime.HIGH_VOL: 0.30, Regime.TREND_DOWN: 0.20},
        Regime.TREND_DOWN: {
            Regime.RANGE: 0.35,
            Regime.HIGH_VOL: 0.25,
            Regime.TREND_UP: 0.20,
            Regime.CRASH: 0.20,
        },
        Regime.RANGE: {Regime.TREND_UP: 0.40, Regime.TREND_DOWN: 0.35, Regime.HIGH_VOL: 0.25},
        Regime.HIGH_VOL: {
            Regime.RANGE: 0.30,
            Regime.CRASH: 0.30,
            Regime.TREND_UP: 0.20,
            Regime.TREND_DOWN: 0.20,
        },
        Regime.CRASH: {Regime.HIGH_VOL: 0.60, Regime.RANGE: 0.20, Regime.TREND_UP: 0.20},
    }
)

RANGE_PULL = 0.03  # share of the distance to the range level closed each bar
# A weak pull toward the symbol's start price (per bar, on the log distance) keeps a
# marathon of fast cycles from drifting to pennies or to absurd prices.
ANCHOR_PULL = 5e-5
# Volatility and drift move toward the new regime's level over a few bars instead of
# stepping: a step from a calm regime into a crash would look like an absurd jump.
VOL_SMOOTHING = 0.2
WICK = 0.6  # wick length in units of the bar's volatility
VOLUME_NOISE = 0.3

_REGIMES: tuple[Regime, ...] = tuple(Regime)
_REGIME_VALUES = np.array([r.value for r in _REGIMES], dtype=object)
_DRIFT = np.array([REGIME_PARAMS[r].drift for r in _REGIMES])
_VOL = np.array([REGIME_PARAMS[r].vol for r in _REGIMES])
_VOLUME_MULT = np.array([REGIME_PARAMS[r].volume_mult for r in _REGIMES])
_LEAVE = [1.0 / REGIME_PARAMS[r].mean_bars for r in _REGIMES]
_MAX_LEAVE = max(_LEAVE)
_RANGE = _REGIMES.index(Regime.RANGE)


def _destinations() -> list[list[tuple[float, int]]]:
    rows = []
    for regime in _REGIMES:
        weights = TRANSITIONS[regime]
        total = sum(weights.values())
        cumulative, row = 0.0, []
        for dest, weight in weights.items():
            cumulative += weight / total
            row.append((cumulative, _REGIMES.index(dest)))
        rows.append(row)
    return rows


_DEST = _destinations()

# Long chunks keep the AR(1) rescaling within float range (0.97**-512 ~ 6e6).
_AR_CHUNK = 512
_RANGE_PHI = 1.0 - RANGE_PULL
_RANGE_POW = _RANGE_PHI ** np.arange(1, _AR_CHUNK + 1)
_LIVE_BLOCK = 256


def default_symbols(n: int) -> tuple[str, ...]:
    """Stable readable names: SIM-A .. SIM-Z, SIM-AA, SIM-AB, ..."""
    if n < 0:
        raise ValueError(f"symbol count n={n} must not be negative")
    return tuple(f"SIM-{_letters(i)}" for i in range(n))


def _letters(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, rem = divmod(i - 1, 26)
        name = chr(ord("A") + rem) + name
    return name


def _symbol_key(symbol: str) -> int:
    # Python's hash() is salted per process; the seed must mean the same market every run.
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "big")


def _destination(regime: int, u: float) -> int:
    for cumulative, dest in _DEST[regime]:
        if u < cumulative:
            return dest
    return _DEST[regime][-1][1]


def _ar1(eps: FloatArray, x0: float) -> FloatArray:
    """x_t = phi * x_{t-1} + eps_t for the range pull, vectorised chunk by chunk."""
    out = np.empty_like(eps)
    x = x0
    for start in range(0, len(eps), _AR_CHUNK):
        e = eps[start : start + _AR_CHUNK]
        p = _RANGE_POW[: len(e)]
        chunk = p * (x + np.cumsum(e / p))
        out[start : start + len(e)] = chunk
        x = float(chunk[-1])
    return out


class _Block(NamedTuple):
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    regime: IntArray


class _Path:
    """One symbol's simulated market: regime chain, price and volatility state.

    Random numbers are drawn in a fixed count per bar from two generators, so the
    path for a seed does not depend on how many bars are generated per call.
    """

    def __init__(self, symbol: str, seed: int, start_price: float | None, last: Bar | None):
        key = _symbol_key(symbol)
        static, regime_seq, shock_seq = np.random.SeedSequence([seed, key]).spawn(3)
        static_rng = np.random.default_rng(static)
        drawn_start = round(float(np.exp(static_rng.uniform(np.log(10.0), np.log(500.0)))), 2)
        self.base_volume = float(np.exp(static_rng.uniform(np.log(5e3), np.log(5e5))))
        anchor = drawn_start if start_price is None else start_price
        if not (math.isfinite(anchor) and anchor > 0):
            raise ValueError(f"{symbol}: start price {anchor!r} must be a positive number")
        price, regime = anchor, Regime.RANGE
        if last is not None:
            # A restart must not replay the first run's shocks from another price, so
            # the random streams are keyed by the last bar's time as well.
            regime_seq, shock_seq = np.random.SeedSequence([seed, key, last.ts]).spawn(2)
            price, regime = last.close, last.true_regime or Regime.RANGE
            if not (math.isfinite(price) and price > 0):
                raise ValueError(f"{symbol}: last close {price!r} must be a positive number")
        self.regime_rng = np.random.default_rng(regime_seq)
        self.shock_rng = np.random.default_rng(shock_seq)
        self.regime = _REGIMES.index(regime)
        self.last_close = price  # the exact float of the last close, so open == previous close
        self.log_close = math.log(price)
        self.log_anchor = math.log(anchor)
        self.level = self.log_close
        self.sigma = float(_VOL[self.regime])
        self.drift = float(_DRIFT[self.regime])
        self.target_drift = self._target_drift(self.regime)
        self.last_ts = last.ts if last is not None else None
        self._rows: list[tuple[float, float, float, float, float, int]] = []
        self._cursor = 0
        # Live bars are generated in blocks; a first block of a size keyed by the name
        # spreads the refills of many symbols over different calls, and keeps a
        # symbol's bars independent of its neighbours.
        self._block = _LIVE_BLOCK // 4 + key % (_LIVE_BLOCK - _LIVE_BLOCK // 4)

    def generate(self, n: int) -> _Block:
        first_open = self.last_close
        u = self.regime_rng.random((n, 2))
        z = self.shock_rng.standard_normal((n, 4))
        bounds, regimes = [0], [self.regime]
        # Only bars whose draw could end even the shortest regime need a look.
        for i in np.flatnonzero(u[:, 0] < _MAX_LEAVE).tolist():
            if u[i, 0] < _LEAVE[regimes[-1]]:
                bounds.append(i)
                regimes.append(_destination(regimes[-1], float(u[i, 1])))
        bounds.append(n)
        regime_at = np.repeat(np.array(regimes, dtype=np.int64), np.diff(bounds))
        log_close, sigma = np.empty(n), np.empty(n)
        for k, regime in enumerate(regimes):
            start, end = bounds[k], bounds[k + 1]
            if end > start:
                log_close[start:end], sigma[start:end] = self._walk(regime, k > 0, z[start:end, 0])
        self.regime = regimes[-1]

        close = np.exp(log_close)
        opens = np.concatenate(([first_open], close[:-1]))[:n]
        if n:
            self.last_close = float(close[-1])
        wick = sigma * WICK
        high = np.maximum(opens, close) * np.exp(wick * np.abs(z[:, 1]))
        low = np.minimum(opens, close) * np.exp(-wick * np.abs(z[:, 2]))
        volume = (
            self.base_volume
            * _VOLUME_MULT[regime_at]
            * np.exp(VOLUME_NOISE * z[:, 3])
            * (0.6 + 0.4 * np.abs(z[:, 0]))
        )
        return _Block(opens, high, low, close, volume, regime_at)

    def _walk(
        self, regime: int, entered: bool, shocks: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Log closes and volatilities of one stretch of a regime; entered = it starts here."""
        decay = np.power(1.0 - VOL_SMOOTHING, np.arange(1.0, len(shocks) + 1.0))
        sigma = _VOL[regime] + (self.sigma - _VOL[regime]) * decay
        eps = sigma * shocks
        if regime == _RANGE:
            if entered:
                self.level = self.log_close
            log_close = self.level + _ar1(eps, self.log_close - self.level)
            self.drift = 0.0
        else:
            if entered:
                self.target_drift = self._target_drift(regime)
            drift = self.target_drift + (self.drift - self.target_drift) * decay
            log_close = self.log_close + np.cumsum(eps + drift)
            self.drift = float(drift[-1])
        self.log_close = float(log_close[-1])
        self.sigma = float(sigma[-1])
        return log_close, sigma

    def _target_drift(self, regime: int) -> float:
        # Fixed when a regime starts, so a path does not depend on how it is chunked.
        return float(_DRIFT[regime]) - ANCHOR_PULL * (self.log_close - self.log_anchor)

    def take(self, n: int) -> list[tuple[float, float, float, float, float, int]]:
        """The next n bars, continuing the buffer that live bars are drawn from."""
        rows = self._rows[self._cursor : self._cursor + n]
        self._cursor += len(rows)
        if len(rows) < n:
            # Also fill the live buffer now, so the first live cycle after a warm-up
            # does not pay for every symbol's first block at once.
            more = _rows_of(self.generate(n - len(rows) + self._block))
            self._block = _LIVE_BLOCK
            split = n - len(rows)
            rows += more[:split]
            self._rows, self._cursor = more, split
        return rows

    def next_row(self) -> tuple[float, float, float, float, float, int]:
        if self._cursor >= len(self._rows):
            self._rows, self._cursor = _rows_of(self.generate(self._block)), 0
            self._block = _LIVE_BLOCK
        row = self._rows[self._cursor]
        self._cursor += 1
        return row


def _rows_of(block: _Block) -> list[tuple[float, float, float, float, float, int]]:
    return list(
        zip(
            block.open.tolist(),
            block.high.tolist(),
            block.low.tolist(),
            block.close.tolist(),
            block.volume.tolist(),
            block.regime.tolist(),
            strict=True,
        )
    )


class SimulatedFeed:
    """A seeded, regime-switching market on its own clock, one bar per symbol per call.

    Each symbol has its own random streams derived from the seed and its name, so
    adding a symbol leaves the others unchanged. `bar_ms` is the bar length the
    parameters are calibrated for (one minute); each call emits the next bar one
    `bar_ms` after the last in market time, skipping the closed hours of
    `calendar` (an exchange_calendars name; None = around the clock). The runner
    paces the calls, so market time passes at `engine.speed`.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int,
        start_prices: Mapping[str, float] | None = None,
        bar_ms: int = 60_000,
        *,
        resume_from: Mapping[str, Bar] | None = None,
        calendar: str | None = None,
    ):
        self.symbols: tuple[str, ...] = tuple(symbols)
        if len(set(self.symbols)) != len(self.symbols) or not all(self.symbols):
            raise ValueError(f"symbols {self.symbols!r} must be distinct non-empty names")
        if bar_ms <= 0:
            raise ValueError(f"bar_ms={bar_ms} must be positive")
        self.seed = seed
        self.bar_ms = bar_ms
        self.calendar = calendar
        starts = start_prices or {}
        last = resume_from or {}
        self._paths = [_Path(s, seed, starts.get(s), last.get(s)) for s in self.symbols]

    @classmethod
    def resume(
        cls,
        last: Mapping[str, Bar],
        seed: int,
        *,
        symbols: Sequence[str] | None = None,
        start_prices: Mapping[str, float] | None = None,
        bar_ms: int = 60_000,
        calendar: str | None = None,
    ) -> SimulatedFeed:
        """Continue after a restart from each symbol's last stored bar: its close, its
        regime (RANGE when the bar has none) and its time, so the market goes on where
        it stopped rather than jumping to today. Symbols without a last bar start
        fresh. Pass the first run's start_prices, if it had any: over a long run
        prices are pulled gently toward them."""
        names = tuple(last) if symbols is None else symbols
        return cls(names, seed, start_prices, bar_ms, resume_from=last, calendar=calendar)

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        """n bars per symbol ending at (the last open slot at or before) end_ts, one
        interval_ms apart in open market time; live bars continue them."""
        if n < 0 or interval_ms <= 0:
            raise ValueError(f"warmup n={n} must be >= 0 and interval_ms={interval_ms} > 0")
        stamps: list[int] = []
        if n:
            ts = previous_slot(end_ts + interval_ms, interval_ms, self.calendar)
            stamps.append(ts)
            for _ in range(n - 1):
                ts = previous_slot(ts, interval_ms, self.calendar)
                stamps.append(ts)
            stamps.reverse()
        out: dict[str, list[Bar]] = {}
        for symbol, path in zip(self.symbols, self._paths, strict=True):
            rows = path.take(n)
            out[symbol] = [
                Bar(symbol, stamps[i], o, h, lo, c, v, _REGIMES[r])
                for i, (o, h, lo, c, v, r) in enumerate(rows)
            ]
            if n:
                path.last_ts = stamps[-1]
        return out

    def next_bars(self, now_ms: int) -> list[Bar]:
        """The next bar of every symbol, one bar interval after its last in market
        time. `now_ms` only places the very first bar when there is no history."""
        bars = []
        for symbol, path in zip(self.symbols, self._paths, strict=True):
            o, h, lo, c, v, r = path.next_row()
            if path.last_ts is None:
                start = now_ms - now_ms % self.bar_ms
                ts = next_slot(start - self.bar_ms, self.bar_ms, self.calendar)
            else:
                ts = next_slot(path.last_ts, self.bar_ms, self.calendar)
            path.last_ts = ts
            bars.append(Bar(symbol, ts, o, h, lo, c, v, _REGIMES[r]))
        return bars

    def market_time(self, wall_ms: int) -> int | None:
        return None


def generate_history(
    symbols: Sequence[str],
    n_bars: int,
    seed: int,
    *,
    bar_ms: int = 60_000,
    end_ts: int = DEFAULT_END_TS,
    start_prices: Mapping[str, float] | None = None,
) -> dict[str, pd.DataFrame]:
    """n_bars of simulated history per symbol, the last bar at end_ts.

    Columns: ts (epoch ms), open, high, low, close, volume, true_regime (Regime
    values). The same seed gives the same paths as `SimulatedFeed` with that seed.
    """
    import pandas as pd  # history is for training and backtests, off the engine's start path

    if n_bars < 0:
        raise ValueError(f"n_bars={n_bars} must not be negative")
    feed = SimulatedFeed(symbols, seed, start_prices, bar_ms)
    ts = end_ts - bar_ms * np.arange(n_bars - 1, -1, -1, dtype=np.int64)
    out = {}
    for symbol, path in zip(feed.symbols, feed._paths, strict=True):
        block = path.generate(n_bars)
        out[symbol] = pd.DataFrame(
            {
                "ts": ts,
                "open": block.open,
                "high": block.high,
                "low": block.low,
                "close": block.close,
                "volume": block.volume,
                "true_regime": _REGIME_VALUES[block.regime],
            }
        )
    return out


# ---------------------------------------------------------------------------------------
# CSV replay

CSV_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


class CsvReplayFeed:
    """Replays one `SYMBOL.csv` per symbol in market time: each call emits the rows
    with the earliest next timestamp across the files (at most one per symbol), so
    symbols stay aligned on the clock even when one has a gap.

    Rows are not sorted or repaired: an out-of-order or unreadable row is yielded as
    it is (unreadable values as NaN, an unreadable timestamp as ts 0) and logged with
    its line, so the validator rejects it with a reason and the replay goes on.
    Bars keep the file's timestamps; `now_ms` does not pace the replay (the runner
    does, at `engine.speed`).

    With `bar_ms`, each file's usual spacing must match it: a file of daily bars
    under a one-minute interval stops the start with an error naming file and row.
    """

    def __init__(
        self, data_dir: Path, symbols: Sequence[str] | None = None, *, bar_ms: int | None = None
    ):
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FeedError(f"CSV data dir {data_dir} does not exist or is not a folder")
        if symbols is None:
            files = sorted(data_dir.glob("*.csv"))
            if not files:
                raise FeedError(f"CSV data dir {data_dir} has no SYMBOL.csv files")
            symbols = [f.stem for f in files]
        self.symbols: tuple[str, ...] = tuple(symbols)
        twice = sorted({s for s in self.symbols if self.symbols.count(s) > 1})
        if twice:
            raise FeedError(f"CSV symbols {', '.join(twice)} are listed more than once")
        self._rows = {s: _read_csv(data_dir / f"{s}.csv", s) for s in self.symbols}
        if bar_ms is not None:
            for s in self.symbols:
                check_interval(self._rows[s], data_dir / f"{s}.csv", bar_ms)
        self._cursor = dict.fromkeys(self.symbols, 0)
        self.total_rows = sum(len(r.ts) for r in self._rows.values())

    @property
    def exhausted(self) -> bool:
        return all(self._cursor[s] >= len(self._rows[s].ts) for s in self.symbols)

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        """The first n rows per symbol (the file's own times; end_ts and interval_ms
        do not apply); replay continues after them."""
        out = {}
        for s in self.symbols:
            start = self._cursor[s]
            stop = min(start + max(n, 0), len(self._rows[s].ts))
            out[s] = [self._rows[s].bar(s, i) for i in range(start, stop)]
            self._cursor[s] = stop
        return out

    def next_bars(self, now_ms: int) -> list[Bar]:
        due = {
            s: int(self._rows[s].ts[self._cursor[s]])
            for s in self.symbols
            if self._cursor[s] < len(self._rows[s].ts)
        }
        if not due:
            return []
        first = min(due.values())
        bars = []
        for s, ts in due.items():
            if ts == first:
                bars.append(self._rows[s].bar(s, self._cursor[s]))
                self._cursor[s] += 1
        return bars

    def market_time(self, wall_ms: int) -> int | None:
        return None


class _Rows(NamedTuple):
    """A file's rows as columns: a year of minutes as Bar objects would not fit."""

    ts: IntArray
    values: FloatArray  # open, high, low, close, volume
    lines: IntArray  # the file's line number of each row, for error messages
    path: str

    def bar(self, symbol: str, i: int) -> Bar:
        o, h, lo, c, v = self.values[i].tolist()
        origin = f"{self.path} row {int(self.lines[i])}"
        return Bar(symbol, int(self.ts[i]), o, h, lo, c, v, origin=origin)


def format_interval(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def check_interval(rows: _Rows, path: Path, bar_ms: int) -> None:
    """Refuse a file whose usual bar spacing is not `bar_ms`.

    The usual spacing is the most common step between readable, increasing rows:
    nights, weekends and holidays make longer steps, but not the most common one.
    """
    ts = rows.ts
    ok = np.flatnonzero((ts[1:] > ts[:-1]) & (ts[:-1] > 0))
    if len(ok) == 0:
        return
    steps = (ts[ok + 1] - ts[ok])[:5_000]
    values, counts = np.unique(steps, return_counts=True)
    usual = int(values[int(np.argmax(counts))])
    if usual == bar_ms:
        return
    at = int(ok[int(np.flatnonzero(steps == usual)[0])])
    raise FeedError(
        f"{path} row {int(rows.lines[at + 1])}: bars are {format_interval(usual)} apart"
        f" (rows {int(rows.lines[at])} and {int(rows.lines[at + 1])}), but engine.bar_interval"
        f' is {format_interval(bar_ms)}; set engine.bar_interval = "{format_interval(usual)}"'
    )


_LOGGED_ROW_PROBLEMS = 10


def _column_index(path: Path, header: list[str] | None) -> tuple[int, list[int]]:
    """The header's width and where each of CSV_COLUMNS is in it, or what is missing."""
    if header is None:
        raise FeedError(f"{path}: the file is empty, expected a header row")
    names = [h.strip().lower() for h in header]
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise FeedError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(names) or 'none'}, need {', '.join(CSV_COLUMNS)}"
        )
    return len(names), [names.index(c) for c in CSV_COLUMNS]


def _read_csv(path: Path, symbol: str) -> _Rows:
    if not path.is_file():
        raise FeedError(f"{path}: no such file for symbol {symbol}")
    stamps: list[int] = []
    values: list[list[float]] = []
    lines: list[int] = []
    problems = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            width, index = _column_index(path, next(reader, None))
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # a blank line carries no data
                ts, row_values, problem = _parse_row(row, index, width)
                stamps.append(ts)
                values.append(row_values)
                lines.append(reader.line_num)
                if problem is not None:
                    problems += 1
                    if problems <= _LOGGED_ROW_PROBLEMS:
                        logger.warning("%s line %d: %s", path, reader.line_num, problem)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FeedError(f"{path}: not a readable UTF-8 CSV file ({exc})") from exc
    if problems > _LOGGED_ROW_PROBLEMS:
        logger.warning("%s: %d unreadable rows in all", path, problems)
    if not stamps:
        logger.warning("%s: header only, no rows to replay", path)
    return _Rows(
        np.array(stamps, dtype=np.int64),
        np.array(values, dtype=np.float64).reshape(-1, 5),
        np.array(lines, dtype=np.int64),
        str(path),
    )


def _parse_row(row: list[str], index: list[int], width: int) -> tuple[int, list[float], str | None]:
    """The row's ts and values, with NaN (ts 0) for what cannot be read, and what that was."""
    problems = []
    if len(row) != width:
        problems.append(f"{len(row)} fields, expected {width}")
        row = (row + [""] * width)[:width]
    ts_text = row[index[0]].strip()
    ts = parse_timestamp(ts_text)
    if ts is None:
        problems.append(f"unreadable timestamp {ts_text!r}")
    values = []
    for col, i in zip(CSV_COLUMNS[1:], index[1:], strict=True):
        text = row[i].strip()
        try:
            values.append(float(text))
        except ValueError:
            problems.append(f"unreadable {col} {text!r}")
            values.append(math.nan)
    return ts or 0, values, "; ".join(problems) or None


def parse_timestamp(text: str) -> int | None:
    """Epoch ms from ISO-8601 (naive = UTC) or epoch seconds/ms (ms from 1e11 up);
    None when unreadable."""
    if len(text) >= 10 and text[4] == "-":  # most likely a date: try that first
        moment = _iso_ms(text)
        if moment is not None:
            return moment
    try:
        number = float(text)
    except ValueError:
        return _iso_ms(text)
    if not math.isfinite(number):
        return None
    # 1e11 s is the year 5138 and 1e11 ms is 1973, so the magnitude tells the unit.
    return round(number * 1000) if abs(number) < 1e11 else round(number)


def _iso_ms(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


# ---------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True, slots=True)
class Rejection:
    symbol: str
    ts: int
    reason: str


def _fmt(x: float) -> str:
    text = f"{x:.10g}"
    return text if any(ch in text for ch in ".ena") else text + ".0"


def _list(items: list[str], one: str, many: str) -> str:
    return f"{', '.join(items)} {one if len(items) == 1 else many}"


def bar_problem(bar: Bar) -> str | None:
    """What is wrong with a bar on its own (no history needed), or None."""
    low, high, volume = bar.low, bar.high, bar.volume
    # A sound bar passes one chain of comparisons (NaN fails every one, and prices
    # inside [low, high] under a finite high are finite): every bar of every cycle
    # asks, and the messages below cost five times as much to rule out one by one.
    if (
        bar.ts > 0
        and 0 < low <= bar.open <= high < math.inf
        and low <= bar.close <= high
        and 0 <= volume < math.inf
    ):
        return None
    return _bar_problem_found(bar)


def _bar_problem_found(bar: Bar) -> str | None:
    """`bar_problem` for a bar that failed the quick test: what exactly is wrong."""
    if bar.ts <= 0:
        return f"ts={bar.ts} is not a valid epoch ms"
    fields = {
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
    }
    bad = [f"{k}={_fmt(v)}" for k, v in fields.items() if not math.isfinite(v)]
    if bad:
        return _list(bad, "is not finite", "are not finite")
    bad = [f"{k}={_fmt(v)}" for k, v in fields.items() if k != "volume" and v <= 0]
    if bad:
        return _list(bad, "is not positive", "are not positive")
    if bar.volume < 0:
        return f"volume={_fmt(bar.volume)} is negative"
    if bar.high < bar.low:
        return f"high={_fmt(bar.high)} is below low={_fmt(bar.low)}"
    for name in ("open", "close"):
        value = fields[name]
        if not bar.low <= value <= bar.high:
            return f"{name}={_fmt(value)} is outside [low={_fmt(bar.low)}, high={_fmt(bar.high)}]"
    return None


@dataclass(slots=True)
class _History:
    last: Bar
    ranges: deque[float]
    jumped: list[Bar] = field(default_factory=list)  # consecutive bars rejected as jumps


class BarValidator:
    """Accepts or rejects bars per symbol against the last accepted bar.

    State is the last accepted bar and the true ranges of the last `window` accepted
    bars; a rejected bar changes nothing, so one bad tick cannot move the reference.
    The jump rule waits for `min_bars` ranges and is skipped while they are all zero
    (a flat series gives no scale to judge a move by). A jump confirmed by the bars
    after it (`confirm_bars` in a row at the new level) is a real move and accepted.

    With `bar_ms`, a bar closer to the last than one bar interval is rejected: the
    data mixes intervals (daily bars may be half an interval short, for a clock
    change). Longer steps are nights, weekends, holidays or gaps. With `exchanges`
    (symbol -> exchange calendar) and intraday bars, a step that skips open market
    time is a gap inside a session: the bar after it is rejected (its range and
    indicators would span the hole), and the series goes on from it, so one gap
    costs one bar, not the rest of the file.
    """

    def __init__(
        self,
        max_jump: float = 10.0,
        window: int = 20,
        *,
        min_bars: int = 5,
        bar_ms: int | None = None,
        exchanges: Mapping[str, str] | None = None,
        confirm_bars: int = 3,
    ):
        if max_jump <= 0 or window < 1 or min_bars < 1:
            raise ValueError(
                f"max_jump={max_jump} must be > 0, window={window} and min_bars={min_bars} >= 1"
            )
        self.max_jump = max_jump
        self.window = window
        self.min_bars = min(min_bars, window)
        self.min_step = 0 if bar_ms is None else bar_ms if bar_ms < DAY_MS else bar_ms // 2
        self.bar_ms = bar_ms
        self.exchanges = {s.upper(): e for s, e in (exchanges or {}).items()}
        self.confirm_bars = max(2, confirm_bars)
        self._history: dict[str, _History] = {}

    def check(self, bar: Bar) -> Rejection | None:
        reason = bar_problem(bar) or self._sequence_problem(bar)
        if reason is not None and reason.startswith("jump") and self._confirms_level(bar):
            return None
        if reason is None:
            gap = self._gap(bar)
            if gap is not None:
                self._history[bar.symbol].last = bar  # the series resumes after the hole
                return Rejection(bar.symbol, bar.ts, gap)
        if reason is not None:
            return Rejection(bar.symbol, bar.ts, reason)
        self._accept(bar)
        return None

    def _confirms_level(self, bar: Bar) -> bool:
        """A jump that the bars after it agree with is a real move, not a bad tick.

        One outlier is rejected and leaves the reference alone; but when
        `confirm_bars` jumped bars in a row sit at one new level (each within the
        jump limit of the one before), the market has moved there: a crash or a
        gap. The series goes on from them, instead of rejecting every bar after it.
        """
        history = self._history[bar.symbol]
        pending = history.jumped
        mean_range = sum(history.ranges) / len(history.ranges)
        if pending and abs(bar.close - pending[-1].close) > self.max_jump * mean_range:
            pending.clear()  # not the level the last jump went to: start over
        pending.append(bar)
        if len(pending) < self.confirm_bars:
            return False
        confirmed = list(pending)
        pending.clear()
        del self._history[bar.symbol]
        for b in confirmed:
            self._accept(b)
        return True

    def _gap(self, bar: Bar) -> str | None:
        exchange = self.exchanges.get(bar.symbol.upper())
        history = self._history.get(bar.symbol)
        if exchange is None or history is None or self.bar_ms is None or self.bar_ms >= DAY_MS:
            return None
        from engine.market.calendar import missed_bars

        # One interval of open time between two bars is the next bar; more is a hole.
        missing = missed_bars(exchange, history.last.ts, bar.ts, self.bar_ms) - 1
        if missing < 0.5:
            return None
        return (
            f"gap inside the {exchange} session: {missing:.0f} bar(s) of"
            f" {format_interval(self.bar_ms)} missing before ts {bar.ts}"
        )

    def seed(self, bars: Iterable[Bar]) -> None:
        """Restore state from stored (already accepted) history, e.g. on restart."""
        for bar in sorted(bars, key=lambda b: b.ts):
            self._accept(bar)

    def last_accepted(self, symbol: str) -> Bar | None:
        history = self._history.get(symbol)
        return history.last if history else None

    def reset(self, symbol: str) -> None:
        """Forget a symbol, e.g. after a real level change (split) the operator confirmed;
        otherwise every bar after such a gap is rejected as a jump."""
        self._history.pop(symbol, None)

    def _sequence_problem(self, bar: Bar) -> str | None:
        history = self._history.get(bar.symbol)
        if history is None:
            return None
        last = history.last
        if bar.ts <= last.ts:
            kind = "duplicate" if bar.ts == last.ts else "out of order"
            return f"ts {bar.ts} is not after the last bar {last.ts} ({kind})"
        if bar.ts - last.ts < self.min_step and self.bar_ms is not None:
            return (
                f"ts {bar.ts} is {format_interval(bar.ts - last.ts)} after the last bar, less"
                f" than the bar interval {format_interval(self.bar_ms)} (mixed intervals)"
            )
        ranges = history.ranges
        if len(ranges) >= self.min_bars:
            mean_range = sum(ranges) / len(ranges)
            jump = abs(bar.close - last.close)
            if mean_range > 0 and jump > self.max_jump * mean_range:
                return (
                    f"jump |{_fmt(bar.close)}-{_fmt(last.close)}|={_fmt(jump)} exceeds "
                    f"{self.max_jump:g} x mean range {mean_range:.6g}"
                )
        return None

    def _accept(self, bar: Bar) -> None:
        history = self._history.get(bar.symbol)
        if history is None:
            history = self._history[bar.symbol] = _History(bar, deque(maxlen=self.window))
            history.ranges.append(bar.high - bar.low)
            return
        prev_close = history.last.close
        history.ranges.append(max(bar.high, prev_close) - min(bar.low, prev_close))
        history.last = bar
        history.jumped.clear()
