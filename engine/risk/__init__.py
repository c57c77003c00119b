"""The risk layer: a gate of pure checks before every order.

Here: the checks (`capital`, `limits`, `market`, `state`, `trade`), the gate that
runs them in a stable order, and the context they read. `facts` loads that
context's history through `store.risk` (and `daily` keeps it in memory); `usage`
measures how much of each limit is used. `monitor` acts on open positions every second: exits,
trails and the dead-man's switch. `golive` is the go-live policy: a paper
marathon's facts in, a checklist out. Not here: sizing (`engine.decide.sizing`).

gate = RiskGate(settings.risk, MarketCalendar.from_settings(...))
facts = load_risk_facts(conn, now)
ctx = facts.context(equity=..., cash=..., positions=..., last_prices=..., ...)
verdicts = gate.evaluate(intent, ctx)   # every check, stable order
verdict = gate.check(intent, ctx)       # first denial, else Verdict(True, "all")
"""

from engine.risk.context import RiskContext, reduces_exposure
from engine.risk.facts import RiskFacts, load_risk_facts
from engine.risk.gate import CHECK_NAMES, RiskGate

__all__ = [
    "CHECK_NAMES",
    "RiskContext",
    "RiskFacts",
    "RiskGate",
    "load_risk_facts",
    "reduces_exposure",
]
