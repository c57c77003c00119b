"""Indicators and model features of a whole backtest, computed in one vectorised pass.

Live, the `Trader` turns each accepted bar into a `Snapshot` (IncrementalIndicators)
and a feature row (LiveFeatures), one bar at a time. A backtest knows every bar in
advance, so it computes the same values for the whole series at once with the batch
functions (TA-Lib's definitions, which the incremental ones equal to rounding:
tests/test_indicators.py, tests/test_ml_features.py) and hands them to the Trader
bar by bar through the same two calls. The Trader's cycle is unchanged: it still
asks for each bar's snapshot and row, validates bars, decides, sizes and trades.

Which bars reach the indicators is the bar validator's decision, so the series is
the warm-up history plus the traded bars a copy of the Trader's own validator
accepts, in the order the Trader will see them. A bar handed over that is not the
one computed for raises `PrecomputeMismatch`: the run stops rather than trade on
another bar's numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.domain import Bar
from engine.market import indicators as ind
from engine.market.feeds import BarValidator
from engine.market.indicators import IncrementalIndicators, Snapshot
from engine.ml.features import FEATURES, WARMUP_BARS, FloatArray, LiveFeatures, feature_frame


class PrecomputeMismatch(RuntimeError):
    """The Trader asked for a bar the precomputed series does not hold next."""


def snapshot_columns(high: pd.Series, low: pd.Series, close: pd.Series) -> dict[str, FloatArray]:
    """Every `Snapshot` field for every bar, by the batch indicator functions."""
    bb = ind.bollinger(close, ind.BB_PERIOD, ind.BB_NBDEV)
    macd = ind.macd(close, ind.EMA_FAST, ind.EMA_SLOW, ind.MACD_SIGNAL)
    atr = ind.atr(high, low, close, ind.ATR_PERIOD)
    dmi = ind.directional(high, low, close, ind.ADX_PERIOD)
    columns = {
        "close": close,
        "sma_fast": ind.sma(close, ind.SMA_FAST),
        "sma_slow": ind.sma(close, ind.SMA_SLOW),
        "ema_fast": ind.ema(close, ind.EMA_FAST),
        "ema_slow": ind.ema(close, ind.EMA_SLOW),
        "rsi": ind.rsi(close, ind.RSI_PERIOD),
        "atr": atr,
        "atr_pct": atr / close,
        "adx": dmi["adx"],
        "plus_di": dmi["plus_di"],
        "minus_di": dmi["minus_di"],
        "bb_upper": bb["upper"],
        "bb_middle": bb["middle"],
        "bb_lower": bb["lower"],
        "macd": macd["macd"],
        "macd_signal": macd["signal"],
        "macd_hist": macd["hist"],
        "ret_1": close / close.shift(1) - 1.0,
    }
    return {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}


def snapshots(bars: Sequence[Bar]) -> list[Snapshot]:
    """The snapshot after each bar, as `IncrementalIndicators` fed these bars gives it."""
    if not bars:
        return []
    frame = _frame(bars)
    cols = snapshot_columns(frame["high"], frame["low"], frame["close"])
    closes = [b.close for b in bars]  # the bar's own float, bit for bit
    names = [n for n in ind.SNAPSHOT_FIELDS if n not in ("close", "bars")]
    values = zip(*(cols[n].tolist() for n in names), strict=True)
    make: Callable[..., Snapshot] = Snapshot  # the fields in order: floats, then bars
    return [
        make(close, *rest, i + 1)
        for i, (close, rest) in enumerate(zip(closes, values, strict=True))
    ]


def _frame(bars: Sequence[Bar]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "high": np.fromiter((b.high for b in bars), np.float64, len(bars)),
            "low": np.fromiter((b.low for b in bars), np.float64, len(bars)),
            "close": np.fromiter((b.close for b in bars), np.float64, len(bars)),
            "volume": np.fromiter((b.volume for b in bars), np.float64, len(bars)),
        }
    )


class PrecomputedIndicators(IncrementalIndicators):
    """Hands out precomputed snapshots where the Trader asks `update`."""

    __slots__ = ("_at", "_snaps")

    def __init__(self, snaps: Sequence[Snapshot], start: int) -> None:
        super().__init__()
        self._snaps = snaps
        self._at = start  # the next bar's index in `snaps`
        self._last = snaps[start - 1] if start else None
        self._n = start

    def update(self, high: float, low: float, close: float) -> Snapshot:
        at = self._at
        if at >= len(self._snaps) or self._snaps[at].close != close:
            raise PrecomputeMismatch(
                f"bar {at} with close {close!r} is not the next precomputed bar"
            )
        snap = self._snaps[at]
        self._at = self._n = at + 1
        self._last = snap
        return snap


_NOT_COMPUTED = np.full(len(FEATURES), np.nan)
_NOT_COMPUTED.flags.writeable = False


class PrecomputedFeatures(LiveFeatures):
    """Hands out precomputed feature rows where the Trader asks `update`; `at` is the
    index of the row handed out last (the batch model predicts by it). Without rows
    (a run without a model, where nothing reads them) every row is NaN: not warm."""

    __slots__ = ("_rows", "at")

    def __init__(self, rows: FloatArray | None, start: int) -> None:
        super().__init__()
        self._rows = rows
        self.at = start - 1
        self._bars = start

    def update(self, bar: Bar, snap: Snapshot) -> FloatArray:
        self.at += 1
        self._bars += 1
        if self._rows is None:
            return _NOT_COMPUTED
        row: FloatArray = self._rows[self.at]
        return row

    @property
    def ready(self) -> bool:
        return self._bars >= WARMUP_BARS


@dataclass(frozen=True)
class Series:
    """One symbol's precomputed series: the bars the indicators see (history, then
    the accepted traded bars), their snapshots and feature rows."""

    bars: list[Bar]
    snapshots: list[Snapshot]
    features: FloatArray | None  # len(bars) x len(FEATURES); None when not asked for
    start: int  # index of the first traded bar

    def indicators(self) -> PrecomputedIndicators:
        return PrecomputedIndicators(self.snapshots, self.start)

    def live_features(self) -> PrecomputedFeatures:
        return PrecomputedFeatures(self.features, self.start)


def accepted(validator: BarValidator, traded: Mapping[str, list[Bar]]) -> dict[str, list[Bar]]:
    """The traded bars a copy of `validator` accepts, per symbol, in order. The
    validator's state is per symbol, so each symbol's own order is the Trader's."""
    clone = copy.deepcopy(validator)
    return {s: [b for b in bars if clone.check(b) is None] for s, bars in traded.items()}


def precompute(
    history: Mapping[str, list[Bar]], traded: Mapping[str, list[Bar]], *, features: bool = True
) -> dict[str, Series]:
    """Each symbol's series from its warm-up history and its accepted traded bars;
    the model's feature rows only with `features` (only a model reads them)."""
    out = {}
    for symbol in traded:
        before = list(history.get(symbol, []))
        bars = before + list(traded[symbol])
        rows = None
        if features:
            rows = np.empty((0, len(FEATURES)))
            if bars:
                rows = feature_frame(_frame(bars)).to_numpy(dtype=np.float64)
            rows = np.ascontiguousarray(rows)
        out[symbol] = Series(bars, snapshots(bars), rows, len(before))
    return out
