"""The signal step: protective exits first, then the strategy's intents for
every symbol with a new bar, no exit this bar and no entry lock, sized by the
risk layer. A strategy that raises loses that symbol's decision for this bar,
with an alert; the cycle and the other symbols go on."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from engine.alerts.alerts import Alerts
from engine.cycle.market import MarketData
from engine.cycle.regime_step import RegimeStep
from engine.cycle.router import OrderRouter
from engine.decide.exits import protective_exit
from engine.decide.strategy import Strategy, StrategyInput
from engine.domain import Bar, Intent, Severity
from engine.execution.oms import Oms
from engine.execution.portfolio import Portfolio
from engine.market.indicators import Snapshot

log = logging.getLogger(__name__)


class SignalStep:
    def __init__(
        self,
        strategy: Strategy,
        *,
        market: MarketData,
        regime: RegimeStep,
        router: OrderRouter,
        portfolio: Portfolio,
        oms: Oms,
        alerts: Alerts,
    ) -> None:
        self.strategy = strategy
        self.market = market
        self.regime = regime
        self.router = router
        self.portfolio = portfolio
        self.oms = oms
        self.alerts = alerts

    def step(self, bars: list[Bar], snaps: Mapping[str, Snapshot], now: int) -> list[Intent]:
        """Protective exits first; then the strategy's intents for every symbol with
        no exit this bar and no entry lock, sized by the risk layer."""
        intents = self._protective_exits(bars)
        equity = self.portfolio.mark(self.market.prices(), now).equity
        decided = {i.symbol for i in intents}
        for bar in bars:
            if bar.symbol in decided or self.router.entries_locked(bar.symbol, now):
                continue  # an exit this bar: decide entries on the next one
            prediction = self.regime.predictions.get(bar.symbol)
            new = self._decide(
                StrategyInput(
                    symbol=bar.symbol,
                    now=now,
                    snap=snaps[bar.symbol],
                    regime=self.regime.regimes[bar.symbol],
                    position=self.portfolio.position(bar.symbol),
                    equity=equity,
                    model_proba=prediction.proba_up if prediction else None,
                    model_version=prediction.version if prediction else None,
                )
            )
            if new:
                intents.extend(new)
                decided.add(bar.symbol)
        return [self.router.sized(i, equity) for i in intents]

    def _protective_exits(self, bars: list[Bar]) -> list[Intent]:
        intents = []
        covered = {o.symbol for o in self.oms.open_orders() if o.purpose.reduces_exposure}
        for bar in bars:
            position = self.portfolio.position(bar.symbol)
            if position is None or position.qty == 0 or bar.symbol in covered:
                continue
            intent = protective_exit(position, bar.high, bar.low, bar.close)
            if intent is not None:
                intents.append(intent)
        return intents

    def _decide(self, ctx: StrategyInput) -> list[Intent]:
        """The strategy's intents for one symbol. A strategy that raises loses that
        symbol's decision for this bar, with an alert; the cycle and the other
        symbols go on."""
        try:
            return self.strategy.decide(ctx)
        except Exception as exc:
            log.warning("strategy %s failed on %s: %s", self.strategy.name, ctx.symbol, exc)
            self.alerts.raise_(
                Severity.HIGH,
                "strategy",
                f"Strategy {self.strategy.name} failed on {ctx.symbol}",
                f"{type(exc).__name__}: {exc}",
                dedupe_key=f"strategy-failed:{ctx.symbol}",
            )
            return []
