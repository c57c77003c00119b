"""Following a live broker's link from the trading thread, every monitor step.

The broker and the feed queue their connectivity events on their own threads;
here they become alerts, on the trading thread (the only writer). Positions and
orders are reconciled against the broker at start and after every reconnect; a
broker that cannot answer now is asked again on the next step.
"""

from __future__ import annotations

import logging

from engine.cycle import Trader
from engine.execution.brokers.base import BrokerUnavailable
from engine.execution.reconcile import reconcile

log = logging.getLogger(__name__)


class BrokerWatch:
    def __init__(self, trader: Trader) -> None:
        self.trader = trader
        self._reconcile_due: str | None = "at start"
        self._reconnects_seen = 0

    def reconcile(self) -> None:
        """Reconcile when one is due (at start, after a reconnect) and the broker is up."""
        trader = self.trader
        reconnects = int(getattr(trader.broker, "reconnects", 0))
        if reconnects > self._reconnects_seen:
            self._reconnects_seen = reconnects
            self._reconcile_due = "after a reconnect"
        why = self._reconcile_due
        if why is None or not trader.broker.connected:
            return
        try:
            reconcile(trader, why, orders=why != "at start")
        except BrokerUnavailable as exc:
            log.warning("reconciliation %s postponed: %s", why, exc)
            return
        self._reconcile_due = None

    def raise_events(self) -> None:
        """The broker's and the feed's queued connectivity events, raised as alerts."""
        trader = self.trader
        for source, side in (("broker", trader.broker), ("feed", trader.feed)):
            drain = getattr(side, "drain_events", None)
            if drain is None:
                continue
            for severity, title, message in drain():
                trader.alerts.raise_(
                    severity, source, title, message, dedupe_key=f"{source}:{title}"
                )
