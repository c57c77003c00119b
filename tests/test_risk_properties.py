"""Properties of the gate over random sequences of intents and prices, on a tiny book.

Fills happen at the last price, so a fill does not move equity and every limit can
be checked against the figures the gate saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import RiskSettings
from engine.domain import Intent, Position, Purpose, Side, TradingState
from engine.risk import RiskContext, RiskGate

SYMBOLS = ("A", "B", "C", "D", "E", "F")
# Three sets of limits, so each limit is the binding one in some sequences.
LIMIT_SETS = [
    RiskSettings(max_open_positions=3, max_position_qty=2_000, cooldown_minutes=0),
    RiskSettings(
        max_open_positions=4, max_position_notional=0.8, daily_loss=0.04, cooldown_minutes=0
    ),
    RiskSettings(
        margin_requirement=0.25,
        max_position_notional=1.0,
        max_open_positions=6,
        min_reward_risk=0,
        cooldown_minutes=0,
    ),
]
LIMITS = LIMIT_SETS[0]
GATE = RiskGate(LIMITS)
GATE_FOR = {id(limits): RiskGate(limits) for limits in LIMIT_SETS}
START = 100_000.0
EPS = 1e-6


@dataclass
class Book:
    cash: float = START
    qty: dict[str, float] = field(default_factory=dict)
    avg: dict[str, float] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SYMBOLS, 100.0))
    peak: float = START
    now: int = 1_700_000_000_000

    def equity(self) -> float:
        return self.cash + sum(q * self.prices[s] for s, q in self.qty.items())

    def gross(self) -> float:
        return sum(abs(q) * self.prices[s] for s, q in self.qty.items())

    def context(self, state: TradingState = TradingState.ACTIVE) -> RiskContext:
        equity = self.equity()
        self.peak = max(self.peak, equity)
        return RiskContext(
            now=self.now,
            equity=equity,
            trading_state=state,
            cash=self.cash,
            day_start_equity=START,
            peak_equity=self.peak,
            positions={s: Position(s, q, self.avg[s]) for s, q in self.qty.items() if q},
            last_prices=dict(self.prices),
            atr_pct=dict.fromkeys(SYMBOLS, 0.01),
        )

    def fill(self, intent: Intent) -> None:
        s, price = intent.symbol, self.prices[intent.symbol]
        before = self.qty.get(s, 0.0)
        after = before + intent.side.sign * intent.qty
        if before == 0 or (before > 0) != (after > 0):
            self.avg[s] = price
        elif abs(after) > abs(before):
            self.avg[s] = (self.avg[s] * abs(before) + price * intent.qty) / abs(after)
        self.cash -= intent.side.sign * intent.qty * price
        self.qty[s] = after
        if after == 0:
            del self.qty[s]


step = st.tuples(
    st.sampled_from(SYMBOLS),
    st.sampled_from(list(Side)),
    st.integers(1, 600) | st.integers(1, 3_000),
    st.sampled_from([Purpose.ENTRY, Purpose.ENTRY, Purpose.EXIT, Purpose.FLATTEN]),
    st.floats(0.85, 1.15),  # price move before the intent
    st.floats(0.002, 0.06) | st.floats(0.002, 0.3),  # stop distance
    st.floats(0.5, 4.0),  # reward / risk
)


def make_intent(
    book: Book, symbol: str, side: Side, qty: float, purpose: Purpose, *, stop: float, rr: float
) -> Intent:
    price = book.prices[symbol]
    if purpose is not Purpose.ENTRY and book.qty.get(symbol):
        held = book.qty[symbol]
        side = Side.SELL if held > 0 else Side.BUY
        qty = min(qty, abs(held)) if purpose is Purpose.EXIT else abs(held)
    sign = side.sign
    return Intent(
        symbol,
        side,
        max(qty, 1.0),
        purpose,
        stop_loss=price * (1 - sign * stop),
        take_profit=price * (1 + sign * stop * rr),
    )


@pytest.mark.parametrize("limits", LIMIT_SETS)
@settings(max_examples=100, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=40))
def test_no_sequence_gets_an_order_through_that_breaks_a_limit(
    limits: RiskSettings, steps: list
) -> None:
    gate = RiskGate(limits)
    book = Book()
    for symbol, side, qty, purpose, move, stop, rr in steps:
        book.now += 61_000
        book.prices[symbol] *= move
        ctx = book.context()
        intent = make_intent(book, symbol, side, qty, purpose, stop=stop, rr=rr)
        if not gate.check(intent, ctx).allowed:
            continue
        before = book.qty.get(symbol, 0.0)
        book.fill(intent)
        after = book.qty.get(symbol, 0.0)
        equity, price = ctx.equity, book.prices[symbol]
        if intent.purpose is not Purpose.ENTRY:
            assert abs(after) <= abs(before) and after * before >= 0  # never beyond flat
            continue
        risk = intent.qty * abs(price - intent.stop_loss)
        assert risk <= limits.risk_per_trade * equity + EPS
        assert max(0.0, START - equity) + risk <= limits.daily_loss * START + EPS
        assert abs(after) <= limits.max_position_qty
        assert abs(after) * price <= limits.max_position_notional * equity + EPS
        assert book.gross() <= limits.max_gross_exposure * equity + EPS
        assert abs(book.equity() - book.cash) <= limits.max_net_exposure * equity + EPS
        assert len(book.qty) <= limits.max_open_positions


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=10), st.lists(step, min_size=1, max_size=20))
def test_a_paused_engine_never_increases_exposure(warmup: list, steps: list) -> None:
    book = Book()
    for symbol, side, qty, _, move, stop, rr in warmup:
        book.prices[symbol] *= move
        intent = make_intent(book, symbol, side, qty, Purpose.ENTRY, stop=stop, rr=rr)
        if GATE.check(intent, book.context()).allowed:
            book.fill(intent)
    for symbol, side, qty, purpose, _, stop, rr in steps:
        intent = make_intent(book, symbol, side, qty, purpose, stop=stop, rr=rr)
        before_qty, before_gross = book.qty.get(symbol, 0.0), book.gross()
        if GATE.check(intent, book.context(TradingState.PAUSED)).allowed:
            book.fill(intent)
            assert abs(book.qty.get(symbol, 0.0)) <= abs(before_qty)
            assert book.gross() <= before_gross + EPS


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=10), st.lists(step, min_size=1, max_size=20))
def test_a_halted_engine_lets_nothing_through_but_flatten(warmup: list, steps: list) -> None:
    book = Book()
    for symbol, side, qty, _, move, stop, rr in warmup:
        book.prices[symbol] *= move
        intent = make_intent(book, symbol, side, qty, Purpose.ENTRY, stop=stop, rr=rr)
        if GATE.check(intent, book.context()).allowed:
            book.fill(intent)
    for symbol, side, qty, purpose, _, stop, rr in steps:
        intent = make_intent(book, symbol, side, qty, purpose, stop=stop, rr=rr)
        before = book.qty.get(symbol, 0.0)
        if GATE.check(intent, book.context(TradingState.HALTED)).allowed:
            assert intent.purpose is Purpose.FLATTEN
            book.fill(intent)
            assert book.qty.get(symbol, 0.0) == 0 or abs(book.qty[symbol]) < abs(before)


@pytest.mark.parametrize("limits", LIMIT_SETS)
@settings(max_examples=100, deadline=None)
@given(
    held=st.lists(
        st.tuples(st.sampled_from(SYMBOLS[:2]), st.sampled_from(list(Side)), st.integers(1, 50)),
        max_size=4,
    ),
    symbol=st.sampled_from(SYMBOLS[2:]),
    side=st.sampled_from(list(Side)),
    qty=st.integers(1, 50),
    move=st.floats(0.9, 1.1),
    stop=st.floats(0.005, 0.05),
    rr=st.floats(2.5, 5.0),
)
def test_an_entry_well_inside_every_limit_is_allowed(
    limits: RiskSettings,
    *,
    held: list,
    symbol: str,
    side: Side,
    qty: int,
    move: float,
    stop: float,
    rr: float,
) -> None:
    # The converse of the property above: a gate that denied everything would pass it.
    book = Book()
    for s, held_side, n in held:
        book.fill(Intent(s, held_side, n, Purpose.ENTRY))
    book.prices[symbol] *= move
    intent = make_intent(book, symbol, side, qty, Purpose.ENTRY, stop=stop, rr=rr)
    verdict = GATE_FOR[id(limits)].check(intent, book.context())
    assert verdict.allowed, verdict


@settings(max_examples=100, deadline=None)
@given(
    symbol=st.sampled_from(SYMBOLS),
    side=st.sampled_from(list(Side)),
    qty=st.integers(2, 3_000),
    part=st.floats(0.01, 1.0),
    purpose=st.sampled_from([Purpose.EXIT, Purpose.FLATTEN]),
)
def test_an_exit_within_the_position_is_allowed_whatever_the_limits(
    symbol: str, side: Side, qty: int, part: float, purpose: Purpose
) -> None:
    book = Book()
    book.fill(Intent(symbol, side, qty, Purpose.ENTRY))
    book.cash -= 50_000  # deep in loss: every entry limit is past its line
    exit_qty = max(1, int(qty * part)) if purpose is Purpose.EXIT else qty
    intent = Intent(symbol, side.opposite, exit_qty, purpose)
    assert GATE.check(intent, book.context(TradingState.PAUSED)).allowed
