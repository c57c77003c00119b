"""Strategies turn one symbol's indicators, regime and model view into order intents.

`RegimeStrategy`, the default, trades the regime it is told:

- TREND_UP / TREND_DOWN: follow the trend when momentum agrees (close on the trend's
  side of the fast EMA and the MACD histogram of the same sign);
- RANGE: fade Bollinger / RSI extremes, aiming for the middle band;
- HIGH_VOL (and CRASH): no entries.

One position per symbol. While positioned it only looks for an exit: the regime
turned against the position, volatility took over, or a range trade reached the
middle band. A reversal is therefore an exit now and, if the signal is still there
once flat, an entry on a later bar; the two are never sent together.

Entries carry a stop at `stop_atr` ATRs, a target at `reward_risk` times that
distance, and a fixed-fractional size: the quantity whose stop-out loses
`risk_per_trade` of equity, capped at `max_notional_fraction` of equity. A model
probability, when given, must agree by a margin and then strengthens the entry.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

from engine.decide.regime import RegimeCall
from engine.domain import Intent, OrderType, Position, Purpose, Regime, Side
from engine.market.indicators import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StrategyInput:
    symbol: str
    now: int  # epoch ms
    snap: Snapshot
    regime: RegimeCall
    position: Position | None
    equity: float
    model_proba: float | None = None  # probability the price is higher after the model horizon
    model_version: str | None = None


class Strategy(Protocol):
    name: str

    def decide(self, ctx: StrategyInput) -> list[Intent]: ...


@dataclass(frozen=True, slots=True)
class StrategyParams:
    stop_atr: float = 2.0  # stop distance in ATRs
    reward_risk: float = 2.5  # target distance / stop distance
    risk_per_trade: float = 0.01  # share of equity lost if the stop is hit
    min_confidence: float = 0.3  # regime confidence needed to enter on it
    rsi_oversold: float = 30.0
    rsi_overbought: float = 70.0
    proba_margin: float = 0.05  # longs need p(up) >= 0.5 + margin, shorts <= 0.5 - margin
    allow_short: bool = True
    exit_on_high_vol: bool = True
    # Cap on position value as a share of equity, None for none. On one-minute bars a
    # 2-ATR stop is a fraction of a percent away, so risk alone would size positions at
    # several times equity; the cap keeps entries inside the risk gate's notional limit.
    max_notional_fraction: float | None = 0.2

    def __post_init__(self) -> None:
        if self.stop_atr <= 0:
            raise ValueError("stop_atr must be positive")
        if self.reward_risk <= 0:
            raise ValueError("reward_risk must be positive")
        if not 0 < self.risk_per_trade < 1:
            raise ValueError("risk_per_trade must be within (0, 1)")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError("min_confidence must be within [0, 1]")
        if not 0 < self.rsi_oversold < 50 < self.rsi_overbought < 100:
            raise ValueError("need 0 < rsi_oversold < 50 < rsi_overbought < 100")
        if not 0 <= self.proba_margin < 0.5:
            raise ValueError("proba_margin must be within [0, 0.5)")
        if self.max_notional_fraction is not None and self.max_notional_fraction <= 0:
            raise ValueError("max_notional_fraction must be positive")


_RISK_OFF = (Regime.HIGH_VOL, Regime.CRASH)


def _clip01(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


@dataclass(frozen=True, slots=True)
class _Signal:
    side: Side
    strength: float
    reason: str


class RegimeStrategy:
    """Trend following in trends, mean reversion in ranges, flat in high volatility."""

    name = "regime"

    def __init__(self, params: StrategyParams = StrategyParams()) -> None:
        self.params = params

    def decide(self, ctx: StrategyInput) -> list[Intent]:
        position = ctx.position
        if position is not None and position.qty != 0:
            exit_intent = self._exit(ctx, position)
            return [exit_intent] if exit_intent is not None else []
        signal = self._signal(ctx)
        if signal is None:
            return []
        entry = self._entry(ctx, signal)
        return [entry] if entry is not None else []

    # --- exits ---------------------------------------------------------------------

    def _exit(self, ctx: StrategyInput, position: Position) -> Intent | None:
        reason = self._exit_reason(ctx, position.qty > 0)
        if reason is None:
            return None
        return Intent(
            symbol=ctx.symbol,
            side=Side.SELL if position.qty > 0 else Side.BUY,
            qty=abs(position.qty),
            purpose=Purpose.EXIT,
            order_type=OrderType.MARKET,
            strength=1.0,
            model_version=ctx.model_version,
            reason=reason,
        )

    def _exit_reason(self, ctx: StrategyInput, long: bool) -> str | None:
        regime, snap = ctx.regime.regime, ctx.snap
        side = "long" if long else "short"
        # Getting out needs no confidence threshold: doubt is a reason to be flat.
        against = Regime.TREND_DOWN if long else Regime.TREND_UP
        if regime is against:
            return f"regime turned {regime.value} against the {side}"
        if regime in _RISK_OFF and self.params.exit_on_high_vol:
            return f"regime {regime.value}: stepping aside from the {side}"
        if regime is Regime.RANGE and not math.isnan(snap.bb_middle):
            reached = snap.close >= snap.bb_middle if long else snap.close <= snap.bb_middle
            if reached:
                return (
                    f"mean-reversion target: close {snap.close:.4f} reached "
                    f"the middle band {snap.bb_middle:.4f}"
                )
        return None

    # --- entries -------------------------------------------------------------------

    def _signal(self, ctx: StrategyInput) -> _Signal | None:
        call = ctx.regime
        if call.regime in _RISK_OFF or call.confidence < self.params.min_confidence:
            return None
        if call.regime is Regime.RANGE:
            signal = self._fade(ctx.snap, call.confidence)
        else:
            signal = self._follow(ctx.snap, call)
        if signal is None or (signal.side is Side.SELL and not self.params.allow_short):
            return None
        return self._with_model(signal, ctx.model_proba)

    def _follow(self, snap: Snapshot, call: RegimeCall) -> _Signal | None:
        close, ema, hist, atr = snap.close, snap.ema_fast, snap.macd_hist, snap.atr
        if any(math.isnan(v) for v in (ema, hist, atr)) or atr <= 0:
            return None
        up = call.regime is Regime.TREND_UP
        agrees = (close > ema and hist > 0) if up else (close < ema and hist < 0)
        if not agrees:
            return None
        # Momentum is measured in ATRs so it reads the same on any price scale.
        momentum = _clip01(abs(close - ema) / atr)
        strength = 0.5 * call.confidence + 0.5 * momentum
        word = "up" if up else "down"
        reason = (
            f"trend {word} (confidence {call.confidence:.2f}): close {close:.4f} "
            f"{'above' if up else 'below'} EMA12 {ema:.4f}, MACD histogram {hist:+.4f}"
        )
        return _Signal(Side.BUY if up else Side.SELL, strength, reason)

    def _fade(self, snap: Snapshot, confidence: float) -> _Signal | None:
        close, rsi = snap.close, snap.rsi
        lower, middle, upper = snap.bb_lower, snap.bb_middle, snap.bb_upper
        if any(math.isnan(v) for v in (rsi, lower, middle, upper)):
            return None
        p = self.params
        half_width = middle - lower
        if close < middle and (close <= lower or rsi <= p.rsi_oversold):
            side, extreme = Side.BUY, "oversold"
            stretch = (middle - close) / half_width if half_width > 0 else 1.0
            rsi_depth = (50.0 - rsi) / (50.0 - p.rsi_oversold)
            band = f"lower band {lower:.4f}"
        elif close > middle and (close >= upper or rsi >= p.rsi_overbought):
            side, extreme = Side.SELL, "overbought"
            stretch = (close - middle) / half_width if half_width > 0 else 1.0
            rsi_depth = (rsi - 50.0) / (p.rsi_overbought - 50.0)
            band = f"upper band {upper:.4f}"
        else:
            return None
        signal = _clip01(0.5 * stretch + 0.5 * rsi_depth)
        strength = 0.5 * confidence + 0.5 * signal
        reason = (
            f"range (confidence {confidence:.2f}), {extreme}: close {close:.4f} vs {band}, "
            f"RSI {rsi:.1f}; target the middle band {middle:.4f}"
        )
        return _Signal(side, strength, reason)

    def _with_model(self, signal: _Signal, proba: float | None) -> _Signal | None:
        if proba is None or math.isnan(proba):
            return signal
        margin = self.params.proba_margin
        long = signal.side is Side.BUY
        backed = proba >= 0.5 + margin if long else proba <= 0.5 - margin
        if not backed:
            log.debug("model p(up)=%.3f does not back a %s entry", proba, signal.side.value)
            return None
        edge = proba - 0.5 if long else 0.5 - proba
        # An edge of 0.25 (p = 0.75 for a long) closes half the remaining gap to 1.
        boost = _clip01(edge / 0.25) * 0.5
        strength = signal.strength + (1.0 - signal.strength) * boost
        return _Signal(signal.side, strength, f"{signal.reason}; model p(up)={proba:.2f}")

    def _entry(self, ctx: StrategyInput, signal: _Signal) -> Intent | None:
        p, snap = self.params, ctx.snap
        close, atr = snap.close, snap.atr
        if math.isnan(atr) or atr <= 0 or not ctx.equity > 0:
            return None
        stop_distance = p.stop_atr * atr
        sign = signal.side.sign
        stop_loss = close - sign * stop_distance
        if stop_loss <= 0:
            log.debug("%s: stop %.4f would be below zero; no entry", ctx.symbol, stop_loss)
            return None
        take_profit = close + sign * p.reward_risk * stop_distance
        qty = math.floor(ctx.equity * p.risk_per_trade / stop_distance)
        sizing: dict[str, object] = {
            "method": "fixed_fractional",
            "risk_per_trade": p.risk_per_trade,
            "stop_distance": stop_distance,
            "equity": ctx.equity,
        }
        if p.max_notional_fraction is not None:
            cap = math.floor(ctx.equity * p.max_notional_fraction / close)
            if cap < qty:
                qty = cap
                sizing["capped_by"] = "max_notional_fraction"
                sizing["max_notional_fraction"] = p.max_notional_fraction
        if qty < 1:
            log.debug(
                "%s: equity %.2f risks less than one share over a stop of %.4f",
                ctx.symbol,
                ctx.equity,
                stop_distance,
            )
            return None
        return Intent(
            symbol=ctx.symbol,
            side=signal.side,
            qty=float(qty),
            purpose=Purpose.ENTRY,
            order_type=OrderType.MARKET,
            stop_loss=stop_loss,
            take_profit=take_profit,
            strength=_clip01(signal.strength),
            model_version=ctx.model_version,
            reason=signal.reason,
            sizing=sizing,
        )
