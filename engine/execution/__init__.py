"""Orders and the book: the OMS, the portfolio, the account's capital, the brokers
and the reconciliation of the engine's book against the broker's.

Not here: deciding what to trade (`engine.decide`) or whether it is allowed
(`engine.risk`).
"""
