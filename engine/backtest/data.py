"""Bars for a backtest: a folder of SYMBOL.csv files or the simulator, cut to a date
range, and the replay feed that hands them to the `Trader` on market time.

Rows are not repaired here: a bad row reaches the trader's bar validator, which
rejects it with its reason and counts it, exactly as in a live replay.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import interval_ms as config_interval_ms
from engine.domain import Bar, Regime
from engine.market.feeds import CsvReplayFeed, FeedError, generate_history

SIM_END_TS = 1_767_225_600_000  # 2026-01-01 UTC: simulated history ends here


class DataError(ValueError):
    """The data asked for cannot be backtested; the message says which and why."""


@dataclass(frozen=True)
class MarketData:
    bars: dict[str, list[Bar]]
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> digest
    source: str = ""

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.bars)


def interval_ms(text: str) -> int:
    try:
        return config_interval_ms(text)
    except ValueError as exc:
        raise DataError(f"bar interval {text!r}: {exc}") from None


def interval_text(ms: int) -> str:
    """The largest whole unit of an interval: 86_400_000 -> 1d, 300_000 -> 5m."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{max(ms // 1000, 1)}s"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_csv(
    data_dir: Path, symbols: Sequence[str] | None, bar_ms: int | None = None
) -> MarketData:
    """Every row of each SYMBOL.csv, in file order; with `bar_ms`, each file's usual
    spacing must match it."""
    data_dir = Path(data_dir)
    if symbols:
        missing = [s for s in symbols if not (data_dir / f"{s}.csv").is_file()]
        if missing and data_dir.is_dir():
            known = sorted(p.stem for p in data_dir.glob("*.csv"))
            raise DataError(
                f"unknown symbol(s) {', '.join(missing)}: no {missing[0]}.csv in {data_dir};"
                f" available: {', '.join(known) or 'none'}"
            )
    try:
        feed = CsvReplayFeed(data_dir, symbols, bar_ms=bar_ms)
        bars = feed.warmup(2**62, 0, 1)
    except FeedError as exc:
        raise DataError(str(exc)) from None
    empty = [s for s, rows in bars.items() if not rows]
    if empty:
        raise DataError(f"{data_dir / (empty[0] + '.csv')}: no rows after the header")
    digests = {f"{s}.csv": _digest(data_dir / f"{s}.csv") for s in feed.symbols}
    return MarketData(bars, digests, f"csv:{data_dir}")


def simulate(symbols: Sequence[str], n_bars: int, seed: int, bar_ms: int) -> MarketData:
    """Seeded simulated history (with the true regime of every bar)."""
    frames = generate_history(symbols, n_bars, seed, bar_ms=bar_ms, end_ts=SIM_END_TS)
    bars = {}
    for symbol, df in frames.items():
        bars[symbol] = [
            Bar(symbol, int(ts), o, h, lo, c, v, Regime(r))
            for ts, o, h, lo, c, v, r in zip(
                df["ts"].tolist(),
                df["open"].tolist(),
                df["high"].tolist(),
                df["low"].tolist(),
                df["close"].tolist(),
                df["volume"].tolist(),
                df["true_regime"].tolist(),
                strict=True,
            )
        ]
    return MarketData(bars, {}, f"sim:seed={seed}:bars={n_bars}")


def split(
    data: MarketData, start: int | None, end: int | None, warmup: int
) -> tuple[dict[str, list[Bar]], dict[str, list[Bar]]]:
    """(warm-up history before `start`, at most `warmup` bars per symbol; the bars
    to trade, from `start` to `end` inclusive). Refuses a range without bars."""
    history: dict[str, list[Bar]] = {}
    traded: dict[str, list[Bar]] = {}
    lo = start if start is not None else -(2**62)
    hi = end if end is not None else 2**62
    for symbol, bars in data.bars.items():
        before = [b for b in bars if b.ts < lo]
        history[symbol] = before[-warmup:] if warmup else []
        traded[symbol] = [b for b in bars if lo <= b.ts <= hi]
    if not any(traded.values()):
        first = min((b.ts for bars in data.bars.values() for b in bars), default=None)
        last = max((b.ts for bars in data.bars.values() for b in bars), default=None)
        raise DataError(
            f"no bars between {_iso(start)} and {_iso(end)}; the data covers"
            f" {_iso(first)} to {_iso(last)}"
        )
    return history, traded


def _iso(ts: int | None) -> str:
    if ts is None:
        return "the open end"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="minutes")


def infer_interval_ms(bars: Mapping[str, list[Bar]]) -> int:
    """The most common spacing between consecutive bars of a symbol."""
    gaps: dict[int, int] = {}
    for rows in bars.values():
        for a, b in itertools.pairwise(rows):
            d = b.ts - a.ts
            if d > 0:
                gaps[d] = gaps.get(d, 0) + 1
    return max(gaps, key=lambda d: gaps[d]) if gaps else 60_000


class ReplayFeed:
    """Hands out each symbol's rows in file order: on a cycle at market time `now`,
    every row stamped at or before `now` not yet handed out."""

    def __init__(self, bars: Mapping[str, list[Bar]]) -> None:
        self.symbols: tuple[str, ...] = tuple(bars)
        self._bars = {s: list(rows) for s, rows in bars.items()}
        self._cursor = dict.fromkeys(self.symbols, 0)

    def timeline(self) -> list[int]:
        """The market times to cycle at: every distinct valid bar time, in order."""
        return sorted({b.ts for rows in self._bars.values() for b in rows if b.ts > 0})

    def warmup(self, n: int, end_ts: int, interval_ms: int) -> dict[str, list[Bar]]:
        return {}

    def market_time(self, wall_ms: int) -> int | None:
        return None  # a replay's time is its bars' time

    def next_bars(self, now_ms: int) -> list[Bar]:
        out: list[Bar] = []
        for symbol in self.symbols:
            rows, i = self._bars[symbol], self._cursor[symbol]
            while i < len(rows) and rows[i].ts <= now_ms:
                out.append(rows[i])
                i += 1
            self._cursor[symbol] = i
        return out

    def remaining(self) -> int:
        return sum(len(self._bars[s]) - self._cursor[s] for s in self.symbols)


def finite_close(bar: Bar) -> bool:
    return math.isfinite(bar.close) and bar.close > 0
