"""Brokers behind one protocol (`base.Broker`): the paper broker and Interactive Brokers.

Here: the protocol, the paper broker with its pure fill rules (`fills`), and the IB
adapter with the rules of its long-lived link (`ib_link`).

Not here: the order lifecycle and its persistence (`engine.execution.oms`), which is the only
caller of a broker, and market data (`engine.market.feeds`, `engine.market.ib_feed`).
"""
