"""The engine's book against the broker's, at start and after every reconnect.

Orders first: the OMS asks the broker about every order still open and adopts
the executions it missed, each as its own fill with the broker's exec id (a
repeat of a known exec id changes nothing). Then positions: every symbol where
the engine's quantity differs from the broker's, a position the engine does not
know included, is a `Difference`. Any difference halts trading with one CRITICAL
alert listing them all; trading stays HALTED until the operator either fixes the
account or adopts the broker's view (`adopt_broker`, from the CLI or the cockpit
through a `commands` row). The adoption books one adjusting fill per symbol at
the last price, is written to the audit trail with the operator and the reason,
and leaves the state HALTED: resuming is a separate, confirmed decision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.alerts.audit import append_audit
from engine.domain import Fill, Severity, Side, TradingState
from engine.execution.portfolio import write_position

if TYPE_CHECKING:
    from engine.cycle import Trader

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9
ALERT_KEY = "broker-reconcile"


@dataclass(frozen=True, slots=True)
class Difference:
    symbol: str
    engine_qty: float
    broker_qty: float

    def describe(self) -> str:
        if self.engine_qty == 0:
            return f"{self.symbol}: broker holds {self.broker_qty:g}, unknown to the engine"
        if self.broker_qty == 0:
            return f"{self.symbol}: engine holds {self.engine_qty:g}, the broker none"
        return f"{self.symbol}: engine {self.engine_qty:g}, broker {self.broker_qty:g}"


def differences(
    engine: Mapping[str, float], broker: Mapping[str, float], tolerance: float = TOLERANCE
) -> list[Difference]:
    """Every symbol whose quantities differ beyond `tolerance`, by symbol."""
    out = []
    for symbol in sorted(set(engine) | set(broker)):
        ours, theirs = engine.get(symbol, 0.0), broker.get(symbol, 0.0)
        if abs(ours - theirs) > tolerance * max(1.0, abs(ours), abs(theirs)):
            out.append(Difference(symbol, ours, theirs))
    return out


def engine_positions(trader: Trader) -> dict[str, float]:
    return {s: p.qty for s, p in trader.portfolio.positions.items() if p.qty}


def reconcile(trader: Trader, why: str, *, orders: bool = True) -> list[Difference]:
    """Orders (unless the caller just did them), then positions; halts with a
    CRITICAL alert on any difference. BrokerUnavailable propagates: nothing is
    decided without the broker's answer."""
    if orders:
        trader.oms.reconcile()
    account = trader.broker.account()
    found = differences(engine_positions(trader), account.positions)
    if not found:
        logger.info("broker reconciled (%s): positions agree", why)
        trader.db.conn.commit()
        return found
    listed = "; ".join(d.describe() for d in found)
    if trader.state is not TradingState.HALTED:
        trader.set_state(TradingState.HALTED, f"broker positions differ ({why})", "engine")
    trader.alerts.raise_(
        Severity.CRITICAL,
        "broker",
        "Broker positions differ: trading halted",
        f"{why}: {listed}. Fix the account, or adopt the broker's view:"
        " python -m engine adopt-broker --reason TEXT (or the Risk page).",
        dedupe_key=ALERT_KEY,
    )
    trader.db.conn.commit()
    return found


def adopt_broker(trader: Trader, actor: str, reason: str) -> str:
    """Make the engine's positions the broker's: one adjusting fill per difference at
    the last price, audited. Returns a summary; the state stays as it was."""
    if not reason.strip():
        raise ValueError("adopting the broker's positions needs a reason")
    account = trader.broker.account()
    found = differences(engine_positions(trader), account.positions)
    if not found:
        return "nothing to adopt: the engine and the broker agree"
    now = trader.clock()
    booked = []
    for diff in found:
        delta = diff.broker_qty - diff.engine_qty
        price = trader.portfolio.last_price(diff.symbol)
        bar = trader.last_bar.get(diff.symbol)
        if price is None and bar is not None:
            price = bar.close
        if price is None:
            raise ValueError(f"{diff.symbol}: no price to book the adopted position at")
        coid = f"adopt:{now}"
        fill = Fill(
            coid,
            f"adopt:{diff.symbol}:{now}",
            diff.symbol,
            Side.BUY if delta > 0 else Side.SELL,
            now,
            abs(delta),
            price,
            0.0,
            price,
        )
        trader.db.execute(
            "INSERT INTO fills (client_order_id, exec_id, ts, symbol, side, qty, price,"
            " commission, ref_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (coid, fill.exec_id, now, fill.symbol, fill.side.value, fill.qty, price, 0.0, price),
        )
        trader.portfolio.apply_fill(fill)
        write_position(trader.db, trader.portfolio, diff.symbol, now)
        booked.append(f"{diff.describe()} -> {diff.broker_qty:g} at {price:g}")
    append_audit(
        trader.db,
        actor,
        "adopt_broker",
        {
            "reason": reason,
            "differences": [
                {"symbol": d.symbol, "engine": d.engine_qty, "broker": d.broker_qty} for d in found
            ],
        },
        ts=now,
    )
    summary = "adopted the broker's positions: " + "; ".join(booked)
    trader.alerts.raise_(
        Severity.INFO, "broker", "Broker positions adopted", f"{summary} ({actor}: {reason})"
    )
    trader.db.conn.commit()
    return summary
