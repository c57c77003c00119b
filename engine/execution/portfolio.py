"""The portfolio: cash, signed positions, P&L and equity, rebuilt from fills.

Accounting is average-price: adding to a position moves the average (weighted);
reducing leaves it and realizes (price - avg) x closed qty in the position's
direction; crossing zero closes the old position and opens the new one at the
fill price. Commissions are charged to realized P&L when paid, so at any mark

    equity - starting_cash - movements == realized + unrealized
                                       == realized_gross + unrealized - commissions

where `movements` is the net of deposits and withdrawals (engine.execution.account): cash
that came or went without being P&L. The peak moves with each movement, so a
withdrawal is not a drawdown.

A position that returns to flat (or flips) completes a round trip, reported as
a `TradeRecord`. Fills are the only input: `Portfolio.load` replays the `fills`
table, so a restarted engine continues where it stopped. What the fills made of
the portfolio is kept as a checkpoint (`write_checkpoint`, every CHECKPOINT_FILLS
fills and at a clean stop), so a load replays only the fills after it; a
checkpoint whose fill count or cash disagrees with the fills it covers is set
aside and every fill replayed.

The `write_*` helpers (their SQL is in store.portfolio) join the caller's
transaction when one is open (the OMS batches them with the order updates) and
commit on their own otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from engine.domain import EquitySnapshot, ExitReason, Fill, Position, Side, TradeRecord
from store import portfolio as rows
from store.db import atomic

__all__ = [
    "EquitySnapshot",
    "FillEffect",
    "Portfolio",
    "TradeRecord",
    "write_checkpoint",
    "write_position",
    "write_snapshot",
    "write_trade",
]

log = logging.getLogger(__name__)

# Quantities within this share of the traded size count as equal, so float dust
# (0.1 + 0.2 - 0.3) closes a position instead of leaving 5e-17 shares open.
_QTY_TOLERANCE = 1e-9

# Fills booked between two checkpoints: what a restart replays at most (a million
# fills replay in about 9 s; a thousand in about 10 ms).
CHECKPOINT_FILLS = 1_000
CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class FillEffect:
    fill: Fill
    position: Position | None  # after the fill; None when flat
    realized: float  # change in realized P&L, net of this fill's commission
    trade: TradeRecord | None  # the round trip this fill completed, if any


@dataclass(slots=True)
class _Book:
    """One open position and the round trip it belongs to (mutable, private)."""

    symbol: str
    qty: float
    avg_price: float
    opened_at: int
    side: Side
    realized: float = 0.0  # net of commissions, since the position opened
    stop: float | None = None
    target: float | None = None
    opened_qty: float = 0.0
    entry_notional: float = 0.0
    closed_qty: float = 0.0
    exit_notional: float = 0.0
    gross: float = 0.0
    commission: float = 0.0
    slippage: float = 0.0

    def position(self) -> Position:
        return Position(
            self.symbol,
            self.qty,
            self.avg_price,
            self.realized,
            self.stop,
            self.target,
            self.opened_at,
        )

    def trade(self, exit_ts: int) -> TradeRecord:
        return TradeRecord(
            symbol=self.symbol,
            side=self.side,
            qty=self.opened_qty,
            entry_ts=self.opened_at,
            exit_ts=exit_ts,
            entry_price=self.entry_notional / self.opened_qty,
            exit_price=self.exit_notional / self.closed_qty,
            pnl=self.gross - self.commission,
            commission=self.commission,
            slippage=self.slippage,
            stop=self.stop,
            target=self.target,
        )

    def state(self) -> list[Any]:
        """Every field a later fill reads or moves. Stop and target are left out: a
        load takes them from the `positions` rows, after the fills."""
        return [
            self.symbol,
            self.qty,
            self.avg_price,
            self.opened_at,
            self.side.value,
            self.realized,
            self.opened_qty,
            self.entry_notional,
            self.closed_qty,
            self.exit_notional,
            self.gross,
            self.commission,
            self.slippage,
        ]

    @classmethod
    def restored(cls, state: list[Any]) -> _Book:
        symbol, qty, avg, opened_at, side, realized, *totals = state
        return cls(symbol, qty, avg, opened_at, Side(side), realized, None, None, *totals)


def _validate(fill: Fill) -> None:
    if not (math.isfinite(fill.qty) and fill.qty > 0):
        raise ValueError(f"fill {fill.exec_id}: quantity must be positive, got {fill.qty!r}")
    if not (math.isfinite(fill.price) and fill.price > 0):
        raise ValueError(f"fill {fill.exec_id}: price must be positive, got {fill.price!r}")
    if not (math.isfinite(fill.commission) and fill.commission >= 0):
        raise ValueError(f"fill {fill.exec_id}: commission must be >= 0, got {fill.commission!r}")


# A mark and what it was taken on: positions, time, cash, peak, realized, prices.
_Marked = tuple[dict[str, Position], int, float, float, float, dict[str, float], EquitySnapshot]


class Portfolio:
    """Cash and positions in memory; every change comes from `apply_fill`."""

    def __init__(self, starting_cash: float) -> None:
        if not (math.isfinite(starting_cash) and starting_cash > 0):
            raise ValueError(f"starting cash must be positive, got {starting_cash!r}")
        self.starting_cash = starting_cash
        self._reset()

    def _reset(self) -> None:
        self.cash = self.starting_cash
        self.movements = 0.0  # net deposits less withdrawals
        self.realized = 0.0  # net of commissions
        self.realized_gross = 0.0
        self.commissions = 0.0
        self.peak = self.starting_cash
        self._books: dict[str, _Book] = {}
        self._last_prices: dict[str, float] = {}
        self._fill_prices: dict[str, float] = {}  # each symbol's last fill, not its marks
        self.fills_applied = 0
        self.fills_since_checkpoint = 0
        # The books as Positions, built once per change: the cycle, the gate and the
        # monitor read them several times a bar.
        self._positions: dict[str, Position] | None = None
        # The last mark and what it was taken on: a cycle marks once for its signals,
        # once for its equity row and once per risk context, on the same prices.
        self._last_mark: _Marked | None = None
        self._stale: set[str] = set()  # symbols whose Position must be built again

    # -- reading ---------------------------------------------------------------

    @property
    def positions(self) -> dict[str, Position]:
        return dict(self._held())

    def position(self, symbol: str) -> Position | None:
        return self._held().get(symbol)

    def _held(self) -> dict[str, Position]:
        held = self._positions
        if held is None:
            held = self._positions = {s: book.position() for s, book in self._books.items()}
        elif self._stale:
            # Only the symbols that changed: a cycle's fills must not each rebuild
            # every position (a hundred of them at a hundred symbols). Into a new
            # dict all the same: `mark` knows the positions changed by its identity.
            held = self._positions = dict(held)
            for symbol in self._stale:
                book = self._books.get(symbol)
                if book is None:
                    held.pop(symbol, None)
                else:
                    held[symbol] = book.position()
        self._stale.clear()
        return held

    def last_price(self, symbol: str) -> float | None:
        return self._last_prices.get(symbol)

    def unrealized(self, symbol: str) -> float:
        book = self._books.get(symbol)
        if book is None:
            return 0.0
        mark = self._last_prices.get(symbol, book.avg_price)
        return (mark - book.avg_price) * book.qty

    # -- changing --------------------------------------------------------------

    def apply_fill(self, fill: Fill) -> FillEffect:
        _validate(fill)
        self._stale.add(fill.symbol)
        sign = fill.side.sign
        price, qty, symbol = fill.price, fill.qty, fill.symbol
        slip_per_unit = 0.0 if fill.ref_price is None else (price - fill.ref_price) * sign
        self._pay(fill, sign)

        book = self._books.get(symbol)
        close_qty = 0.0
        if book is not None and book.qty * sign < 0:  # the fill reduces the position
            held = abs(book.qty)
            tolerance = _QTY_TOLERANCE * max(held, qty)
            close_qty = qty if qty <= held + tolerance else held
        open_qty = qty - close_qty

        realized_change = 0.0
        trade: TradeRecord | None = None
        if book is not None and close_qty > 0:
            commission = fill.commission * close_qty / qty
            gross = (price - book.avg_price) * close_qty * -sign
            book.closed_qty += close_qty
            book.exit_notional += price * close_qty
            book.gross += gross
            book.commission += commission
            book.slippage += slip_per_unit * close_qty
            book.realized += gross - commission
            self.realized_gross += gross
            realized_change += gross - commission
            remaining = abs(book.qty) - close_qty
            if remaining <= _QTY_TOLERANCE * max(abs(book.qty), qty):
                trade = book.trade(fill.ts)
                del self._books[symbol]
                book = None
            else:
                book.qty = math.copysign(remaining, book.qty)

        if open_qty > 0:
            commission = fill.commission * open_qty / qty
            if book is None:
                book = _Book(symbol, 0.0, price, fill.ts, fill.side)
                self._books[symbol] = book
            held = abs(book.qty)
            book.avg_price = (book.avg_price * held + price * open_qty) / (held + open_qty)
            book.qty += sign * open_qty
            book.opened_qty += open_qty
            book.entry_notional += price * open_qty
            book.commission += commission
            book.slippage += slip_per_unit * open_qty
            book.realized -= commission
            realized_change -= commission

        self.realized += realized_change
        return FillEffect(fill, book.position() if book else None, realized_change, trade)

    def _pay(self, fill: Fill, sign: int) -> None:
        """The fill's cash and commission, its price as the last, and the counts."""
        self.cash -= sign * fill.qty * fill.price + fill.commission
        self.commissions += fill.commission
        self._last_prices[fill.symbol] = self._fill_prices[fill.symbol] = fill.price
        self.fills_applied += 1
        self.fills_since_checkpoint += 1

    def move_cash(self, amount: float) -> None:
        """A deposit (> 0) or withdrawal (< 0): cash and the peak move together, so
        neither P&L nor drawdown sees it."""
        if not math.isfinite(amount):
            raise ValueError(f"a cash movement must be a finite amount, got {amount!r}")
        self.cash += amount
        self.movements += amount
        self.peak += amount

    def note_price(self, symbol: str, price: float) -> None:
        """The last price known for the symbol (a mark stored before a restart)."""
        self._last_prices[symbol] = price

    def set_protection(self, symbol: str, stop: float | None, target: float | None) -> bool:
        """Stop-loss and take-profit of the open position; False when there is none."""
        book = self._books.get(symbol)
        if book is None:
            log.warning("no open %s position to protect (stop %s, target %s)", symbol, stop, target)
            return False
        book.stop, book.target = stop, target
        self._stale.add(symbol)
        return True

    def mark(self, prices: Mapping[str, float], now: int) -> EquitySnapshot:
        """Value the positions at `prices` (or the last known price) and move the peak.

        Marking again on the same prices, time, cash, peak and positions gives the
        same snapshot and changes nothing, so the last one is handed back. Every
        change to the books replaces the positions dict (`_held`), which is part of
        the key, held by reference so its identity cannot be reused."""
        held = self._held()
        last = self._last_mark
        if (
            last is not None
            and last[0] is held
            and last[1] == now
            and last[2] == self.cash
            and last[3] == self.peak
            and last[4] == self.realized
            and last[5] == prices
        ):
            return last[6]
        snapshot, clean = self._value(prices, now)
        self._last_mark = (
            (held, now, self.cash, self.peak, self.realized, dict(prices), snapshot)
            if clean
            else None
        )
        return snapshot

    def _value(self, prices: Mapping[str, float], now: int) -> tuple[EquitySnapshot, bool]:
        """The snapshot, and False when a price was ignored (its warning is not memoised)."""
        market_value, gross, unrealized, clean = _valued(self._books, self._last_prices, prices)
        equity = self.cash + market_value
        self.peak = max(self.peak, equity)
        drawdown = (self.peak - equity) / self.peak if self.peak > 0 else 0.0
        snapshot = EquitySnapshot(
            ts=now,
            cash=self.cash,
            equity=equity,
            realized=self.realized,
            unrealized=unrealized,
            peak=self.peak,
            drawdown=max(drawdown, 0.0),
            gross_exposure=gross,
            net_exposure=market_value,
        )
        return snapshot, clean

    # -- persistence -----------------------------------------------------------

    @classmethod
    def load(cls, db: Database, starting_cash: float) -> Portfolio:
        """Rebuild from the database: replay every fill, then the protections and the peak."""
        portfolio = cls(starting_cash)
        portfolio.rebuild(db)
        return portfolio

    def rebuild(self, db: Database) -> None:
        """Forget the memory state and read it again from the database (at start, and
        after a failed write): the checkpoint and the fills after it, then the
        protections, the cash movements and the peak."""
        self._reset()
        _read_back(self, db.conn)

    def state(self) -> dict[str, Any]:
        """What the fills made of the portfolio (cash movements, protections and the
        peak apart): restored, it goes on exactly as a replay of the same fills."""
        return {
            "version": CHECKPOINT_VERSION,
            "cash": self.cash - self.movements,
            "realized": self.realized,
            "realized_gross": self.realized_gross,
            "commissions": self.commissions,
            "prices": self._fill_prices,
            "fills": self.fills_applied,
            "books": [book.state() for book in self._books.values()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Back to a `state()`, as from a replay of the fills it was taken after."""
        self.cash = float(state["cash"])
        self.realized = float(state["realized"])
        self.realized_gross = float(state["realized_gross"])
        self.commissions = float(state["commissions"])
        self._fill_prices = {str(s): float(p) for s, p in state["prices"].items()}
        self._last_prices = dict(self._fill_prices)
        self.fills_applied = int(state["fills"])
        self._books = {b[0]: _Book.restored(b) for b in state["books"]}

    def position_row(self, symbol: str, now: int) -> tuple[object, ...] | None:
        """The symbol's `positions` row as it stands; None when flat."""
        book = self._books.get(symbol)
        if book is None:
            return None
        return rows.position_row(
            self._held()[symbol], now, self._last_prices.get(symbol), self.unrealized(symbol)
        )


def _valued(
    books: Mapping[str, _Book], last_prices: dict[str, float], prices: Mapping[str, float]
) -> tuple[float, float, float, bool]:
    """Market value, gross exposure and unrealized P&L of the books at `prices`, each
    good price kept as the last; a missing or bad one leaves the last price (and the
    result is not clean: its warning must come again)."""
    market_value = gross = unrealized = 0.0
    clean = True
    for symbol, book in books.items():
        price = prices.get(symbol)
        if price is not None and math.isfinite(price) and price > 0:
            last_prices[symbol] = price
        elif price is not None:
            clean = False
            log.warning("ignored mark %r for %s; keeping the last price", price, symbol)
        mark = last_prices.get(symbol, book.avg_price)
        value = book.qty * mark
        market_value += value
        gross += abs(value)
        unrealized += (mark - book.avg_price) * book.qty
    return market_value, gross, unrealized, clean


def _read_back(portfolio: Portfolio, conn: sqlite3.Connection) -> None:
    usable = _usable_checkpoint(conn, portfolio.starting_cash)
    if usable is not None:
        portfolio.restore(usable[1])
    for fill in rows.fills_after(conn, usable[0] if usable else 0):
        portfolio.apply_fill(fill)
    for held in rows.protections(conn):
        held_now = portfolio.set_protection(held.symbol, held.stop, held.target)
        if held_now and held.last_price is not None:
            portfolio.note_price(held.symbol, held.last_price)
    movements = rows.total_movements(conn)
    if movements:
        portfolio.move_cash(movements)
    # The latest snapshot's peak is the running peak, moved by every deposit and
    # withdrawal before it; a larger one from before a withdrawal is not a peak.
    peak = rows.last_peak(conn)
    portfolio.peak = portfolio.starting_cash + portfolio.movements
    if peak is not None:
        portfolio.peak = max(portfolio.peak, peak)


def _usable_checkpoint(
    conn: sqlite3.Connection, starting_cash: float
) -> tuple[int, dict[str, Any]] | None:
    """The stored checkpoint's fill id and state, when the fills it covers are as many
    and move as much cash as its state says (a rounding difference apart); otherwise
    None, with a warning."""
    checkpoint = rows.load_checkpoint(conn)
    if checkpoint is None:
        return None
    count, cash, scale = rows.fill_totals(conn, checkpoint.fill_id)
    try:
        state = json.loads(checkpoint.state)
        moved = state["cash"] - starting_cash
        if (
            state["version"] == CHECKPOINT_VERSION
            and state["fills"] == count
            and abs(cash - moved) <= 1e-9 * scale + 1e-6
        ):
            return checkpoint.fill_id, state
    except (ValueError, KeyError, TypeError):
        pass
    log.warning(
        "portfolio checkpoint at fill %d set aside: it covers %d fills moving %.2f of cash,"
        " the fills table has %d moving %.2f; replaying every fill",
        checkpoint.fill_id,
        checkpoint.fills,
        checkpoint.fill_cash,
        count,
        cash,
    )
    return None


def write_checkpoint(db: Database, portfolio: Portfolio, now: int) -> None:
    """Keep the portfolio as the state after every fill in the store. Only where
    memory is what was committed: on the trading thread, between the OMS's writes."""
    state = portfolio.state()
    checkpoint = rows.Checkpoint(
        rows.last_fill_id(db.conn),
        portfolio.fills_applied,
        state["cash"] - portfolio.starting_cash,
        json.dumps(state),
    )
    rows.save_checkpoint(db.conn, checkpoint, now)
    portfolio.fills_since_checkpoint = 0


def write_position(db: Database, portfolio: Portfolio, symbol: str, now: int) -> None:
    """Upsert the symbol's `positions` row from the portfolio; delete it when flat."""
    row = portfolio.position_row(symbol, now)
    if row is None:
        rows.delete_position(db.conn, symbol)
    else:
        rows.upsert_positions(db.conn, [row])


def write_trade(db: Database, trade: TradeRecord, exit_reason: ExitReason | None = None) -> int:
    return rows.insert_trade(db.conn, trade, exit_reason)


def write_snapshot(db: Database, portfolio: Portfolio, snapshot: EquitySnapshot) -> None:
    """The `equity` row (replacing one at the same ts) and every position at its new mark.

    Rows of symbols the portfolio does not hold are deleted, so the table converges
    to memory even after a write was lost.
    """
    held = sorted(portfolio.positions)
    # store.db.atomic, not sqlite-utils': its savepoint has a fresh random name each
    # time, so SQLite compiles the statement anew on every mark (every cycle).
    with atomic(db.conn, "snapshot"):
        rows.insert_equity(db.conn, snapshot)
        rows.keep_positions(db.conn, held)
        rows.upsert_positions(
            db.conn, [r for s in held if (r := portfolio.position_row(s, snapshot.ts)) is not None]
        )
