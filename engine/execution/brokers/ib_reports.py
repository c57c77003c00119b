"""IB's callbacks as our ExecutionReports: statuses and fills, each reported once.

IB speaks on its own thread. Status changes (orderStatusEvent) and executions
(commissionReportEvent, which carries the commission; execDetailsEvent as a
fallback when no commission report comes within the grace period) become
ExecutionReports in a thread-safe queue that the broker's `on_bar` drains, so
the engine's cycle picks them up. Fills drive PARTIALLY_FILLED and FILLED, so an
order never reads FILLED before its last fill is reported; a report only ever
moves an order forward. IB cancels what it refuses: a Cancelled status with a
rejection code on an order we did not ask to cancel is REJECTED.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from engine.domain import ExecutionReport, Fill, OrderStatus
from engine.execution.brokers.ib_orders import (
    broker_id,
    detail,
    epoch_ms,
    map_status,
    rejection,
    side_of,
)

logger = logging.getLogger(__name__)

# How far along the lifecycle a status is; reports only ever move forward.
_RANK = {
    OrderStatus.NEW: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
    OrderStatus.CANCELED: 4,
    OrderStatus.REJECTED: 4,
    OrderStatus.EXPIRED: 4,
}


class IbReports:
    """What has been reported, per order and per execution. The callbacks and the
    sweep run on the IB thread only; `drain` is for any thread."""

    def __init__(
        self, clock: Callable[[], int], loop_time: Callable[[], float], grace_seconds: float
    ) -> None:
        self._clock = clock
        self._loop_time = loop_time
        self._grace = grace_seconds
        self._queue: queue.SimpleQueue[ExecutionReport] = queue.SimpleQueue()
        self._cancel_requested: set[str] = set()
        self._last: dict[str, OrderStatus] = {}
        self._reported_execs: set[str] = set()
        self._reported_qty: dict[str, float] = {}
        self._pending_execs: dict[str, tuple[float, Any, Any]] = {}  # execId -> (seen, trade, fill)

    def drain(self) -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        while True:
            try:
                reports.append(self._queue.get_nowait())
            except queue.Empty:
                return reports

    def last_status(self, coid: str) -> OrderStatus | None:
        return self._last.get(coid)

    def cancel_requested(self, coid: str) -> None:
        """We asked IB to cancel it: a Cancelled with a rejection code is then no rejection."""
        self._cancel_requested.add(coid)

    def advance(self, coid: str, status: OrderStatus) -> bool:
        """Record `status` if it moves the order forward; True when it does."""
        last = self._last.get(coid)
        if last is not None and _RANK[status] <= _RANK[last]:
            return False
        self._last[coid] = status
        return True

    def on_status(self, trade: Any) -> None:
        coid = trade.order.orderRef
        if not coid:
            return  # not one of ours (manual TWS orders)
        status = map_status(trade.orderStatus.status)
        if status is None or status is OrderStatus.FILLED:
            return  # fills drive FILLED, so it never precedes the last fill's report
        refused = rejection(trade)
        if (
            status is OrderStatus.CANCELED
            and refused is not None
            and coid not in self._cancel_requested
        ):
            status = OrderStatus.REJECTED  # IB cancels what it refuses; we asked for nothing
        if status is OrderStatus.REJECTED and self._reported_qty.get(coid, 0.0) > 0:
            status = OrderStatus.CANCELED
        if self.advance(coid, status):
            said = refused or detail(trade)
            self._queue.put(
                ExecutionReport(coid, status, self._clock(), None, broker_id(trade), said)
            )

    def on_exec(self, trade: Any, fill: Any) -> None:
        exec_id = fill.execution.execId
        if trade.order.orderRef and exec_id not in self._reported_execs:
            self._pending_execs.setdefault(exec_id, (self._loop_time(), trade, fill))

    def on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        self._report_fill(trade, fill, float(report.commission))

    def sweep_pending(self) -> None:
        """Executions whose commission report never came: reported with none."""
        cutoff = self._loop_time() - self._grace
        for exec_id, (seen, trade, fill) in list(self._pending_execs.items()):
            if seen <= cutoff:
                logger.warning(
                    "no commission report for execution %s after %.1fs; reporting it as 0",
                    exec_id,
                    self._grace,
                )
                self._report_fill(trade, fill, 0.0)

    def _report_fill(self, trade: Any, fill: Any, commission: float) -> None:
        coid = trade.order.orderRef
        execution = fill.execution
        self._pending_execs.pop(execution.execId, None)
        if not coid or execution.execId in self._reported_execs:
            return
        self._reported_execs.add(execution.execId)
        qty = float(execution.shares)
        reported = self._reported_qty.get(coid, 0.0) + qty
        self._reported_qty[coid] = reported
        total = float(trade.order.totalQuantity)
        status = OrderStatus.FILLED if reported >= total else OrderStatus.PARTIALLY_FILLED
        if not self.advance(coid, status):
            # A late fill after a cancel: the money moved, the order stays as it ended.
            status = self._last[coid]
        ts = epoch_ms(execution.time, self._clock())
        booked = Fill(
            coid,
            str(execution.execId),
            str(fill.contract.symbol),
            side_of(execution.side),
            ts,
            qty,
            float(execution.price),
            commission,
        )
        self._queue.put(ExecutionReport(coid, status, ts, booked, broker_id(trade)))
