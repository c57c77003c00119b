"""The live model's predictions in the state store: the champion's rows as the cycle
makes them, the challenger's from a thread of its own (`ShadowWorker`), and each row
scored once its horizon has passed. Writes join the caller's open transaction."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from sqlite_utils import Database

from engine.domain import Bar
from engine.ml.registry import transaction
from store import models as stored

if TYPE_CHECKING:
    from engine.ml.service import Prediction, Runner

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


class Role:
    CHAMPION = "champion"
    CHALLENGER = "challenger"


class ShadowWorker:
    """The challenger's predictions on a thread of their own: a shadow never trades, so
    the cycle does not wait for it. A batch is queued during the cycle and started by
    `start` once the cycle is done: the shadow's Python holds the GIL between its
    LightGBM calls, and beside a running cycle it took the GIL back at each of the
    cycle's SQLite statements (each releases it), a wait of up to the interpreter's
    switch interval every time."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._queued: list[tuple[Runner, Sequence[Bar], FloatArray]] = []
        self._pending: deque[tuple[Sequence[Bar], Future[list[Prediction]]]] = deque()

    def submit(self, runner: Runner, bars: Sequence[Bar], x: FloatArray) -> None:
        """Queue a batch; it runs from the next `start`."""
        self._queued.append((runner, bars, x))

    def start(self) -> None:
        """Start every queued batch on the shadow thread."""
        if not self._queued:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        for runner, bars, x in self._queued:
            self._pending.append((bars, self._executor.submit(runner.predict_batch, x)))
        self._queued.clear()

    def finished(self) -> list[tuple[Bar, Prediction]]:
        """Predictions whose batch is done, oldest first; a batch still running waits."""
        out: list[tuple[Bar, Prediction]] = []
        while self._pending and self._pending[0][1].done():
            out.extend(self._take(*self._pending.popleft()))
        return out

    def close(self) -> list[tuple[Bar, Prediction]]:
        self.start()
        out: list[tuple[Bar, Prediction]] = []
        while self._pending:
            out.extend(self._take(*self._pending.popleft()))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return out

    @staticmethod
    def _take(
        bars: Sequence[Bar], future: Future[list[Prediction]]
    ) -> list[tuple[Bar, Prediction]]:
        try:
            return list(zip(bars, future.result(), strict=True))
        except Exception:  # a failed shadow costs its rows, never the cycle
            log.exception("shadow prediction failed")
            return []


class PredictionLog:
    """Stores predictions to be scored `horizon_ms` after their bar."""

    def __init__(self, db: Database, horizon_ms: int) -> None:
        self._db = db
        self.horizon_ms = horizon_ms
        self._shadow = ShadowWorker()

    def record_batch(
        self,
        bars: Sequence[Bar],
        predictions: Mapping[str, Prediction],
        rows: Mapping[str, FloatArray],
        challenger: Runner | None,
    ) -> None:
        """The champion's rows for `bars` now; the challenger's on the shadow thread from
        the next `start_shadow`, stored by a later call once they are done."""
        done = self._shadow.finished()
        predicted = [b for b in bars if b.symbol in predictions]
        champion_rows = [self._row(b, predictions[b.symbol], Role.CHAMPION) for b in predicted]
        if challenger is not None and predicted:
            x = np.vstack([rows[b.symbol] for b in predicted]).astype(np.float64, copy=False)
            self._shadow.submit(challenger, predicted, x)
        self._insert(champion_rows + [self._row(b, p, Role.CHALLENGER) for b, p in done])

    def record(self, bar: Bar, prediction: Prediction) -> None:
        """One bar's champion prediction, and the shadow's attached to it."""
        rows = [self._row(bar, prediction, Role.CHAMPION)]
        if prediction.shadow is not None:
            rows.append(self._row(bar, prediction.shadow, Role.CHALLENGER))
        self._insert(rows)

    def start_shadow(self) -> None:
        self._shadow.start()

    def close(self) -> None:
        """Wait for the shadow thread and store what it finished."""
        self._insert([self._row(b, p, Role.CHALLENGER) for b, p in self._shadow.close()])

    def score_due(self, now: int, prices: Mapping[str, float]) -> int:
        """Score every prediction whose horizon has passed, for symbols with a price now."""
        scored = 0
        with transaction(self._db.conn):
            for symbol, price in prices.items():
                if math.isfinite(price) and price > 0:
                    scored += stored.score(self._db.conn, symbol, price, now)
        return scored

    def _row(self, bar: Bar, p: Prediction, role: str) -> tuple[object, ...]:
        return (
            bar.ts,
            bar.symbol,
            p.version,
            role,
            p.proba_up,
            p.regime_call.regime.value if p.regime_call else None,
            p.regime_call.confidence if p.regime_call else None,
            bar.true_regime.value if bar.true_regime else None,
            bar.close,
            bar.ts + self.horizon_ms,
        )

    def _insert(self, rows: list[tuple[object, ...]]) -> None:
        if not rows:
            return
        with transaction(self._db.conn):
            stored.insert_predictions(self._db.conn, rows)
