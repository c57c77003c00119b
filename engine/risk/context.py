"""What the risk checks see: one frozen snapshot of the account and its recent history.

The checks are pure functions of an intent and a `RiskContext`; nothing here reads
the database. `RiskFacts` (engine/risk/facts.py) carries the part of the context
that comes from the state store; the caller adds the live part (equity, positions,
prices, indicators) and calls `facts.context(...)`. The engine's router asks its
in-memory `DailyFacts.context(now, ...)` (engine/risk/daily.py), which builds the
same context without the `RiskFacts` in between.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.domain import Intent, Order, OrderType, Position, Side, TradingState, Verdict
from engine.market.calendar import Blackout

if TYPE_CHECKING:
    from engine.config import RiskSettings


# The fields no memoised figure of a context reads (see `RiskContext.adjusted`).
MEMO_FREE = frozenset({"trading_state", "market_open", "closed_reasons", "blackouts"})


@dataclass(frozen=True, slots=True)
class RiskContext:
    """The account as the gate sees it at `now` (epoch ms UTC).

    Only `now` and `equity` are required; every other field has a neutral default
    so a caller (or a test) can build a minimal context.

    - cash: None means "same as equity" (no positions).
    - day_start_equity / peak_equity: None means "same as equity" (no loss yet).
    - open_orders: the orders still working at the broker; entries among them
      count against exposure and position limits as if filled.
    - atr_pct: ATR / close per symbol; an entry on a symbol without one is denied.
    - trades_today: entries opened today; realized_today: closed P&L today.
    - consecutive_losses: losing round trips in a row since the last state change.
    - last_exit_at: when each symbol last went flat (for the cooldown).
    - order_times: submission times of recent orders (the last minute at least).
    - returns: recent bar returns per symbol, aligned at the end, for correlation.
    - market_open: per symbol; None lets the gate ask its calendar (or assume open);
      closed_reasons: why a closed market is closed, for the denial's text.
    - blackouts: event windows; None lets the gate ask its calendar.
    - broker_connected / stale_symbols / entries_blocked: health, usually from the
      monitor; any of them blocks entries (never exits).
    """

    now: int
    equity: float
    trading_state: TradingState = TradingState.ACTIVE
    cash: float | None = None
    day_start_equity: float | None = None
    peak_equity: float | None = None
    positions: Mapping[str, Position] = field(default_factory=dict)
    last_prices: Mapping[str, float] = field(default_factory=dict)
    open_orders: Sequence[Order] = ()
    atr_pct: Mapping[str, float] = field(default_factory=dict)
    trades_today: int = 0
    realized_today: float = 0.0
    consecutive_losses: int = 0
    last_exit_at: Mapping[str, int] = field(default_factory=dict)
    order_times: Sequence[int] = ()
    orders_today: int = 0
    fills_today: int = 0
    returns: Mapping[str, Sequence[float]] = field(default_factory=dict)
    market_open: Mapping[str, bool] | None = None
    closed_reasons: Mapping[str, str] = field(default_factory=dict)
    blackouts: Sequence[Blackout] | None = None
    broker_connected: bool = True
    stale_symbols: Set[str] = frozenset()
    entries_blocked: str = ""
    # What the checks derive from this context, worked out once: every check of an
    # order reads the same account, so its figures are scanned once, not per check.
    _memo: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    def adjusted(self, **changes: Any) -> RiskContext:
        """This context with other values for fields its worked-out figures never read
        (`MEMO_FREE`: the calendar's view and the trading state), keeping those
        figures: the gate adds the calendar's view for each intent, and the figures
        (exposures, working entries, the account's scan) are the same for all of them.
        Any other field makes a new context; asking for one here is a ValueError."""
        read = set(changes) - MEMO_FREE
        if read:
            raise ValueError(f"{sorted(read)} feed the context's figures: build a new context")
        out = dataclasses.replace(self, **changes)
        object.__setattr__(out, "_memo", self._memo)
        return out

    # Derived figures, shared by checks, the monitor and the usage report.

    @property
    def start_equity(self) -> float:
        return self.equity if self.day_start_equity is None else self.day_start_equity

    @property
    def peak(self) -> float:
        return self.equity if self.peak_equity is None else max(self.peak_equity, self.equity)

    def position_qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.qty if pos else 0.0

    def price(self, symbol: str) -> float | None:
        """The last price, else the position's average price; None when unknown."""
        last = self.last_prices.get(symbol)
        if last is not None and _usable(last):
            return last
        pos = self.positions.get(symbol)
        return pos.avg_price if pos and _usable(pos.avg_price) else None

    def exposure(self, symbol: str) -> float:
        """Signed notional of the position at the last price."""
        qty = self.position_qty(symbol)
        if qty == 0:
            return 0.0
        price = self.price(symbol)
        return qty * price if price is not None else 0.0

    def pending_entries(self, symbol: str | None = None) -> list[Order]:
        by_symbol = self._pending_by_symbol()
        if symbol is not None:
            return list(by_symbol.get(symbol, ()))
        return [o for orders in by_symbol.values() for o in orders]

    def _pending_by_symbol(self) -> dict[str, list[Order]]:
        """Working entries per symbol, in order, sorted out once per context."""
        memo = self._memo.get("pending")
        if memo is None:
            by_symbol: dict[str, list[Order]] = {}
            for o in self.open_orders:
                if o.status.is_open and not o.purpose.reduces_exposure:
                    by_symbol.setdefault(o.symbol, []).append(o)
            memo = self._memo["pending"] = by_symbol
        return memo  # type: ignore[return-value]

    def pending_exposure(self, symbol: str) -> float:
        """Signed notional that working entry orders on `symbol` would add."""
        total = 0.0
        for o in self.pending_entries(symbol):
            price = order_price(o.order_type, o.limit_price, o.stop_price, self.price(symbol))
            if price is not None:
                total += o.side.sign * o.remaining * price
        return total

    def symbols_held(self) -> set[str]:
        return {s for s, p in self.positions.items() if p.qty != 0}

    def gross_exposure(self) -> float:
        return sum(abs(x) for x in self._exposures())

    def net_exposure(self) -> float:
        return sum(self._exposures())

    def _exposures(self) -> list[float]:
        """Each symbol's position and working entries at the last price, worked out
        once per context: buying power, gross and net exposure all read them."""
        memo = self._memo.get("exposures")
        if memo is None:
            memo = self._memo["exposures"] = [
                self.exposure(s) + self.pending_exposure(s) for s in self._symbols()
            ]
        return memo  # type: ignore[return-value]

    def _symbols(self) -> set[str]:
        return self.symbols_held() | {o.symbol for o in self.pending_entries()}


class ContextDraft:
    """A RiskContext's slots without its frozen __setattr__, for a context built on
    every monitor step (`DailyFacts.context`): a frozen dataclass's __init__ sets each
    of its twenty-five fields through object.__setattr__, ten times what plain slot
    stores cost. Same slots in the same order on the same base, so Python lets the
    finished draft's class be set to RiskContext (`done`): from then on it is a
    RiskContext like any other. A field left unset raises AttributeError when read;
    tests/test_daily_facts.py compares every field with a context built the usual way."""

    __slots__ = RiskContext.__slots__

    def done(self) -> RiskContext:
        self.__class__ = RiskContext  # type: ignore[assignment]
        return self  # type: ignore[return-value]


def _usable(x: float) -> bool:
    return math.isfinite(x) and x > 0


def order_price(
    order_type: OrderType, limit_price: float | None, stop_price: float | None, last: float | None
) -> float | None:
    """The price an order is expected to trade at: its limit, its stop, else the last."""
    if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and limit_price is not None:
        return limit_price
    if order_type is OrderType.STOP and stop_price is not None:
        return stop_price
    return last


def intent_price(intent: Intent, ctx: RiskContext) -> float | None:
    return order_price(
        intent.order_type, intent.limit_price, intent.stop_price, ctx.price(intent.symbol)
    )


def reduces_exposure(intent: Intent, ctx: RiskContext) -> bool:
    """An exit or flatten on the side that shrinks an existing position.

    Whether it stays within the position (never beyond flat) is the `exit_size`
    check's business; this only decides which family of checks applies.
    """
    if not intent.purpose.reduces_exposure:
        return False
    qty = ctx.position_qty(intent.symbol)
    return qty != 0 and (qty > 0) == (intent.side is Side.SELL)


# Figures within this relative distance of a limit are at the limit: float noise
# (0.1 * 110 / 100) must not deny an order sized exactly to it.
_TOLERANCE = 1e-9


def exceeds(value: float, limit: float) -> bool:
    """value > limit, ignoring float noise; NaN exceeds everything."""
    if math.isnan(value):
        return True
    return value > limit + _TOLERANCE * max(abs(limit), 1.0)


def fmt_money(x: float) -> str:
    return f"{x:,.2f}"


def fmt_pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def fmt_qty(x: float) -> str:
    if math.isfinite(x) and x == int(x):
        return f"{int(x):,}"
    return f"{x:,.8g}"


CheckFn = Callable[[Intent, RiskContext, "RiskSettings"], Verdict]


def _intent_figures(intent: Intent, ctx: RiskContext) -> Iterator[tuple[str, float]]:
    yield "qty", intent.qty
    for name in ("limit_price", "stop_price", "stop_loss", "take_profit"):
        value = getattr(intent, name)
        if value is not None:
            yield name, value
    last = ctx.last_prices.get(intent.symbol)
    if last is not None:
        yield f"last price of {intent.symbol}", last
    atr = ctx.atr_pct.get(intent.symbol)
    if atr is not None:
        yield f"ATR% of {intent.symbol}", atr


def _account_figures(ctx: RiskContext) -> Iterator[tuple[str, float]]:
    yield "equity", ctx.equity
    for name in ("cash", "day_start_equity", "peak_equity"):
        value = getattr(ctx, name)
        if value is not None:
            yield name, value
    yield "realized_today", ctx.realized_today
    for symbol, pos in ctx.positions.items():
        yield f"{symbol} position", pos.qty
        yield f"{symbol} average price", pos.avg_price
        last = ctx.last_prices.get(symbol)
        if last is not None:
            yield f"last price of {symbol}", last


def non_finite(intent: Intent, ctx: RiskContext, *, account: bool = True) -> str | None:
    """The first input that is not a number (NaN or infinite), described; else None."""
    problem = _first_non_finite(_intent_figures(intent, ctx))
    if problem is None and account:
        problem = _account_problem(ctx)
    return problem


def _first_non_finite(figures: Iterator[tuple[str, float]]) -> str | None:
    for name, value in figures:
        if not (isinstance(value, int | float) and math.isfinite(value)):
            return f"{name} is {value!r}, not a finite number"
    return None


def _account_problem(ctx: RiskContext) -> str | None:
    """The account's first non-finite figure, scanned once per context."""
    memo = ctx._memo
    if "account" not in memo:
        memo["account"] = _first_non_finite(_account_figures(ctx))
    return memo["account"]  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Guard:
    """How a fail-closed check is guarded: its name, whether it reads the account's
    figures, and the check itself without the guard."""

    name: str
    account: bool
    check: CheckFn


# Every guarded check's guard, so the gate can test the figures once per intent
# instead of once per check (the same answer: `non_finite` is pure).
GUARDS: dict[CheckFn, Guard] = {}


def fail_closed(name: str, *, account: bool = True) -> Callable[[CheckFn], CheckFn]:
    """A check that denies when any figure it may read is not finite: NaN compares
    false with everything, so an unguarded `loss > limit` would allow. `account`:
    the check reads the account's figures (entry checks); the sanity checks every
    exit passes read only the intent's, so a broken equity never traps a position."""

    def wrap(check: CheckFn) -> CheckFn:
        @functools.wraps(check)
        def guarded(intent: Intent, ctx: RiskContext, settings: RiskSettings) -> Verdict:
            problem = non_finite(intent, ctx, account=account)
            if problem is not None:
                return Verdict.deny(name, f"fail closed: {problem}")
            return check(intent, ctx, settings)

        GUARDS[guarded] = Guard(name, account, check)
        return guarded

    return wrap
