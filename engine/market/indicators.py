"""Technical indicators with TA-Lib's definitions, in batch and one bar at a time.

The batch functions take pandas Series and return Series (or DataFrames) on the
same index. They reproduce TA-Lib 0.8.2 with its default settings: the same seeds,
Wilder smoothing where TA-Lib uses it, the first valid value at the same index and
NaN before it. Leading NaNs in the input are skipped the way the `talib` wrapper
skips them. The arithmetic follows TA-Lib's operation order, so results agree to
rounding, not merely to a tolerance chosen to hide a different formula.

`IncrementalIndicators` keeps the state of all of them for one symbol and turns
each new bar into a `Snapshot` in constant time, with the same numbers the batch
functions give at that index. An engine that restarts rebuilds it from stored bars
with `IncrementalIndicators.warm`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
NAN = math.nan

# TA-Lib treats magnitudes below this as zero (TA_IS_ZERO, TA_IS_ZERO_OR_NEG).
_ZERO = 1e-8


def _values(series: pd.Series) -> FloatArray:
    return np.asarray(series, dtype=np.float64)


def _first_valid(*arrays: FloatArray) -> int:
    """Index of the first row where every input is a number (len if none)."""
    ok = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        ok &= ~np.isnan(a)
    hits = np.flatnonzero(ok)
    return int(hits[0]) if hits.size else len(ok)


def _check_period(name: str, period: int, minimum: int = 2) -> None:
    if period < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {period}")


def _check_aligned(*series: pd.Series) -> None:
    first = series[0].index
    for s in series[1:]:
        if not s.index.equals(first):
            raise ValueError("high, low and close must share one index")


def _nan_array(n: int) -> FloatArray:
    return np.full(n, np.nan)


# --- kernels on plain arrays (no leading NaNs) -------------------------------------


def _sma_kernel(x: FloatArray, period: int) -> FloatArray:
    out = _nan_array(len(x))
    if len(x) >= period:
        out[period - 1 :] = sliding_window_view(x, period).sum(axis=1) / period
    return out


def _ema_kernel(x: FloatArray, period: int, start: int = 0) -> FloatArray:
    """TA-Lib's EMA, seeded with the mean of `period` values ending at `start + period - 1`.

    `start` lets MACD seed its fast EMA late so it lines up with the slow one.
    """
    n = len(x)
    out = _nan_array(n)
    first = start + period - 1
    if n <= first:
        return out
    values = x.tolist()
    total = 0.0
    for v in values[start : first + 1]:
        total += v
    prev = total / period
    k = 2.0 / (period + 1)
    result = [prev]
    for v in values[first + 1 :]:
        prev = ((v - prev) * k) + prev
        result.append(prev)
    out[first:] = result
    return out


def _rsi_kernel(x: FloatArray, period: int) -> FloatArray:
    n = len(x)
    out = _nan_array(n)
    if n <= period:
        return out
    values = x.tolist()
    gain = loss = 0.0
    for i in range(1, period + 1):
        d = values[i] - values[i - 1]
        if d < 0:
            loss -= d
        else:
            gain += d
    gain /= period
    loss /= period
    total = gain + loss
    result = [100.0 * (gain / total) if abs(total) >= _ZERO else 0.0]
    m = period - 1
    for i in range(period + 1, n):
        d = values[i] - values[i - 1]
        loss *= m
        gain *= m
        if d < 0:
            loss -= d
        else:
            gain += d
        loss /= period
        gain /= period
        total = gain + loss
        result.append(100.0 * (gain / total) if abs(total) >= _ZERO else 0.0)
    out[period:] = result
    return out


def _true_range(h: float, lo: float, prev_close: float) -> float:
    return max(h - lo, abs(prev_close - h), abs(prev_close - lo))


def _atr_kernel(high: FloatArray, low: FloatArray, close: FloatArray, period: int) -> FloatArray:
    n = len(close)
    out = _nan_array(n)
    if n <= period:
        return out
    h, lo, c = high.tolist(), low.tolist(), close.tolist()
    atr = 0.0
    for i in range(1, period + 1):
        atr += _true_range(h[i], lo[i], c[i - 1])
    atr /= period
    result = [atr]
    m = period - 1
    for i in range(period + 1, n):
        atr *= m
        atr += _true_range(h[i], lo[i], c[i - 1])
        atr /= period
        result.append(atr)
    out[period:] = result
    return out


def _directional_movement(up: float, down: float) -> tuple[float, float]:
    """(+DM, -DM) of one bar from its high's rise and its low's fall, as TA-Lib counts them."""
    if up > 0 and up > down:
        return up, 0.0
    if down > 0 and up < down:
        return 0.0, down
    return 0.0, 0.0


def _di_dx(pdm: float, mdm: float, tr: float) -> tuple[float, float, float | None]:
    """+DI, -DI and DX from the smoothed sums; DX is None where it is undefined (no range,
    or no direction), and then ADX stays where it was, as in TA-Lib."""
    if abs(tr) < _ZERO:
        return 0.0, 0.0, None
    p, q = 100.0 * (pdm / tr), 100.0 * (mdm / tr)
    di_sum = q + p
    return p, q, (100.0 * (abs(q - p) / di_sum) if abs(di_sum) >= _ZERO else None)


def _directional_kernel(
    high: FloatArray, low: FloatArray, close: FloatArray, period: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """+DI, -DI and ADX in one pass, exactly as TA-Lib's PLUS_DI, MINUS_DI and ADX."""
    n = len(close)
    plus_out, minus_out, adx_out = _nan_array(n), _nan_array(n), _nan_array(n)
    if n <= period:
        return plus_out, minus_out, adx_out
    h, lo, c = high.tolist(), low.tolist(), close.tolist()
    pdm = mdm = tr = 0.0
    # TA-Lib seeds with period-1 raw sums, then smooths from the period-th bar on.
    for i in range(1, period):
        up_move, down_move = _directional_movement(h[i] - h[i - 1], lo[i - 1] - lo[i])
        pdm += up_move
        mdm += down_move
        tr += _true_range(h[i], lo[i], c[i - 1])
    plus_di: list[float] = []
    minus_di: list[float] = []
    dxs: list[float | None] = []
    for i in range(period, n):
        up_move, down_move = _directional_movement(h[i] - h[i - 1], lo[i - 1] - lo[i])
        pdm = pdm - (pdm / period) + up_move
        mdm = mdm - (mdm / period) + down_move
        tr = tr - (tr / period) + _true_range(h[i], lo[i], c[i - 1])
        p, q, dx = _di_dx(pdm, mdm, tr)
        plus_di.append(p)
        minus_di.append(q)
        dxs.append(dx)
    plus_out[period:] = plus_di
    minus_out[period:] = minus_di
    adx = _adx_from_dx(dxs, period)
    if adx:
        adx_out[2 * period - 1 :] = adx
    return plus_out, minus_out, adx_out


