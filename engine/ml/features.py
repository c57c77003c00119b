"""Model features: a batch frame for training and a live row for the cycle.

`feature_frame(bars)` turns a symbol's bars (oldest first) into one row of
features per bar, NaN until every input is warm. `LiveFeatures` gives the same
row for the latest bar from the cycle's indicator `Snapshot` plus a small window
of its own (closes, returns, volumes), so training and trading see one
definition. Every feature is scale-free (returns, ratios, oscillators) so a
model trained on one symbol's price level applies to another's.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from engine.domain import Bar
from engine.market import indicators as ind
from engine.market.indicators import IncrementalIndicators, Snapshot

if TYPE_CHECKING:
    import pandas as pd

FloatArray = npt.NDArray[np.float64]

RETURN_HORIZONS: tuple[int, ...] = (5, 20, 60)
VOL_WINDOWS: tuple[int, ...] = (20, 60)
VOLUME_WINDOW = 60

FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "ret_60",
    "vol_20",
    "vol_60",
    "vol_ratio",
    "trend_z_20",
    "trend_z_60",
    "range_pct",
    "atr_pct",
    "adx",
    "di_spread",
    "rsi",
    "dist_sma_fast",
    "dist_sma_slow",
    "sma_spread",
    "ema_spread",
    "bb_pos",
    "bb_width",
    "macd_hist_pct",
    "volume_ratio",
)
N_FEATURES = len(FEATURES)
# Bars before every feature has a value: the longest return needs 60 + 1 closes.
WARMUP_BARS = max(*RETURN_HORIZONS, *VOL_WINDOWS, VOLUME_WINDOW, ind.SMA_SLOW) + 1


def _safe_div(num: float, den: float) -> float:
    """num / den, 0 for a zero denominator (a flat market), NaN if either is NaN."""
    if math.isnan(den) or math.isnan(num):
        return math.nan
    return num / den if den != 0 else 0.0


def _safe_div_series(num: pd.Series, den: pd.Series) -> pd.Series:
    out = num / den.where(den != 0)
    return out.where(den != 0, 0.0).where(num.notna() & den.notna())


def _values(series: pd.Series) -> FloatArray:
    return np.asarray(series, dtype=np.float64)


def _rolling_std(values: FloatArray, window: int) -> FloatArray:
    """Population standard deviation over a trailing window, NaN until it is full.

    Two passes (mean, then squared deviations) like `_window_std`, so batch and live
    agree to rounding.
    """
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        w = np.lib.stride_tricks.sliding_window_view(values, window)
        mean = w.sum(axis=1) / window
        out[window - 1 :] = np.sqrt(((w - mean[:, None]) ** 2).sum(axis=1) / window)
    return out


def _rolling_mean(values: FloatArray, window: int) -> FloatArray:
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        out[window - 1 :] = (
            np.lib.stride_tricks.sliding_window_view(values, window).sum(axis=1) / window
        )
    return out


def feature_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """One row of `FEATURES` per bar (columns high, low, close, volume; oldest first)."""
    import pandas as pd  # training and backtests only: the live row below needs no pandas

    high = bars["high"].astype(np.float64)
    low = bars["low"].astype(np.float64)
    close = bars["close"].astype(np.float64)
    volume = bars["volume"].astype(np.float64)
    c = close.to_numpy()

    out: dict[str, pd.Series] = {}
    out["ret_1"] = close / close.shift(1) - 1.0
    for k in RETURN_HORIZONS:
        out[f"ret_{k}"] = close / close.shift(k) - 1.0
    r1 = out["ret_1"].to_numpy()
    for w in VOL_WINDOWS:
        std = np.full(len(c), np.nan)
        std[1:] = _rolling_std(r1[1:], w)
        out[f"vol_{w}"] = pd.Series(std, index=bars.index)
    out["vol_ratio"] = _safe_div_series(out["vol_20"], out["vol_60"])
    for w in VOL_WINDOWS:
        out[f"trend_z_{w}"] = _safe_div_series(out[f"ret_{w}"], out[f"vol_{w}"] * math.sqrt(w))
    out["range_pct"] = (high - low) / close

    atr = ind.atr(high, low, close, ind.ATR_PERIOD)
    out["atr_pct"] = atr / close
    out["adx"] = ind.adx(high, low, close, ind.ADX_PERIOD) / 100.0
    plus = ind.plus_di(high, low, close, ind.ADX_PERIOD)
    minus = ind.minus_di(high, low, close, ind.ADX_PERIOD)
    out["di_spread"] = _safe_div_series(plus - minus, plus + minus)
    out["rsi"] = ind.rsi(close, ind.RSI_PERIOD) / 100.0 - 0.5
    sma_fast = ind.sma(close, ind.SMA_FAST)
    sma_slow = ind.sma(close, ind.SMA_SLOW)
    out["dist_sma_fast"] = close / sma_fast - 1.0
    out["dist_sma_slow"] = close / sma_slow - 1.0
    out["sma_spread"] = sma_fast / sma_slow - 1.0
    out["ema_spread"] = ind.ema(close, ind.EMA_FAST) / ind.ema(close, ind.EMA_SLOW) - 1.0
    bb = ind.bollinger(close, ind.BB_PERIOD, ind.BB_NBDEV)
    out["bb_pos"] = _safe_div_series(close - bb["middle"], bb["upper"] - bb["lower"])
    out["bb_width"] = (bb["upper"] - bb["lower"]) / bb["middle"]
    out["macd_hist_pct"] = ind.macd(close)["hist"] / close
    vol_mean = pd.Series(_rolling_mean(_values(volume), VOLUME_WINDOW), index=bars.index)
    out["volume_ratio"] = _safe_div_series(volume, vol_mean)
    return pd.DataFrame({name: out[name] for name in FEATURES}, index=bars.index)


class LiveFeatures:
    """One symbol's feature row, bar by bar; the cycle feeds it the bar and its Snapshot.

    `update` returns a float64 array in `FEATURES` order equal (to rounding) to the
    last row of `feature_frame` over the same bars. Cost per bar is constant: the
    windows are bounded by the longest lookback (60 bars).
    """

    __slots__ = ("_bars", "_closes", "_returns", "_volumes")

    def __init__(self) -> None:
        self._closes: deque[float] = deque(maxlen=max(RETURN_HORIZONS) + 1)
        self._returns: deque[float] = deque(maxlen=max(VOL_WINDOWS))
        self._volumes: deque[float] = deque(maxlen=VOLUME_WINDOW)
        self._bars = 0

    @classmethod
    def warm(cls, bars: pd.DataFrame) -> tuple[LiveFeatures, IncrementalIndicators, FloatArray]:
        """Rebuild from stored bars; returns the features, the indicators and the last row."""
        live, state = cls(), IncrementalIndicators()
        row = np.full(N_FEATURES, np.nan)
        for h, lo, c, v in zip(
            bars["high"].tolist(),
            bars["low"].tolist(),
            bars["close"].tolist(),
            bars["volume"].tolist(),
            strict=True,
        ):
            row = live.update_values(h, lo, c, v, state.update(h, lo, c))
        return live, state, row

    @property
    def ready(self) -> bool:
        """True once every feature has a value (after `WARMUP_BARS` bars)."""
        return self._bars >= WARMUP_BARS

    def update(self, bar: Bar, snap: Snapshot) -> FloatArray:
        return self.update_values(bar.high, bar.low, bar.close, bar.volume, snap)

    def update_values(
        self, high: float, low: float, close: float, volume: float, snap: Snapshot
    ) -> FloatArray:
        closes, returns, volumes = self._closes, self._returns, self._volumes
        if closes:
            returns.append(close / closes[-1] - 1.0)
        closes.append(close)
        volumes.append(volume)
        self._bars += 1
        n_closes = len(closes)

        rets = {}
        for k in RETURN_HORIZONS:
            rets[k] = close / closes[-k - 1] - 1.0 if n_closes > k else math.nan
        vols = {}
        for w in VOL_WINDOWS:
            vols[w] = _std_tail(returns, w) if len(returns) >= w else math.nan
        nan = math.nan
        plus, minus = snap.plus_di, snap.minus_di
        width = snap.bb_upper - snap.bb_lower
        volume_mean = sum(volumes) / VOLUME_WINDOW if len(volumes) >= VOLUME_WINDOW else nan
        row = (
            snap.ret_1,
            rets[5],
            rets[20],
            rets[60],
            vols[20],
            vols[60],
            _safe_div(vols[20], vols[60]),
            _safe_div(rets[20], vols[20] * math.sqrt(20)),
            _safe_div(rets[60], vols[60] * math.sqrt(60)),
            (high - low) / close,
            snap.atr_pct,
            snap.adx / 100.0,
            _safe_div(plus - minus, plus + minus),
            snap.rsi / 100.0 - 0.5,
            close / snap.sma_fast - 1.0,
            close / snap.sma_slow - 1.0,
            snap.sma_fast / snap.sma_slow - 1.0,
            snap.ema_fast / snap.ema_slow - 1.0,
            _safe_div(close - snap.bb_middle, width),
            width / snap.bb_middle,
            snap.macd_hist / close,
            _safe_div(volume, volume_mean),
        )
        return np.array(row, dtype=np.float64)


def _std_tail(values: deque[float], window: int) -> float:
    """Population std of the last `window` values, two-pass like the batch version.
    Written for speed (every symbol, every bar, twice): the window sliced off the deque
    without copying it whole, and the squares multiplied out and summed from a list
    rather than a generator, about a third faster at 60 values."""
    tail = list(islice(values, len(values) - window, None))
    mean = sum(tail) / window
    return math.sqrt(sum([(x - mean) * (x - mean) for x in tail]) / window)
