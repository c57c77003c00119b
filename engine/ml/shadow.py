"""Champion against challenger on the same live bars: promotion advice.

Both models predict every bar; once the horizon has passed both are scored on the
same outcome. The advice compares their Brier scores pair by pair and recommends a
promotion only with enough pairs and a gain whose confidence interval excludes
zero. Predictions made on consecutive bars share most of their horizon's price
path, so neighbouring pairs are not independent: the standard error is widened by
sqrt(horizon_bars), the number of overlapping labels each outcome is part of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

Z_95 = 1.959964


@dataclass(frozen=True, slots=True)
class PromotionAdvice:
    champion: str
    challenger: str
    n: int  # paired, scored predictions
    champion_accuracy: float
    challenger_accuracy: float
    brier_gain: float  # champion Brier - challenger Brier; > 0 favours the challenger
    ci_low: float
    ci_high: float
    promote: bool
    message: str


def promotion_advice(
    champion: str,
    challenger: str,
    champion_proba: npt.ArrayLike,
    challenger_proba: npt.ArrayLike,
    outcome: npt.ArrayLike,
    *,
    min_samples: int,
    horizon_bars: int = 1,
    z: float = Z_95,
) -> PromotionAdvice:
    """The advice on paired predictions and their outcomes (see `advice_from_sums`)."""
    p0 = np.asarray(champion_proba, dtype=np.float64)
    p1 = np.asarray(challenger_proba, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    gain = (p0 - y) ** 2 - (p1 - y) ** 2
    sums = PairSums(
        len(y),
        float(gain.sum()),
        float((gain * gain).sum()),
        int(np.sum((p0 >= 0.5) == (y == 1))),
        int(np.sum((p1 >= 0.5) == (y == 1))),
    )
    return advice_from_sums(
        champion, challenger, sums, min_samples=min_samples, horizon_bars=horizon_bars, z=z
    )


@dataclass(frozen=True, slots=True)
class PairSums:
    """What the advice needs of the pairs, summed (the store keeps these as the pairs
    are scored): their number, the Brier gain's sum and sum of squares, and how many
    each model called right."""

    n: int
    gain_sum: float
    gain_sq_sum: float
    champion_correct: int
    challenger_correct: int

    @classmethod
    def none(cls) -> PairSums:
        """No pair scored yet."""
        return cls(0, 0.0, 0.0, 0, 0)


def advice_from_sums(
    champion: str,
    challenger: str,
    sums: PairSums,
    *,
    min_samples: int,
    horizon_bars: int = 1,
    z: float = Z_95,
) -> PromotionAdvice:
    n = sums.n
    if n == 0:
        nan = math.nan
        return PromotionAdvice(
            champion, challenger, 0, nan, nan, nan, nan, nan, False,
            "no paired, scored predictions yet",
        )  # fmt: skip
    mean = sums.gain_sum / n
    if n > 1:
        variance = max(sums.gain_sq_sum - n * mean * mean, 0.0) / (n - 1)
        se = math.sqrt(variance / n) * math.sqrt(horizon_bars)
    else:
        se = math.inf
    low, high = mean - z * se, mean + z * se
    acc0, acc1 = sums.champion_correct / n, sums.challenger_correct / n
    enough = n >= min_samples
    promote = enough and low > 0
    interval = f"Brier gain {mean:+.4f} (95% CI {low:+.4f} to {high:+.4f}) over {n} pairs"
    if not enough:
        message = f"not enough evidence yet: {n} of {min_samples} pairs; {interval}"
    elif promote:
        message = f"promote {challenger}: it beats {champion}; {interval}"
    elif high < 0:
        message = f"keep {champion}: {challenger} is worse; {interval}"
    else:
        message = f"no significant difference; {interval}"
    return PromotionAdvice(champion, challenger, n, acc0, acc1, mean, low, high, promote, message)
