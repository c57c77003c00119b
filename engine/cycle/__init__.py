"""The trading cycle (docs/ARCHITECTURE.md, The cycle): the `Trader` and its
collaborators. Market data and features, the regime step, the order router,
the trading-state controls, the monitor's actions, the failure policy and the
cycle's record live here; the rules they apply live in `engine.decide`,
`engine.risk` and `engine.execution`, and their SQL in `store/`."""

from engine.cycle.market import store_bars
from engine.cycle.recorder import STAGES, CycleResult
from engine.cycle.trader import Trader, default_strategy

__all__ = ["STAGES", "CycleResult", "Trader", "default_strategy", "store_bars"]
