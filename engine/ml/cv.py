"""Walk-forward cross-validation with purging and an embargo, for labels that span time.

A row is observed at `start` and its label is known at `end` (for a direction label
over h bars, the bar h bars later). Time is cut into contiguous blocks of equal row
counts; each fold tests on one block.

- Walk-forward (the default): a fold trains only on rows observed before its test
  block, as the model would have been trained at that time.
- Purging drops training rows whose label window [start, end] overlaps the test
  block: their label was made of prices inside it.
- The embargo drops training rows observed within `embargo` after the test block,
  because features and labels are serially correlated. With walk-forward training
  no training row follows the test block, so it only bites when `walk_forward` is
  off (purged k-fold), where the training set surrounds the test block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Fold:
    number: int  # 1-based
    train: IntArray  # row indices, ascending
    test: IntArray
    test_start: int
    test_end: int
    purged: IntArray  # candidates dropped because their label overlaps the test block
    embargoed: IntArray  # candidates dropped because they follow the test block too closely


def purged_folds(
    start: npt.ArrayLike,
    end: npt.ArrayLike,
    n_folds: int,
    embargo: int = 0,
    *,
    walk_forward: bool = True,
) -> list[Fold]:
    """Folds over rows observed at `start` whose labels are known at `end` (same unit).

    Walk-forward cuts time into n_folds + 1 blocks and tests on the last n_folds;
    k-fold (walk_forward=False) cuts n_folds blocks and tests on each.
    """
    starts = np.asarray(start, dtype=np.int64)
    ends = np.asarray(end, dtype=np.int64)
    if starts.shape != ends.shape:
        raise ValueError("start and end must have the same length")
    if n_folds < 2 - int(walk_forward):
        raise ValueError(f"n_folds={n_folds} is too small")
    if embargo < 0:
        raise ValueError(f"embargo={embargo} must not be negative")
    if np.any(ends < starts):
        raise ValueError("a label cannot end before it starts")
    times = np.unique(starts)
    n_blocks = n_folds + 1 if walk_forward else n_folds
    if len(times) < n_blocks:
        raise ValueError(f"{len(times)} distinct times cannot make {n_blocks} blocks")
    blocks = np.array_split(times, n_blocks)
    tests = blocks[1:] if walk_forward else blocks
    folds = []
    everything = np.arange(len(starts), dtype=np.int64)
    for number, block in enumerate(tests, start=1):
        lo, hi = int(block[0]), int(block[-1])
        in_test = (starts >= lo) & (starts <= hi)
        candidate = ~in_test & (starts < lo) if walk_forward else ~in_test
        overlaps = candidate & (starts <= hi) & (ends >= lo)
        embargoed = candidate & ~overlaps & (starts > hi) & (starts <= hi + embargo)
        train = candidate & ~overlaps & ~embargoed
        folds.append(
            Fold(
                number=number,
                train=everything[train],
                test=everything[in_test],
                test_start=lo,
                test_end=hi,
                purged=everything[overlaps],
                embargoed=everything[embargoed],
            )
        )
    return folds
