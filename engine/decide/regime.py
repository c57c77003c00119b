"""Market regime: rules over ADX, DI, ATR% and RSI, an optional ML override, and scoring.

`classify` is a pure function of one indicator snapshot and the previous call. It
knows four regimes: HIGH_VOL (ATR% above a threshold) wins over everything, then
TREND_UP / TREND_DOWN (ADX above a threshold with the DI lines apart in that
direction; RSI on the same side of 50 adds confidence, against it takes some
away), else RANGE. Thresholds have hysteresis: a regime already in force is left
at a lower threshold than the one it takes to enter it, so a reading that hovers
at the boundary does not flip the call every bar.

Missing inputs (warm-up, a gap in the data) never produce a fresh call: the previous
one is kept with its confidence decayed, or RANGE with confidence 0 if there is none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from engine.domain import Regime
from engine.market.indicators import Snapshot

log = logging.getLogger(__name__)

RULE_REGIMES: tuple[Regime, ...] = (
    Regime.TREND_UP,
    Regime.TREND_DOWN,
    Regime.RANGE,
    Regime.HIGH_VOL,
)


class Source(StrEnum):
    RULES = "rules"
    ML = "ml"


@dataclass(frozen=True, slots=True)
class RegimeParams:
    """Thresholds for the rules.

    The ATR% defaults suit one-minute bars of liquid stocks, which is what the embedded
    simulator produces (calm bars move about 0.1%, ATR% about 0.13-0.2%; its high-vol
    regime about 0.45%). ATR% grows with the bar length: for daily bars multiply the
    three ATR% thresholds by about ten. ADX, DI and RSI levels are scale-free.
    """

    high_vol_atr_pct: float = 0.003  # enter HIGH_VOL above this ATR / close
    high_vol_exit_atr_pct: float = 0.0025  # leave it below this
    high_vol_full_atr_pct: float = 0.006  # confidence is full at this ATR / close
    adx_trend: float = 25.0  # enter a trend above this ADX
    adx_exit: float = 20.0  # an ongoing trend holds until ADX falls below this
    adx_full: float = 45.0  # the ADX share of trend confidence is full here
    adx_flat: float = 12.0  # the ADX share of range confidence is full below this
    di_margin: float = 0.1  # |+DI - -DI| / (+DI + -DI) needed to call a direction
    di_full: float = 0.5  # the DI share of trend confidence is full at this spread
    rsi_span: float = 20.0  # RSI this far from 50 counts as full confluence
    hold_decay: float = 0.9  # confidence kept per bar when a call is held over missing data

    @classmethod
    def for_bar(cls, bar_ms: int) -> RegimeParams:
        """The defaults scaled to a bar length. A bar's range grows about with the square
        root of its length, capped at ten times the one-minute levels: a daily bar
        covers one session of trading, not a day and a night."""
        scale = min(math.sqrt(max(bar_ms, 60_000) / 60_000), 10.0)
        base = cls()
        return replace(
            base,
            high_vol_atr_pct=base.high_vol_atr_pct * scale,
            high_vol_exit_atr_pct=base.high_vol_exit_atr_pct * scale,
            high_vol_full_atr_pct=base.high_vol_full_atr_pct * scale,
        )

    def __post_init__(self) -> None:
        if not 0 < self.high_vol_exit_atr_pct <= self.high_vol_atr_pct:
            raise ValueError("need 0 < high_vol_exit_atr_pct <= high_vol_atr_pct")
        if self.high_vol_full_atr_pct <= self.high_vol_atr_pct:
            raise ValueError("high_vol_full_atr_pct must be above high_vol_atr_pct")
        if not self.adx_flat < self.adx_exit <= self.adx_trend < self.adx_full:
            raise ValueError("need adx_flat < adx_exit <= adx_trend < adx_full")
        if not 0 <= self.di_margin < self.di_full <= 1:
            raise ValueError("need 0 <= di_margin < di_full <= 1")
        if self.rsi_span <= 0:
            raise ValueError("rsi_span must be positive")
        if not 0 <= self.hold_decay <= 1:
            raise ValueError("hold_decay must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class RegimeCall:
    regime: Regime
    confidence: float  # 0..1
    source: Source = Source.RULES
    model_version: str | None = None
    features: dict[str, float] = field(default_factory=dict)  # the inputs behind the call
    reason: str = ""


FEATURES: tuple[str, ...] = ("adx", "plus_di", "minus_di", "atr_pct", "rsi")


def _clip01(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def _hold(previous: RegimeCall | None, missing: list[str], params: RegimeParams) -> RegimeCall:
    why = "missing " + ", ".join(missing)
    if previous is None:
        return RegimeCall(Regime.RANGE, 0.0, reason=f"{why}; no earlier call")
    return replace(
        previous,
        confidence=previous.confidence * params.hold_decay,
        reason=f"{why}; holding {previous.regime.value}",
    )


def classify(
    snap: Snapshot, previous: RegimeCall | None, params: RegimeParams = RegimeParams()
) -> RegimeCall:
    """Call the regime of one symbol from its latest indicators."""
    features = {name: float(getattr(snap, name)) for name in FEATURES}
    atr_pct = features["atr_pct"]
    if math.isnan(atr_pct):
        return _hold(previous, ["atr_pct"], params)
    was = previous.regime if previous is not None else None

    # Volatility first: in a storm, direction readings are noise and sizing breaks down.
    vol_threshold = (
        params.high_vol_exit_atr_pct
        if was in (Regime.HIGH_VOL, Regime.CRASH)
        else params.high_vol_atr_pct
    )
    if atr_pct > vol_threshold:
        span = params.high_vol_full_atr_pct - params.high_vol_atr_pct
        confidence = 0.5 + 0.5 * _clip01((atr_pct - params.high_vol_atr_pct) / span)
        return RegimeCall(
            Regime.HIGH_VOL,
            confidence,
            features=features,
            reason=f"ATR {atr_pct:.2%} of price above {vol_threshold:.2%}",
        )

    missing = [name for name in FEATURES if math.isnan(features[name])]
    if missing:
        return _hold(previous, missing, params)
    return _trend_or_range(features, was, params)


def _trend_or_range(
    features: dict[str, float], was: Regime | None, params: RegimeParams
) -> RegimeCall:
    """A trend when ADX is high and the DI lines apart (a trend already called needs
    less to hold on), a range otherwise."""
    adx, plus, minus, rsi = (
        features["adx"],
        features["plus_di"],
        features["minus_di"],
        features["rsi"],
    )
    di_total = plus + minus
    spread = abs(plus - minus) / di_total if di_total > 0 else 0.0
    direction = Regime.TREND_UP if plus > minus else Regime.TREND_DOWN
    adx_threshold = params.adx_exit if was is direction else params.adx_trend

    if adx > adx_threshold and spread >= params.di_margin:
        s_adx = _clip01((adx - params.adx_exit) / (params.adx_full - params.adx_exit))
        s_di = _clip01(spread / params.di_full)
        sign = 1.0 if direction is Regime.TREND_UP else -1.0
        s_rsi = max(-1.0, min(1.0, sign * (rsi - 50.0) / params.rsi_span))
        confidence = _clip01(0.35 + 0.25 * s_adx + 0.2 * s_di + 0.2 * s_rsi)
        word = "up" if sign > 0 else "down"
        rsi_note = "agrees" if s_rsi > 0 else "disagrees"
        return RegimeCall(
            direction,
            confidence,
            features=features,
            reason=(
                f"ADX {adx:.1f} > {adx_threshold:g}, DI {word} "
                f"(+DI {plus:.1f} / -DI {minus:.1f}), RSI {rsi:.1f} {rsi_note}"
            ),
        )

    s_adx = _clip01((params.adx_trend - adx) / (params.adx_trend - params.adx_flat))
    s_rsi = 1.0 - _clip01(abs(rsi - 50.0) / params.rsi_span)
    confidence = _clip01(0.3 + 0.4 * s_adx + 0.3 * s_rsi)
    if adx > adx_threshold:
        why = f"ADX {adx:.1f} but DI lines within {params.di_margin:.0%} of each other"
    else:
        why = f"ADX {adx:.1f} <= {adx_threshold:g}"
    return RegimeCall(Regime.RANGE, confidence, features=features, reason=f"{why}, RSI {rsi:.1f}")


def combine(rules: RegimeCall, ml: RegimeCall | None, threshold: float) -> RegimeCall:
    """The ML call wins only when it is at least `threshold` confident."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    if ml is not None and ml.confidence >= threshold:
        return ml
    return rules


