"""Stops and targets rest at the paper broker as a bracket with their entry, and fill
where the market traded: at the stop, at the open of a gap through it, at the target.

The four cases are the audit's: a long of 100 bought at 100.018 (a close of 100 plus
the default slippage) with a stop at 98 and a target at 106, met by one more bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlite_utils import Database

from engine.config import PaperSettings
from engine.domain import Bar, ExitReason, Intent, OrderStatus, OrderType, Purpose, Side
from engine.execution.brokers.paper import PaperBroker
from engine.execution.oms import Oms
from engine.execution.portfolio import Portfolio
from store.db import open_writer

T0 = 1_700_000_000_000
MINUTE = 60_000
ENTRY_BAR = Bar("AAA", T0, 99.9, 100.2, 99.8, 100.0, 1e6)  # range 0.4: the entry at 100.018


@dataclass
class Clock:
    now: int = T0 + 1

    def __call__(self) -> int:
        return self.now


@dataclass
class Desk:
    db: Database
    broker: PaperBroker
    oms: Oms
    clock: Clock

    def bar(self, o: float, h: float, low: float, c: float, minutes: int = 1) -> None:
        self.clock.now += minutes * MINUTE
        self.oms.on_bar(Bar("AAA", self.clock.now - 1, o, h, low, c, 1e6))

    def trades(self) -> list[tuple[float, str, float, float]]:
        return self.db.execute(
            "SELECT round(pnl, 2), exit_reason, stop, target FROM trades ORDER BY id"
        ).fetchall()


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    db = open_writer(tmp_path / "store.db")
    broker = PaperBroker(db, PaperSettings(), 100_000.0)
    clock = Clock()
    broker.on_bar(ENTRY_BAR)
    yield Desk(db, broker, Oms(db, broker, Portfolio.load(db, 100_000.0), clock), clock)
    db.close()


def long_100(desk: Desk, stop: float | None = 98.0, target: float | None = 106.0) -> str:
    intent = Intent(
        "AAA", Side.BUY, 100, Purpose.ENTRY, stop_loss=stop, take_profit=target, reason="t"
    )
    entry = desk.oms.submit(intent, ENTRY_BAR.close)
    assert entry.status is OrderStatus.FILLED and entry.avg_price == pytest.approx(100.018)
    return entry.client_order_id


def test_a_gap_through_the_stop_is_booked_at_the_open_not_the_close(desk: Desk) -> None:
    long_100(desk)
    desk.bar(94.0, 99.0, 93.0, 98.9)
    assert desk.trades() == [(-616.74, "stop", 98.0, 106.0)]


def test_a_dip_through_the_stop_that_closes_higher_is_booked_at_the_stop(desk: Desk) -> None:
    long_100(desk)
    desk.bar(100.0, 100.1, 97.0, 99.9)
    assert desk.trades() == [(-210.98, "stop", 98.0, 106.0)]


def test_a_bar_closing_at_its_low_far_below_the_stop_loses_only_to_the_stop(
    desk: Desk,
) -> None:
    long_100(desk)
    desk.bar(99.5, 99.6, 95.0, 95.0)
    assert desk.trades() == [(-213.98, "stop", 98.0, 106.0)]


def test_a_spike_through_the_target_is_booked_at_the_target(desk: Desk) -> None:
    long_100(desk)
    desk.bar(100.1, 107.0, 100.0, 100.2)
    assert desk.trades() == [(596.2, "target", 98.0, 106.0)]


def test_the_stop_filling_cancels_the_target(desk: Desk) -> None:
    entry = long_100(desk)
    desk.bar(100.0, 100.1, 97.0, 99.9)
    assert desk.oms.get(f"{entry}-S").status is OrderStatus.FILLED  # type: ignore[union-attr]
    assert desk.oms.get(f"{entry}-T").status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert desk.oms.open_orders() == [] and desk.broker.working_orders() == []


def test_a_bar_through_both_levels_is_booked_as_the_stop(desk: Desk) -> None:
    long_100(desk)
    desk.bar(100.0, 107.0, 97.0, 100.0)
    assert [t[1] for t in desk.trades()] == ["stop"]
    assert desk.broker.account().positions == {}


def test_the_pair_rests_untouched_while_the_market_stays_between_the_levels(
    desk: Desk,
) -> None:
    entry = long_100(desk)
    for _ in range(5):
        desk.bar(100.0, 101.0, 99.0, 100.5)
    working = {o.client_order_id: o.order_type for o in desk.broker.working_orders()}
    assert working == {f"{entry}-S": OrderType.STOP, f"{entry}-T": OrderType.LIMIT}
    assert desk.trades() == []


def test_a_stop_fill_reports_its_slippage_against_the_stop_not_the_bar(desk: Desk) -> None:
    long_100(desk)
    desk.bar(94.0, 99.0, 93.0, 98.9)
    (price, ref) = desk.db.execute(
        "SELECT price, ref_price FROM fills WHERE side = 'SELL'"
    ).fetchone()
    assert ref == 98.0 and price == pytest.approx(93.8706)


def test_an_exit_at_market_cancels_the_pair_first_so_no_stop_fills_afterwards(
    desk: Desk,
) -> None:
    long_100(desk)
    exit_ = Intent("AAA", Side.SELL, 100, Purpose.EXIT, reason="regime turned")
    assert desk.oms.submit(exit_, 100.0).status is OrderStatus.FILLED
    desk.bar(94.0, 99.0, 93.0, 98.9)  # would have hit the stop
    assert desk.broker.account().positions == {}
    assert [t[1] for t in desk.trades()] == [ExitReason.SIGNAL.value]


def test_a_trailed_stop_fills_at_its_new_level_and_says_trailing(desk: Desk) -> None:
    entry = long_100(desk)
    desk.bar(100.0, 103.0, 99.9, 102.8)
    desk.oms.modify_stop(f"{entry}-S", 101.5, ExitReason.TRAILING)
    desk.bar(102.0, 102.1, 101.0, 101.2)
    pnl, reason, _, _ = desk.trades()[0]
    assert reason == "trailing" and pnl > 0


def test_a_limit_entry_that_expires_unfilled_takes_its_pair_with_it(desk: Desk) -> None:
    intent = Intent(
        "AAA",
        Side.BUY,
        100,
        Purpose.ENTRY,
        order_type=OrderType.LIMIT,
        limit_price=95.0,
        stop_loss=93.0,
        take_profit=105.0,
    )
    entry = desk.oms.submit(intent, 100.0)
    desk.oms.cancel(entry.client_order_id)
    statuses = {o.client_order_id: o.status for o in desk.oms.open_orders()}
    assert statuses == {} and desk.broker.working_orders() == []


def test_the_pair_survives_a_restart_of_the_broker_and_still_fills(
    desk: Desk, tmp_path: Path
) -> None:
    long_100(desk)
    broker = PaperBroker(desk.db, PaperSettings(), 100_000.0)
    oms = Oms(desk.db, broker, Portfolio.load(desk.db, 100_000.0), desk.clock)
    assert [o.status for o in oms.reconcile()] == [OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
    desk.clock.now += MINUTE
    oms.on_bar(Bar("AAA", desk.clock.now, 100.0, 100.1, 97.0, 99.9, 1e6))
    assert desk.trades() == [(-210.98, "stop", 98.0, 106.0)]


def test_a_position_whose_pair_was_lost_at_the_broker_is_protected_again(desk: Desk) -> None:
    entry = long_100(desk)
    for side in ("S", "T"):
        desk.broker.cancel(f"{entry}-{side}", desk.clock.now)  # the broker dropped them
    portfolio = Portfolio.load(desk.db, 100_000.0)
    oms = Oms(desk.db, desk.broker, portfolio, desk.clock)
    oms.reconcile()
    position = portfolio.position("AAA")
    assert oms.protection("AAA") == [] and position is not None
    assert [o.order_type for o in oms.protect(position)] == [OrderType.STOP, OrderType.LIMIT]
    desk.oms = oms
    desk.bar(100.0, 100.1, 97.0, 99.9)
    assert desk.trades() == [(-210.98, "stop", 98.0, 106.0)]
