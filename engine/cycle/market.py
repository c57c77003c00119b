"""Market data and features: market time, the bar validator, the last bar per
symbol, the O(1) incremental indicators, the model's live features and the
returns the correlation check reads."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.config import EngineSettings
from engine.domain import Bar, Severity
from engine.market.feeds import BarValidator, Feed
from engine.market.indicators import IncrementalIndicators, Snapshot
from engine.ml.features import FloatArray, LiveFeatures
from store.cycles import insert_bars

RETURNS_WINDOW = 60  # bars of returns kept per symbol for the correlation check


def store_bars(db: Database, bars: Iterable[Bar]) -> None:
    """Insert bars (a bar already stored is kept as it was: the feed never rewrites)."""
    insert_bars(
        db.conn,
        [
            (
                b.symbol,
                b.ts,
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.true_regime.value if b.true_regime else None,
            )
            for b in bars
        ],
    )


class MarketClock:
    """Market time: the newest of the bars accepted and the feed's own clock (a live
    feed's market moves with the world). It never goes back."""

    def __init__(self, feed: Feed, start: int) -> None:
        self.feed = feed
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, wall: int, bars: Sequence[Bar] = ()) -> int:
        feed_now = self.feed.market_time(wall)
        newest = max((b.ts for b in bars), default=self.now)
        self.now = max(self.now, newest, feed_now or self.now)
        return self.now


class MarketData:
    def __init__(
        self, settings: EngineSettings, exchanges: Mapping[str, str], db: Database, alerts: Alerts
    ) -> None:
        self.db = db
        self.alerts = alerts
        self.validator = BarValidator(
            max_jump=settings.max_jump, bar_ms=settings.bar_ms, exchanges=exchanges
        )
        self.last_bar: dict[str, Bar] = {}
        self.indicators: dict[str, IncrementalIndicators] = {}
        self.live_features: dict[str, LiveFeatures] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.returns: dict[str, deque[float]] = {}
        self.version = 0  # counts feature updates: what is derived from them is kept until then
        self._derived: tuple[int, dict[str, float], dict[str, tuple[float, ...]]] | None = None

    def warm(self, symbols: Sequence[str], history: Mapping[str, list[Bar]]) -> None:
        """Indicators, features and the validator from stored or fresh history."""
        for symbol in symbols:
            bars = history.get(symbol, [])
            ind, features = IncrementalIndicators(), LiveFeatures()
            snap = None
            for bar in bars:
                snap = ind.update(bar.high, bar.low, bar.close)
                features.update(bar, snap)
            self.indicators[symbol] = ind
            self.live_features[symbol] = features
            if snap is not None:
                self.snapshots[symbol] = snap
            if bars:
                self.last_bar[symbol] = bars[-1]
        self.validator.seed(b for bars in history.values() for b in bars)
        self.version += 1

    def ingest(self, bars: list[Bar]) -> tuple[list[Bar], int]:
        """Validate and store new bars; returns the accepted ones and how many were
        rejected (each with an alert that names the symbol, the bar and why)."""
        accepted: list[Bar] = []
        rejected = 0
        for bar in bars:
            rejection = self.validator.check(bar)
            if rejection is not None:
                rejected += 1
                where = f" ({bar.origin})" if bar.origin else ""
                self.alerts.raise_(
                    Severity.WARNING,
                    "feed",
                    f"Bad bar rejected for {bar.symbol}",
                    f"{bar.symbol} bar at {bar.ts}{where}: {rejection.reason}",
                    dedupe_key=f"bad-bar:{bar.symbol}",
                )
                continue
            accepted.append(bar)
            self.last_bar[bar.symbol] = bar
        store_bars(self.db, accepted)
        return accepted, rejected

    def features(self, bars: list[Bar]) -> tuple[dict[str, Snapshot], dict[str, FloatArray]]:
        """One O(1) update of the indicators and the model's features per new bar."""
        snaps: dict[str, Snapshot] = {}
        rows: dict[str, FloatArray] = {}
        for bar in bars:
            symbol = bar.symbol
            # Made on a symbol's first bar only (setdefault would build one every bar).
            indicators = self.indicators.get(symbol)
            if indicators is None:
                indicators = self.indicators[symbol] = IncrementalIndicators()
            features = self.live_features.get(symbol)
            if features is None:
                features = self.live_features[symbol] = LiveFeatures()
            snap = indicators.update(bar.high, bar.low, bar.close)
            snaps[symbol] = snap
            rows[symbol] = features.update(bar, snap)
        self.version += 1
        self.snapshots.update(snaps)
        for symbol, snap in snaps.items():
            if math.isfinite(snap.ret_1):
                self.returns.setdefault(symbol, deque(maxlen=RETURNS_WINDOW)).append(snap.ret_1)
        return snaps, rows

    def risk_inputs(self) -> tuple[dict[str, float], dict[str, tuple[float, ...]]]:
        """ATR% and recent returns per symbol for the gate, built once per feature
        update (every order of a cycle reads the same ones)."""
        if self._derived is None or self._derived[0] != self.version:
            atr_pct = {s: snap.atr_pct for s, snap in self.snapshots.items()}
            returns = {s: tuple(r) for s, r in self.returns.items()}
            self._derived = (self.version, atr_pct, returns)
        return self._derived[1], self._derived[2]

    def prices(self) -> dict[str, float]:
        return {s: b.close for s, b in self.last_bar.items()}
