"""The regime step: the rules' regime per symbol, overridden by the model above
its confidence threshold. The champion predicts every symbol of a cycle in one
batch per head; the previous regime is kept for a symbol with no new bar."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlite_utils import Database

from engine.decide.regime import RegimeCall, RegimeParams, classify, combine
from engine.domain import Bar
from engine.market.indicators import Snapshot
from engine.ml.features import FloatArray
from engine.ml.service import CycleModel, Prediction
from store.cycles import insert_regimes


class RegimeStep:
    def __init__(
        self,
        db: Database,
        params: RegimeParams,
        override_confidence: float,
        model: CycleModel | None,
    ) -> None:
        self.db = db
        self.params = params
        self.override_confidence = override_confidence
        self.model = model
        self.regimes: dict[str, RegimeCall] = {}
        self.rules_regimes: dict[str, RegimeCall] = {}
        self.predictions: dict[str, Prediction] = {}

    @property
    def loading(self) -> bool:
        """The champion the strategy trades on is still loading."""
        return self.model is not None and self.model.loading

    def after_cycle(self) -> None:
        """The cycle is committed: the model's shadow may run now (`start_shadow`)."""
        if self.model is not None:
            self.model.start_shadow()

    def seed(self, snapshots: Mapping[str, Snapshot]) -> None:
        """The rules' regime from the warm-up's last snapshot."""
        for symbol, snap in snapshots.items():
            self.regimes[symbol] = self.rules_regimes[symbol] = classify(snap, None, self.params)

    def step(
        self,
        cycle_id: int,
        bars: list[Bar],
        snaps: Mapping[str, Snapshot],
        rows: Mapping[str, FloatArray],
    ) -> None:
        """Classify every new bar, record the calls (not committed)."""
        model = self.model
        if model is not None:
            model.poll()  # a promotion or rollback, within a second
        predictions = model.predict_batch(rows) if model is not None else {}
        regime_rows = []
        for bar in bars:
            call, rules = self._classify(bar.symbol, snaps[bar.symbol], predictions)
            regime_rows.append(
                (
                    cycle_id,
                    bar.symbol,
                    bar.ts,
                    call.regime.value,
                    call.confidence,
                    call.source.value,
                    call.model_version,
                    rules.regime.value,
                    json.dumps(call.features),
                )
            )
        if model is not None:
            model.record_batch(bars, predictions, rows)
        insert_regimes(self.db.conn, regime_rows)

    def _classify(
        self, symbol: str, snap: Snapshot, predictions: Mapping[str, Prediction]
    ) -> tuple[RegimeCall, RegimeCall]:
        rules = classify(snap, self.rules_regimes.get(symbol), self.params)
        self.rules_regimes[symbol] = rules
        call = rules
        prediction = predictions.get(symbol)
        if prediction is not None:
            self.predictions[symbol] = prediction
            call = combine(rules, prediction.regime_call, self.override_confidence)
        else:
            self.predictions.pop(symbol, None)
        self.regimes[symbol] = call
        return call, rules