def _adx_from_dx(dxs: list[float | None], period: int) -> list[float]:
    """ADX from the DX series that starts at bar `period`: the mean of the first `period`
    values, then Wilder's smoothing. A missing DX (flat stretch) leaves ADX where it was."""
    if len(dxs) < period:
        return []
    dx_sum = 0.0
    for dx in dxs[:period]:
        if dx is not None:
            dx_sum += dx
    adx_value = dx_sum / period
    adx = [adx_value]
    for dx in dxs[period:]:
        if dx is not None:
            adx_value = ((adx_value * (period - 1)) + dx) / period
        adx.append(adx_value)
    return adx


def _bollinger_kernel(
    x: FloatArray, period: int, nbdev: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    middle = _sma_kernel(x, period)
    upper, lower = _nan_array(len(x)), _nan_array(len(x))
    if len(x) >= period:
        mean_sq = sliding_window_view(x * x, period).sum(axis=1) / period
        mid = middle[period - 1 :]
        var = mean_sq - mid * mid
        # TA-Lib's population variance from running sums; it calls anything below 1e-8 zero.
        std = np.where(var < _ZERO, 0.0, np.sqrt(np.maximum(var, 0.0)))
        upper[period - 1 :] = mid + std * nbdev
        lower[period - 1 :] = mid - std * nbdev
    return upper, middle, lower


def _macd_kernel(
    x: FloatArray, fast: int, slow: int, signal: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    n = len(x)
    line, sig, hist = _nan_array(n), _nan_array(n), _nan_array(n)
    first_line = slow - 1
    first_out = first_line + signal - 1
    if n <= first_out:
        return line, sig, hist
    slow_ema = _ema_kernel(x, slow)
    # TA-Lib seeds the fast EMA at the slow EMA's first bar, not at its own.
    fast_ema = _ema_kernel(x, fast, start=slow - fast)
    raw = fast_ema - slow_ema
    sig[first_line:] = _ema_kernel(raw[first_line:], signal)
    line[first_out:] = raw[first_out:]
    hist[first_out:] = line[first_out:] - sig[first_out:]
    return line, sig, hist


# --- public batch API --------------------------------------------------------------


def _series(values: FloatArray, index: pd.Index, name: Hashable) -> pd.Series:
    # pandas is imported here, not at the top: the engine's live path (the incremental
    # indicators below) never needs it, and it costs a start about half a second.
    import pandas as pd

    return pd.Series(values, index=index, name=name, dtype=np.float64)


def _frame(columns: Mapping[str, FloatArray], index: pd.Index) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns, index=index)


def _single(series: pd.Series, kernel_out: FloatArray) -> pd.Series:
    return _series(kernel_out, series.index, series.name)


def _skip_leading_nans(
    arrays: tuple[FloatArray, ...],
) -> tuple[int, tuple[FloatArray, ...]]:
    begin = _first_valid(*arrays)
    return begin, tuple(a[begin:] for a in arrays)


def _place(n: int, begin: int, tail: FloatArray) -> FloatArray:
    if begin == 0:
        return tail
    out = _nan_array(n)
    out[begin:] = tail
    return out


def sma(close: pd.Series, period: int = 30) -> pd.Series:
    """Simple moving average (TA-Lib SMA)."""
    _check_period("period", period)
    x = _values(close)
    begin, (tail,) = _skip_leading_nans((x,))
    return _single(close, _place(len(x), begin, _sma_kernel(tail, period)))


def ema(close: pd.Series, period: int = 30) -> pd.Series:
    """Exponential moving average seeded with the SMA of the first `period` values (TA-Lib EMA)."""
    _check_period("period", period)
    x = _values(close)
    begin, (tail,) = _skip_leading_nans((x,))
    return _single(close, _place(len(x), begin, _ema_kernel(tail, period)))


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's relative strength index (TA-Lib RSI)."""
    _check_period("period", period)
    x = _values(close)
    begin, (tail,) = _skip_leading_nans((x,))
    return _single(close, _place(len(x), begin, _rsi_kernel(tail, period)))


def atr(high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14) -> pd.Series:
    """Average true range with Wilder smoothing (TA-Lib ATR)."""
    _check_period("period", period)
    _check_aligned(high, low, close)
    arrays = (_values(high), _values(low), _values(close))
    begin, (h, lo, c) = _skip_leading_nans(arrays)
    out = _place(len(c) + begin, begin, _atr_kernel(h, lo, c, period))
    return _series(out, close.index, "atr")


def _directional(
    high: pd.Series, low: pd.Series, close: pd.Series, period: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    _check_period("period", period)
    _check_aligned(high, low, close)
    arrays = (_values(high), _values(low), _values(close))
    begin, (h, lo, c) = _skip_leading_nans(arrays)
    n = len(close)
    p, m, a = _directional_kernel(h, lo, c, period)
    return _place(n, begin, p), _place(n, begin, m), _place(n, begin, a)


def directional(
    high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14
) -> pd.DataFrame:
    """+DI, -DI and ADX from one pass (the three functions below each make their own)."""
    p, m, a = _directional(high, low, close, period)
    return _frame({"plus_di": p, "minus_di": m, "adx": a}, close.index)


def adx(high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14) -> pd.Series:
    """Average directional index (TA-Lib ADX); first value at 2 * period - 1."""
    return _series(_directional(high, low, close, period)[2], close.index, "adx")


def plus_di(high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14) -> pd.Series:
    """Plus directional indicator (TA-Lib PLUS_DI)."""
    return _series(_directional(high, low, close, period)[0], close.index, "plus_di")


def minus_di(high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14) -> pd.Series:
    """Minus directional indicator (TA-Lib MINUS_DI)."""
    out = _directional(high, low, close, period)[1]
    return _series(out, close.index, "minus_di")


def bollinger(close: pd.Series, period: int = 20, nbdev: float = 2.0) -> pd.DataFrame:
    """Bollinger bands around an SMA with population standard deviation (TA-Lib BBANDS)."""
    _check_period("period", period)
    x = _values(close)
    begin, (tail,) = _skip_leading_nans((x,))
    upper, middle, lower = _bollinger_kernel(tail, period, nbdev)
    n = len(x)
    return _frame(
        {
            "upper": _place(n, begin, upper),
            "middle": _place(n, begin, middle),
            "lower": _place(n, begin, lower),
        },
        close.index,
    )


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> pd.DataFrame:
    """MACD line, signal and histogram (TA-Lib MACD); all three start at slow + signal - 2."""
    _check_period("fast", fast)
    _check_period("signal", signal, minimum=1)
    if slow <= fast:
        raise ValueError(f"slow ({slow}) must be longer than fast ({fast})")
    x = _values(close)
    begin, (tail,) = _skip_leading_nans((x,))
    line, sig, hist = _macd_kernel(tail, fast, slow, signal)
    n = len(x)
    return _frame(
        {
            "macd": _place(n, begin, line),
            "signal": _place(n, begin, sig),
            "hist": _place(n, begin, hist),
        },
        close.index,
    )


# --- incremental -------------------------------------------------------------------

SMA_FAST = 20
SMA_SLOW = 50
EMA_FAST = 12
EMA_SLOW = 26
MACD_SIGNAL = 9
RSI_PERIOD = 14
ATR_PERIOD = 14
ADX_PERIOD = 14
BB_PERIOD = 20
BB_NBDEV = 2.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every indicator for one symbol after one bar; NaN where not yet valid."""

    close: float
    sma_fast: float  # SMA 20
    sma_slow: float  # SMA 50
    ema_fast: float  # EMA 12
    ema_slow: float  # EMA 26
    rsi: float
    atr: float
    atr_pct: float  # atr / close
    adx: float
    plus_di: float
    minus_di: float
    bb_upper: float
    bb_middle: float
    bb_lower: float
    macd: float
    macd_signal: float
    macd_hist: float
    ret_1: float  # close / previous close - 1
    bars: int  # bars seen, this one included


SNAPSHOT_FIELDS: tuple[str, ...] = tuple(Snapshot.__dataclass_fields__)

_RING = max(SMA_SLOW, SMA_FAST, BB_PERIOD, EMA_FAST, EMA_SLOW)
_K_EMA_FAST = 2.0 / (EMA_FAST + 1)
_K_EMA_SLOW = 2.0 / (EMA_SLOW + 1)
_K_SIGNAL = 2.0 / (MACD_SIGNAL + 1)
_MACD_LINE_FIRST = EMA_SLOW - 1  # first bar index with a MACD line value
_MACD_FIRST = _MACD_LINE_FIRST + MACD_SIGNAL - 1  # first bar index TA-Lib outputs
_ADX_FIRST = 2 * ADX_PERIOD - 1


class IncrementalIndicators:
    """Indicator state for one symbol; `update` costs O(1) per bar.

    Each field of the returned `Snapshot` equals the batch function's value at the
    same bar index (TA-Lib definitions, defaults listed in this module's constants).
    Running sums are kept rather than re-added, as TA-Lib itself does; their
    rounding drift stays far below any price tick over millions of bars.
    """

    __slots__ = (
        "_ema_fast",
        "_ema_slow",
        "_last",
        "_macd_fast",
        "_macd_seed",
        "_macd_signal",
        "_n",
        "_prev_close",
        "_ring",
        "_sum_bb_sq",
        "_sum_fast",
        "_sum_slow",
        "_wilder",
    )

    def __init__(self) -> None:
        self._n = 0
        self._ring = [0.0] * _RING
        self._sum_fast = 0.0
        self._sum_slow = 0.0
        self._sum_bb_sq = 0.0
        self._prev_close = NAN
        self._ema_fast = NAN
        self._ema_slow = NAN
        self._macd_fast = NAN
        self._macd_seed = 0.0
        self._macd_signal = NAN
        self._wilder = WilderSystem()
        self._last: Snapshot | None = None

    @classmethod
    def warm(cls, bars: pd.DataFrame) -> IncrementalIndicators:
        """Rebuild the state from stored bars (columns high, low, close, oldest first)."""
        state = cls()
        for h, lo, c in zip(
            bars["high"].tolist(), bars["low"].tolist(), bars["close"].tolist(), strict=True
        ):
            state.update(h, lo, c)
        log.debug("warmed indicators on %d bars", state._n)
        return state

    @property
    def bars(self) -> int:
        return self._n

    @property
    def last(self) -> Snapshot | None:
        """The snapshot of the latest bar, or None before the first one."""
        return self._last

    def update(self, high: float, low: float, close: float) -> Snapshot:
        """Add one bar and return every indicator as of it.

        Raises ValueError on a non-finite price or a close that is not positive,
        leaving the state untouched: the feed should have rejected such a bar.
        """
        if not (math.isfinite(high) and math.isfinite(low) and close > 0 and close < math.inf):
            raise ValueError(f"bad bar for indicators: high={high} low={low} close={close}")
        i = self._n  # index of this bar
        self._n = i + 1
        self._ring[i % _RING] = close
        sma_fast, sma_slow, bb_upper, bb_mid, bb_lower = self._step_averages(i, close)
        ema_fast, ema_slow, macd_fast = self._step_emas(i, close)
        macd_line, macd_signal, macd_hist = self._step_macd(i, macd_fast - ema_slow)
        wilder = self._wilder
        prev_close = self._prev_close
        rsi_value, atr_value, plus, minus = wilder.step(i, high, low, close, prev_close)
        ret_1 = close / prev_close - 1.0 if i >= 1 else NAN
        self._prev_close = close
        snap = Snapshot(
            close,
            sma_fast,
            sma_slow,
            ema_fast,
            ema_slow,
            rsi_value,
            atr_value,
            atr_value / close,
            wilder.adx,
            plus,
            minus,
            bb_upper,
            bb_mid,
            bb_lower,
            macd_line,
            macd_signal,
            macd_hist,
            ret_1,
            i + 1,
        )
        self._last = snap
        return snap

    def _step_averages(self, i: int, close: float) -> tuple[float, float, float, float, float]:
        """SMA fast and slow and the Bollinger bands (upper, middle, lower) from running sums."""
        n = i + 1
        ring = self._ring
        sum_fast = self._sum_fast + close
        sum_bb_sq = self._sum_bb_sq + close * close
        sum_slow = self._sum_slow + close
        if n >= SMA_FAST:
            sma_fast = sum_fast / SMA_FAST
            dropped = ring[(i - SMA_FAST + 1) % _RING]
            bb_mid = sma_fast  # BB_PERIOD == SMA_FAST
            var = sum_bb_sq / BB_PERIOD - bb_mid * bb_mid
            std = math.sqrt(var) if var >= _ZERO else 0.0
            bb_upper = bb_mid + std * BB_NBDEV
            bb_lower = bb_mid - std * BB_NBDEV
            sum_fast -= dropped
            sum_bb_sq -= dropped * dropped
        else:
            sma_fast = bb_mid = bb_upper = bb_lower = NAN
        if n >= SMA_SLOW:
            sma_slow = sum_slow / SMA_SLOW
            # The oldest close in the window leaves the sum once this bar is averaged.
            sum_slow -= ring[(i - SMA_SLOW + 1) % _RING]
        else:
            sma_slow = NAN
        self._sum_fast = sum_fast
        self._sum_bb_sq = sum_bb_sq
        self._sum_slow = sum_slow
        return sma_fast, sma_slow, bb_upper, bb_mid, bb_lower

    def _step_emas(self, i: int, close: float) -> tuple[float, float, float]:
        """EMA fast and slow, and the MACD's own fast EMA (seeded later, at the slow one's bar)."""
        n = i + 1
        if n > EMA_FAST:
            ema_fast = ((close - self._ema_fast) * _K_EMA_FAST) + self._ema_fast
        elif n == EMA_FAST:
            ema_fast = self._ring_mean(i, EMA_FAST)
        else:
            ema_fast = NAN
        if n > EMA_SLOW:
            ema_slow = ((close - self._ema_slow) * _K_EMA_SLOW) + self._ema_slow
            macd_fast = ((close - self._macd_fast) * _K_EMA_FAST) + self._macd_fast
        elif n == EMA_SLOW:
            ema_slow = self._ring_mean(i, EMA_SLOW)
            macd_fast = self._ring_mean(i, EMA_FAST)
        else:
            ema_slow = macd_fast = NAN
        self._ema_fast = ema_fast
        self._ema_slow = ema_slow
        self._macd_fast = macd_fast
        return ema_fast, ema_slow, macd_fast

    def _step_macd(self, i: int, raw: float) -> tuple[float, float, float]:
        """MACD line, signal and histogram; NaN until TA-Lib's first output bar."""
        if i < _MACD_LINE_FIRST:
            return NAN, NAN, NAN
        macd_signal = NAN
        if i > _MACD_FIRST:
            macd_signal = ((raw - self._macd_signal) * _K_SIGNAL) + self._macd_signal
        else:
            self._macd_seed += raw
            if i == _MACD_FIRST:
                macd_signal = self._macd_seed / MACD_SIGNAL
        if i < _MACD_FIRST:
            return NAN, NAN, NAN
        self._macd_signal = macd_signal
        return raw, macd_signal, raw - macd_signal

    def _ring_mean(self, i: int, period: int) -> float:
        """Mean of the closes of bars i-period+1..i, summed oldest first as TA-Lib seeds."""
        ring = self._ring
        total = 0.0
        for j in range(i - period + 1, i + 1):
            total += ring[j % _RING]
        return total / period


class WilderSystem:
    """RSI, ATR and the directional system (+DI, -DI, ADX) for one symbol: Wilder's
    smoothings, each of which needs the previous bar. Part of `IncrementalIndicators`."""

    __slots__ = (
        "_atr",
        "_dx_sum",
        "_gain",
        "_loss",
        "_mdm",
        "_pdm",
        "_prev_high",
        "_prev_low",
        "_tr",
        "adx",
    )

    def __init__(self) -> None:
        self._gain = 0.0
        self._loss = 0.0
        self._atr = 0.0
        self._pdm = 0.0
        self._mdm = 0.0
        self._tr = 0.0
        self._dx_sum = 0.0
        self._prev_high = NAN
        self._prev_low = NAN
        self.adx = NAN

    def step(
        self, i: int, high: float, low: float, close: float, prev_close: float
    ) -> tuple[float, float, float, float]:
        """RSI, ATR, +DI and -DI as of bar `i` (NaN on the first bar); ADX moves in `adx`."""
        rsi_value = atr_value = plus = minus = NAN
        if i >= 1:
            rsi_value = self._step_rsi(i, close - prev_close)
            tr = max(high - low, abs(prev_close - high), abs(prev_close - low))
            atr_value = self._step_atr(i, tr)
            plus, minus = self._step_directional(i, high, low, tr)
        self._prev_high = high
        self._prev_low = low
        return rsi_value, atr_value, plus, minus

    def _step_rsi(self, i: int, d: float) -> float:
        """Wilder's RSI from the close-to-close change `d`; NaN before RSI_PERIOD changes."""
        gain, loss = self._gain, self._loss
        if i > RSI_PERIOD:
            loss *= RSI_PERIOD - 1
            gain *= RSI_PERIOD - 1
        if d < 0:
            loss -= d
        else:
            gain += d
        rsi_value = NAN
        if i >= RSI_PERIOD:
            loss /= RSI_PERIOD
            gain /= RSI_PERIOD
            total = gain + loss
            rsi_value = 100.0 * (gain / total) if abs(total) >= _ZERO else 0.0
        self._gain, self._loss = gain, loss
        return rsi_value

    def _step_atr(self, i: int, tr: float) -> float:
        """Wilder's ATR from this bar's true range; NaN before ATR_PERIOD ranges."""
        atr_state = self._atr
        atr_value = NAN
        if i > ATR_PERIOD:
            atr_state = ((atr_state * (ATR_PERIOD - 1)) + tr) / ATR_PERIOD
            atr_value = atr_state
        else:
            atr_state += tr
            if i == ATR_PERIOD:
                atr_state /= ATR_PERIOD
                atr_value = atr_state
        self._atr = atr_state
        return atr_value

    def _step_directional(self, i: int, high: float, low: float, tr: float) -> tuple[float, float]:
        """+DI and -DI for this bar, advancing the smoothed ADX kept in `adx`."""
        up_move, down_move = _directional_movement(high - self._prev_high, self._prev_low - low)
        pdm, mdm, tr_sum = self._pdm, self._mdm, self._tr
        if i >= ADX_PERIOD:
            pdm = pdm - (pdm / ADX_PERIOD) + up_move
            mdm = mdm - (mdm / ADX_PERIOD) + down_move
            tr_sum = tr_sum - (tr_sum / ADX_PERIOD) + tr
        else:
            pdm += up_move
            mdm += down_move
            tr_sum += tr
        self._pdm, self._mdm, self._tr = pdm, mdm, tr_sum
        if i < ADX_PERIOD:
            return NAN, NAN
        plus, minus, dx = _di_dx(pdm, mdm, tr_sum)
        self._step_adx(i, dx)
        return plus, minus

    def _step_adx(self, i: int, dx: float | None) -> None:
        """Seed the ADX with the mean of the first DX values, then smooth it Wilder's way."""
        if i > _ADX_FIRST:
            if dx is not None:
                self.adx = ((self.adx * (ADX_PERIOD - 1)) + dx) / ADX_PERIOD
            return
        if dx is not None:
            self._dx_sum += dx
        if i == _ADX_FIRST:
            self.adx = self._dx_sum / ADX_PERIOD
