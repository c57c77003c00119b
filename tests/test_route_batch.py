"""A cycle's intents placed together (OrderRouter.route -> Oms.submit_many) against
the same intents sent one at a time: the same orders, fills, positions and cash,
gated against the orders placed before them, and still held by a queued stop."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from engine.cycle.recorder import Stopwatch
from engine.domain import Intent, Purpose, Side
from engine.process.runner import Engine
from engine.risk.gate import CHECK_NAMES
from store.commands import enqueue_command
from tests.conftest import FakeClock

WIDE = {
    "max_trades_per_day": 10**6,
    "max_orders_per_minute": 10**6,
    "cooldown_minutes": 0,
    "max_order_fill_ratio": 10**6,
    "max_open_positions": 500,
    "max_position_notional": 10,
    "max_gross_exposure": 20,
    "max_net_exposure": 20,
    "margin_requirement": 0.5,
}
_RANDOM_TAIL = re.compile(r"(C\d{8}-\d{9}-\d{6})-[0-9a-f]{6}")


def open_engine(folder: Path, opened: list[Any], **risk: Any) -> Engine:
    from engine.config import load_settings

    cfg = load_settings(
        engine={"cycle_seconds": 1.0, "symbols": 5, "seed": 11, "warmup_bars": 120},
        risk={**WIDE, **risk},
    )
    eng = Engine(cfg, folder / "cockpit.db", clock=FakeClock())
    eng.open()
    opened.append(eng)
    return eng


def entry(eng: Engine, symbol: str, qty: float = 10, stop: float = 0.98) -> Intent:
    assert eng.trader is not None
    price = eng.trader.last_bar[symbol].close
    return Intent(
        symbol,
        Side.BUY,
        qty,
        Purpose.ENTRY,
        stop_loss=price * stop,
        take_profit=price * 1.05,
        reason="test",
    )


def exit_(symbol: str, qty: float = 10) -> Intent:
    return Intent(symbol, Side.SELL, qty, Purpose.EXIT, reason="test")


def symbols(eng: Engine) -> list[str]:
    assert eng.trader is not None
    return list(eng.trader.feed.symbols)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """The rows with the client order ids' random tails taken off (they differ
    between two engines by design; the time and sequence before them must not)."""
    conn = sqlite3.connect(db)
    try:
        return [
            tuple(_RANDOM_TAIL.sub(r"\1", v) if isinstance(v, str) else v for v in row)
            for row in conn.execute(sql)
        ]
    finally:
        conn.close()


def book_of(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "orders": rows(
            db,
            "SELECT client_order_id, symbol, side, qty, type, purpose, status, limit_price,"
            " stop_price, filled_qty, avg_price, broker_order_id, created_at, updated_at,"
            " parent_id, oco_group, exit_reason, ref_price FROM orders ORDER BY id",
        ),
        # Per order in order; a batch writes every order's NEW event before the reports.
        "events": rows(
            db,
            "SELECT client_order_id, ts, status, detail FROM order_events"
            " ORDER BY client_order_id, id",
        ),
        "fills": rows(db, "SELECT * FROM fills ORDER BY id"),
        "signals": rows(db, "SELECT * FROM signals ORDER BY id"),
        "positions": rows(db, "SELECT * FROM positions ORDER BY symbol"),
        "trades": rows(db, "SELECT * FROM trades ORDER BY id"),
        "paper_account": rows(db, "SELECT * FROM paper_account"),
        "paper_orders": rows(db, "SELECT * FROM paper_orders ORDER BY client_order_id"),
        "paper_executions": rows(db, "SELECT * FROM paper_executions ORDER BY exec_id"),
    }


def cycles(eng: Engine) -> list[list[Intent]]:
    """Entries on every symbol (one far beyond the paper account's cash, so the
    broker rejects it, and one the gate denies), then exits and a new entry."""
    s = symbols(eng)
    assert eng.trader is not None
    price = eng.trader.last_bar[s[3]].close
    too_big = int(150_000 / price)
    first = [
        entry(eng, s[0]),
        entry(eng, s[1], 20),
        entry(eng, s[2], 0),
        entry(eng, s[3], too_big, 0.999),
    ]
    second = [exit_(s[0]), entry(eng, s[4], 5), exit_(s[1], 20)]
    return [first, second]


def test_a_batch_makes_the_same_orders_fills_positions_and_cash_as_one_at_a_time(
    tmp_path, open_engines
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    together = open_engine(tmp_path / "a", open_engines)
    alone = open_engine(tmp_path / "b", open_engines)
    assert together.trader is not None and alone.trader is not None
    for cycle_id, (batch, single) in enumerate(
        zip(cycles(together), cycles(alone), strict=True), start=1
    ):
        sent, denied = together.trader.router.route(batch, cycle_id, Stopwatch())
        made = [alone.trader.router.submit(i, cycle_id=cycle_id) for i in single]
        assert (sent, denied) == (sum(o is not None for o in made), made.count(None))
        alone.trader.db.conn.commit()

    a, b = book_of(tmp_path / "a" / "cockpit.db"), book_of(tmp_path / "b" / "cockpit.db")
    assert a == b
    statuses = {row[6] for row in a["orders"]}
    assert {"FILLED", "REJECTED", "CANCELED", "ACCEPTED"} <= statuses
    assert [r[10] for r in a["signals"]] == ["all", "all", "quantity", "all", "all", "all", "all"]
    assert together.trader.portfolio.cash == alone.trader.portfolio.cash
    assert together.trader.portfolio.positions == alone.trader.portfolio.positions


def test_each_intent_is_gated_against_the_orders_placed_before_it(tmp_path, open_engines):
    eng = open_engine(tmp_path, open_engines, max_open_positions=2, max_trades_per_day=10**6)
    assert eng.trader is not None
    s = symbols(eng)

    sent, denied = eng.trader.router.route([entry(eng, x) for x in s[:3]], 1, Stopwatch())

    assert (sent, denied) == (2, 1)
    verdicts = rows(tmp_path / "cockpit.db", "SELECT symbol, check_name FROM signals ORDER BY id")
    assert verdicts == [(s[0], "all"), (s[1], "all"), (s[2], "open_positions")]
    assert eng.trader.router.entries_locked(s[2], eng.trader.market_now)


def test_the_trades_of_the_day_count_the_orders_placed_before_in_the_batch(tmp_path, open_engines):
    eng = open_engine(tmp_path, open_engines, max_trades_per_day=2)
    assert eng.trader is not None
    s = symbols(eng)

    sent, denied = eng.trader.router.route([entry(eng, x) for x in s[:4]], 1, Stopwatch())

    assert (sent, denied) == (2, 2)
    checks = rows(tmp_path / "cockpit.db", "SELECT check_name FROM signals ORDER BY id")
    assert checks == [("all",), ("all",), ("trades_per_day",), ("trades_per_day",)]
    assert "trades_per_day" in CHECK_NAMES


def test_a_queued_emergency_stop_holds_every_intent_of_the_batch(tmp_path, open_engines):
    eng = open_engine(tmp_path, open_engines)
    assert eng.trader is not None
    s = symbols(eng)
    enqueue_command("emergency_stop", {"reason": "drill"}, "cli:tester", db=tmp_path / "cockpit.db")

    sent, denied = eng.trader.router.route([entry(eng, x) for x in s], 1, Stopwatch())

    assert (sent, denied) == (0, len(s))
    checks = rows(tmp_path / "cockpit.db", "SELECT DISTINCT check_name FROM signals")
    assert checks == [("trading_state",)]
    assert rows(tmp_path / "cockpit.db", "SELECT count(*) FROM orders") == [(0,)]


def test_a_symbol_met_again_waits_for_the_first_order_to_be_booked(tmp_path, open_engines):
    eng = open_engine(tmp_path, open_engines)
    assert eng.trader is not None
    s = symbols(eng)

    sent, denied = eng.trader.router.route(
        [entry(eng, s[0]), entry(eng, s[1]), exit_(s[0])], 1, Stopwatch()
    )

    assert (sent, denied) == (3, 0)
    assert s[0] not in eng.trader.portfolio.positions
    assert eng.trader.portfolio.positions[s[1]].qty == 10
