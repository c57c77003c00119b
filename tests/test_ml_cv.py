"""Walk-forward CV: purging, embargo, no look-ahead; metrics against an oracle."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from engine.ml import metrics
from engine.ml.cv import purged_folds

HORIZON = 5


def _rows(n: int = 200, horizon: int = HORIZON) -> tuple[np.ndarray, np.ndarray]:
    start = np.arange(n, dtype=np.int64) * 10
    end = start + horizon * 10
    return start, end


def test_purging_removes_exactly_the_rows_whose_label_reaches_into_the_test_block() -> None:
    start, end = _rows()
    for fold in purged_folds(start, end, n_folds=3):
        before = np.flatnonzero(start < fold.test_start)
        overlapping = before[end[before] >= fold.test_start]
        assert set(fold.purged.tolist()) == set(overlapping.tolist())
        assert set(fold.train.tolist()) == set(before.tolist()) - set(overlapping.tolist())


def test_purged_rows_are_the_last_horizon_rows_before_the_test_block() -> None:
    start, end = _rows()
    fold = purged_folds(start, end, n_folds=3)[1]
    first_test = int(fold.test[0])
    assert fold.purged.tolist() == list(range(first_test - HORIZON, first_test))


def test_walk_forward_never_trains_on_rows_at_or_after_the_test_block() -> None:
    start, end = _rows()
    for fold in purged_folds(start, end, n_folds=4):
        assert start[fold.train].max() < fold.test_start
        assert end[fold.train].max() < fold.test_start


def test_embargo_drops_rows_just_after_the_test_block_in_k_fold() -> None:
    start, end = _rows()
    fold = purged_folds(start, end, n_folds=4, embargo=30, walk_forward=False)[1]
    after = np.flatnonzero((start > fold.test_end) & (start <= fold.test_end + 30))
    assert fold.embargoed.tolist() == after.tolist()
    assert not set(fold.train.tolist()) & set(after.tolist())


def test_folds_test_every_later_block_once() -> None:
    start, end = _rows()
    folds = purged_folds(start, end, n_folds=4)
    tested = np.concatenate([f.test for f in folds])
    assert len(tested) == len(set(tested.tolist()))
    assert tested.min() > 0 and tested.max() == len(start) - 1


def test_rows_sharing_a_timestamp_stay_in_one_block() -> None:
    start = np.repeat(np.arange(100, dtype=np.int64), 3)  # three symbols per bar
    for fold in purged_folds(start, start + 20, n_folds=3):
        assert not set(start[fold.test].tolist()) & set(start[fold.train].tolist())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 1), min_size=4, max_size=60).filter(lambda y: 0 < sum(y) < len(y)),
    st.data(),
)
def test_auc_matches_scikit_learn(y: list[int], data: st.DataObject) -> None:
    scores = data.draw(st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), min_size=len(y),
                                max_size=len(y)))  # fmt: skip
    p = np.array(scores)
    proba = np.column_stack([1 - p, p])
    assert np.isclose(metrics.auc(np.array(y), proba), roc_auc_score(y, p))


def test_majority_baseline_accuracy_is_the_share_of_the_training_majority() -> None:
    y_train = np.array([0, 0, 1, 2, 2, 2])
    y_test = np.array([2, 2, 0, 1])
    proba = metrics.majority_proba(y_train, len(y_test), 3)
    assert metrics.classification_metrics(y_test, proba)["accuracy"] == np.mean(y_test == 2)


def test_calibration_bins_count_every_row_once() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(np.int64)
    bins = metrics.calibration(y, np.column_stack([1 - p, p]))
    assert sum(b["count"] for b in bins) == 500


def test_balanced_accuracy_ignores_class_imbalance() -> None:
    y = np.array([0] * 90 + [1] * 10)
    always_zero = np.zeros(100, dtype=np.int64)
    assert metrics.balanced_accuracy(y, always_zero) == 0.5