@dataclass(frozen=True, slots=True)
class RegimeScore:
    n: int
    accuracy: float  # NaN when n == 0
    precision: dict[Regime, float]  # NaN for a regime never predicted
    recall: dict[Regime, float]  # NaN for a regime never true
    confusion: dict[Regime, dict[Regime, int]]  # truth -> predicted -> count


def _scored(regime: Regime) -> Regime:
    # The rules have no CRASH call; a crash is high volatility and must be caught as such.
    return Regime.HIGH_VOL if regime is Regime.CRASH else regime


def score(predicted: Sequence[Regime], truth: Sequence[Regime]) -> RegimeScore:
    """Compare calls with the simulator's true regimes, bar by bar (CRASH counts as HIGH_VOL)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} true regimes")
    confusion = {t: dict.fromkeys(RULE_REGIMES, 0) for t in RULE_REGIMES}
    for p, t in zip(predicted, truth, strict=True):
        confusion[_scored(t)][_scored(p)] += 1
    n = len(truth)
    hits = sum(confusion[r][r] for r in RULE_REGIMES)
    precision: dict[Regime, float] = {}
    recall: dict[Regime, float] = {}
    for r in RULE_REGIMES:
        called = sum(confusion[t][r] for t in RULE_REGIMES)
        true = sum(confusion[r].values())
        precision[r] = confusion[r][r] / called if called else math.nan
        recall[r] = confusion[r][r] / true if true else math.nan
    accuracy = hits / n if n else math.nan
    return RegimeScore(n, accuracy, precision, recall, confusion)
