"""Trading costs of a backtest, written as short specs and applied by the paper
broker (the same fill rules as paper trading):

    --commission none | per-share:0.005[:MIN] | bps:5[:MIN]
    --slippage   none | bps:2 | spread:4 | volume:0.1 | paper

`spread:S` pays half of a quoted spread of S basis points on every fill. `volume:P`
is the paper broker's model: a share of each bar's range against the trader and at
most P of the bar's volume per order per bar. `paper` keeps the configured paper
settings. `none` and `none` give zero costs, for comparison with other tools.
"""

from __future__ import annotations

from typing import Any

from engine.config import PaperSettings

# Large enough that no bar's volume limits an order: zero costs means no market impact.
UNLIMITED_PARTICIPATION = 1.0


class CostSpecError(ValueError):
    """A commission or slippage spec that cannot be read; says what is allowed."""


def _numbers(spec: str, kind: str, parts: list[str], arity: tuple[int, int]) -> list[float]:
    low, high = arity
    if not low <= len(parts) <= high:
        raise CostSpecError(f"{kind} {spec!r}: expected {low} to {high} numbers after the name")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise CostSpecError(f"{kind} {spec!r}: {':'.join(parts)!r} is not a number") from None
    if any(v < 0 for v in values):
        raise CostSpecError(f"{kind} {spec!r}: costs cannot be negative")
    return values


def commission_overrides(spec: str) -> dict[str, Any]:
    name, *parts = spec.strip().lower().split(":")
    if name == "none":
        return {"commission_per_share": 0.0, "commission_bps": 0.0, "commission_min": 0.0}
    if name == "per-share":
        rate, *minimum = _numbers(spec, "commission", parts, (1, 2))
        return {
            "commission_per_share": rate,
            "commission_bps": 0.0,
            "commission_min": minimum[0] if minimum else 0.0,
        }
    if name == "bps":
        rate, *minimum = _numbers(spec, "commission", parts, (1, 2))
        return {
            "commission_per_share": 0.0,
            "commission_bps": rate,
            "commission_min": minimum[0] if minimum else 0.0,
        }
    raise CostSpecError(f"commission {spec!r}: use none, per-share:RATE[:MIN] or bps:RATE[:MIN]")


def slippage_overrides(spec: str) -> dict[str, Any]:
    name, *parts = spec.strip().lower().split(":")
    if name == "none":
        return {
            "slippage_bps": 0.0,
            "slippage_range_share": 0.0,
            "max_participation": UNLIMITED_PARTICIPATION,
        }
    if name == "paper":
        _numbers(spec, "slippage", parts, (0, 0))
        return {}
    if name in ("bps", "spread"):
        (bps,) = _numbers(spec, "slippage", parts, (1, 1))
        return {
            "slippage_bps": bps if name == "bps" else bps / 2,
            "slippage_range_share": 0.0,
            "max_participation": UNLIMITED_PARTICIPATION,
        }
    if name == "volume":
        (share,) = _numbers(spec, "slippage", parts, (1, 1))
        if not 0 < share <= 1:
            raise CostSpecError(f"slippage {spec!r}: the participation must be within (0, 1]")
        return {"max_participation": share}
    raise CostSpecError(f"slippage {spec!r}: use none, bps:N, spread:N, volume:SHARE or paper")


def paper_settings(
    base: PaperSettings, commission: str | None, slippage: str | None
) -> PaperSettings:
    """The paper settings with the specs applied (None keeps the configured part)."""
    update: dict[str, Any] = {}
    if commission is not None:
        update.update(commission_overrides(commission))
    if slippage is not None:
        update.update(slippage_overrides(slippage))
    return PaperSettings.model_validate({**base.model_dump(), **update})
