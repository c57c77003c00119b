"""The monitor's decisions: kill switch, pause, exits, health blocks, alerts, usage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlite_utils import Database

from engine.config import RiskSettings
from engine.domain import (
    Bar,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Purpose,
    Severity,
    Side,
    TradingState,
)
from engine.market.calendar import MarketCalendar
from engine.risk import RiskContext
from engine.risk.monitor import Monitor
from engine.risk.monitor_io import (
    BlockEntries,
    ExitKind,
    ExitPosition,
    KillSwitch,
    MonitorInput,
    MonitorState,
    MoveStop,
    Pause,
    RaiseAlert,
)
from engine.risk.usage import usage, write_usage
from store.db import open_writer

NOW = 1_700_000_000_000
OPENED = NOW - 3_600_000
MON = Monitor(RiskSettings())


def ctx(**kw: object) -> RiskContext:
    base: dict[str, object] = {"now": NOW, "equity": 100_000.0, "last_prices": {"A": 100.0}}
    base.update(kw)
    return RiskContext(**base)  # type: ignore[arg-type]


def long_a(
    qty: float = 10, stop: float | None = None, target: float | None = None
) -> dict[str, Position]:
    return {"A": Position("A", qty, 100.0, stop=stop, target=target, opened_at=OPENED)}


def bar(low: float, high: float, close: float, ts: int = NOW - 1_000, symbol: str = "A") -> Bar:
    return Bar(symbol, ts, close, high, low, close, 1_000.0)


def of(kind: type, actions: list) -> list:
    return [a for a in actions if isinstance(a, kind)]


# -- kill switch and pause ---------------------------------------------------------


@pytest.mark.parametrize(
    ("equity", "fires"), [(94_001.0, False), (94_000.0, True), (93_999.0, True)]
)
def test_kill_switch_at_the_daily_loss_limit(equity: float, fires: bool) -> None:
    actions = MON.evaluate(MonitorInput(ctx(equity=equity, day_start_equity=100_000.0)))
    assert bool(of(KillSwitch, actions)) is fires


@pytest.mark.parametrize(("equity", "fires"), [(85_001.0, False), (85_000.0, True)])
def test_kill_switch_at_the_drawdown_limit(equity: float, fires: bool) -> None:
    actions = MON.evaluate(MonitorInput(ctx(equity=equity, peak_equity=100_000.0)))
    assert bool(of(KillSwitch, actions)) is fires


def test_kill_switch_reason_states_the_numbers() -> None:
    (kill,) = of(
        KillSwitch, MON.evaluate(MonitorInput(ctx(equity=93_000.0, day_start_equity=100_000.0)))
    )
    assert "7,000.00 = 7.00%" in kill.reason and "6.00% limit" in kill.reason


def test_no_kill_switch_while_already_halted() -> None:
    c = ctx(equity=50_000.0, day_start_equity=100_000.0, trading_state=TradingState.HALTED)
    assert not of(KillSwitch, MON.evaluate(MonitorInput(c)))


@pytest.mark.parametrize(("losses", "blocks"), [(3, False), (4, True)])
def test_a_losing_streak_blocks_entries_for_the_day_without_pausing(
    losses: int, blocks: bool
) -> None:
    actions = MON.evaluate(MonitorInput(ctx(consecutive_losses=losses)))
    assert bool(of(BlockEntries, actions)) is blocks
    assert not of(KillSwitch, actions)


def test_the_losing_streak_alert_names_the_next_trading_day() -> None:
    day = NOW + 3_600_000
    actions = MON.evaluate(MonitorInput(ctx(consecutive_losses=4), next_day=day))
    (alert,) = of(RaiseAlert, actions)
    assert alert.severity is Severity.HIGH and "until 2023-11-14 23:13 UTC" in alert.message


def test_a_day_limit_lifts_by_itself_with_an_info_alert_when_its_count_resets() -> None:
    blocked = MON.step(MonitorInput(ctx(trades_today=15)))
    assert of(BlockEntries, list(blocked.actions))
    next_day = MON.step(MonitorInput(ctx(trades_today=0), state=blocked.state))
    assert not of(BlockEntries, list(next_day.actions))
    assert [(a.severity, a.title) for a in of(RaiseAlert, list(next_day.actions))] == [
        (Severity.INFO, "Trade limit reset: a new trading day")
    ]


# -- exits -------------------------------------------------------------------------


def test_stop_loss_hit_by_the_bar_low_exits_the_whole_position() -> None:
    inp = MonitorInput(ctx(positions=long_a(stop=95.0)), bars={"A": bar(94.9, 101, 99)})
    (exit_,) = of(ExitPosition, MON.evaluate(inp))
    assert (exit_.kind, exit_.side, exit_.qty) == (ExitKind.STOP_LOSS, Side.SELL, 10)


def test_a_bar_older_than_the_position_does_not_trigger_its_stop() -> None:
    old = bar(90, 101, 99, ts=OPENED - 1)
    inp = MonitorInput(ctx(positions=long_a(stop=95.0), last_prices={"A": 99.0}), bars={"A": old})
    assert not of(ExitPosition, MON.evaluate(inp))


def test_take_profit() -> None:
    inp = MonitorInput(ctx(positions=long_a(target=110.0)), bars={"A": bar(99, 110, 109)})
    assert [a.kind for a in of(ExitPosition, MON.evaluate(inp))] == [ExitKind.TAKE_PROFIT]


def test_no_second_exit_while_one_is_working() -> None:
    working = Order("x", "A", Side.SELL, 10, OrderType.MARKET, Purpose.EXIT, OrderStatus.ACCEPTED)
    c = ctx(positions=long_a(stop=95.0), open_orders=[working])
    assert not of(ExitPosition, MON.evaluate(MonitorInput(c, bars={"A": bar(90, 101, 91)})))


def test_trailing_stop_follows_the_best_price_across_steps() -> None:
    # ATR 1, 3 ATRs: the high of 110 puts the stop at 107.
    first = MON.step(
        MonitorInput(
            ctx(positions=long_a(), last_prices={"A": 109.0}),
            bars={"A": bar(108, 110, 109)},
            atr={"A": 1.0},
        )
    )
    assert first.state.trails["A"].best == 110 and not first.actions
    later = NOW + 1_000
    above = MonitorInput(
        ctx(now=later, positions=long_a(), last_prices={"A": 107.1}),
        bars={"A": bar(107.1, 107.5, 107.1, ts=later)},
        atr={"A": 1.0},
        state=first.state,
    )
    assert not of(ExitPosition, MON.evaluate(above))
    at = MonitorInput(
        ctx(now=later, positions=long_a(), last_prices={"A": 107.0}),
        bars={"A": bar(107.0, 107.5, 107.0, ts=later)},
        atr={"A": 1.0},
        state=first.state,
    )
    assert [a.kind for a in of(ExitPosition, MON.evaluate(at))] == [ExitKind.TRAILING_STOP]


def resting_stop(stop: float) -> Order:
    return Order(
        "e-S",
        "A",
        Side.SELL,
        10,
        OrderType.STOP,
        Purpose.EXIT,
        OrderStatus.ACCEPTED,
        stop_price=stop,
        parent_id="e",
        oco_group="e",
    )


def test_a_trail_past_the_resting_stop_moves_the_order_instead_of_exiting() -> None:
    # ATR 1, 3 ATRs: the high of 110 puts the trail at 107, above the resting 95.
    c = ctx(positions=long_a(stop=95.0), last_prices={"A": 109.0}, open_orders=[resting_stop(95)])
    actions = MON.evaluate(MonitorInput(c, bars={"A": bar(108, 110, 109)}, atr={"A": 1.0}))
    assert [(a.client_order_id, a.stop) for a in of(MoveStop, actions)] == [("e-S", 107.0)]
    assert not of(ExitPosition, actions)


def test_a_resting_stop_is_never_moved_against_the_position() -> None:
    c = ctx(positions=long_a(stop=108.0), last_prices={"A": 109.0}, open_orders=[resting_stop(108)])
    actions = MON.evaluate(MonitorInput(c, bars={"A": bar(108, 110, 109)}, atr={"A": 1.0}))
    assert not of(MoveStop, actions)


def test_a_bar_through_a_resting_stop_is_left_to_the_broker() -> None:
    c = ctx(positions=long_a(stop=95.0), open_orders=[resting_stop(95)])
    assert not of(ExitPosition, MON.evaluate(MonitorInput(c, bars={"A": bar(90, 101, 91)})))


def test_a_time_stop_still_exits_a_position_with_a_resting_pair() -> None:
    monitor = Monitor(RiskSettings(time_stop_minutes=30))
    c = ctx(positions=long_a(stop=95.0), open_orders=[resting_stop(95)])
    assert [a.kind for a in of(ExitPosition, monitor.evaluate(MonitorInput(c)))] == [
        ExitKind.TIME_STOP
    ]


def test_a_new_position_starts_a_new_trail() -> None:
    stale_trail = MON.step(
        MonitorInput(ctx(positions=long_a(), last_prices={"A": 150.0}), atr={"A": 1.0})
    ).state
    new = {"A": Position("A", 10, 100.0, opened_at=NOW - 10)}
    result = MON.step(MonitorInput(ctx(positions=new), atr={"A": 1.0}, state=stale_trail))
    assert result.state.trails["A"].best == 100.0


def test_a_trail_counts_only_finite_prices_and_bars_newer_than_the_position() -> None:
    old = bar(90, 130, 99, ts=OPENED - 1)
    first = MON.step(
        MonitorInput(ctx(positions=long_a(), last_prices={"A": 105.0}), bars={"A": old})
    )
    assert first.state.trails["A"].best == 105.0  # the old bar's 130 came before the entry
    broken = bar(float("nan"), float("inf"), 99)
    later = ctx(positions=long_a(), last_prices={"A": float("nan")})
    again = MON.step(MonitorInput(later, bars={"A": broken}, state=first.state))
    assert again.state.trails == first.state.trails
    higher = MON.step(MonitorInput(later, bars={"A": bar(99, 106, 99)}, state=again.state))
    assert higher.state.trails["A"].best == 106.0


def test_a_short_trail_keeps_its_lowest_price() -> None:
    short = {"A": Position("A", -10, 100.0, opened_at=OPENED)}
    first = MON.step(MonitorInput(ctx(positions=short, last_prices={"A": 95.0})))
    higher = MON.step(
        MonitorInput(ctx(positions=short, last_prices={"A": 97.0}), state=first.state)
    )
    assert (higher.state.trails["A"].best, higher.state.trails["A"].long) == (95.0, False)


def test_only_open_orders_count_as_working() -> None:
    def order(status: OrderStatus, oco: str | None, kind: OrderType = OrderType.MARKET) -> Order:
        return Order("x", "A", Side.SELL, 10, kind, Purpose.EXIT, status, oco_group=oco)

    hit = {"A": bar(90, 101, 91)}
    for done in (OrderStatus.CANCELED, OrderStatus.FILLED, OrderStatus.REJECTED):
        c = ctx(positions=long_a(stop=95.0), open_orders=[order(done, None), order(done, "e")])
        assert of(ExitPosition, MON.evaluate(MonitorInput(c, bars=hit))), done
    # A resting target is no exit the engine chose: the stop is left to the broker,
    # but the target is not a stop to trail.
    target = order(OrderStatus.ACCEPTED, "e", OrderType.LIMIT)
    c = ctx(positions=long_a(stop=95.0), last_prices={"A": 109.0}, open_orders=[target])
    actions = MON.evaluate(MonitorInput(c, bars={"A": bar(108, 110, 109)}, atr={"A": 1.0}))
    assert not of(ExitPosition, actions) and not of(MoveStop, actions)


def test_percent_trailing_stop_of_a_short() -> None:
    monitor = Monitor(RiskSettings(trailing_stop="percent", trail_percent=0.05))
    short = {"A": Position("A", -10, 100.0, opened_at=OPENED)}
    inp = MonitorInput(
        ctx(positions=short, last_prices={"A": 94.5}), bars={"A": bar(90, 94.5, 94.5)}
    )
    # best 90, stop 94.5: touched by the high.
    assert [a.kind for a in of(ExitPosition, monitor.evaluate(inp))] == [ExitKind.TRAILING_STOP]


@pytest.mark.parametrize(("held_min", "exits"), [(29.9, False), (30.0, True)])
def test_time_stop(held_min: float, exits: bool) -> None:
    monitor = Monitor(RiskSettings(time_stop_minutes=30))
    pos = {"A": Position("A", 10, 100.0, opened_at=NOW - int(held_min * 60_000))}
    assert bool(of(ExitPosition, monitor.evaluate(MonitorInput(ctx(positions=pos))))) is exits


@pytest.mark.parametrize(("last", "exits"), [(70.0, False), (69.9, True)])
def test_position_losing_more_than_its_share_of_equity(last: float, exits: bool) -> None:
    # 100 units from 100: a loss of 3,000 is 3% of 100,000.
    c = ctx(positions=long_a(qty=100), last_prices={"A": last})
    monitor = Monitor(RiskSettings(trailing_stop="off"))
    assert bool(of(ExitPosition, monitor.evaluate(MonitorInput(c)))) is exits


def test_no_exits_while_halted_the_flatten_owns_the_book() -> None:
    c = ctx(positions=long_a(stop=95.0), trading_state=TradingState.HALTED)
    assert not of(ExitPosition, MON.evaluate(MonitorInput(c, bars={"A": bar(90, 101, 91)})))


# -- health ------------------------------------------------------------------------


def test_stale_data_blocks_entries_on_that_symbol_and_alerts_once() -> None:
    bars = {"A": bar(99, 101, 100, ts=NOW - 5_001), "B": bar(99, 101, 100, ts=NOW, symbol="B")}
    first = MON.step(MonitorInput(ctx(), bars=bars, bar_interval_ms=1_000))
    (block,) = of(BlockEntries, list(first.actions))
    assert block.symbols == frozenset({"A"})
    assert [a.dedupe_key for a in of(RaiseAlert, list(first.actions))] == ["stale-data"]
    again = MON.step(MonitorInput(ctx(), bars=bars, bar_interval_ms=1_000, state=first.state))
    assert of(BlockEntries, list(again.actions)) and not of(RaiseAlert, list(again.actions))


def test_data_at_the_stale_limit_is_still_fresh() -> None:
    bars = {"A": bar(99, 101, 100, ts=NOW - 5_000)}
    assert not MON.evaluate(MonitorInput(ctx(), bars=bars, bar_interval_ms=1_000))


def test_recovery_raises_an_info_note_and_lifts_the_block() -> None:
    state = MonitorState(conditions=frozenset({"stale-data"}))
    actions = MON.evaluate(MonitorInput(ctx(), bars={"A": bar(99, 101, 100, ts=NOW)}, state=state))
    assert [(a.severity, a.dedupe_key) for a in actions] == [(Severity.INFO, "stale-data")]


def test_disconnect_blocks_entries_and_alerts() -> None:
    actions = MON.evaluate(MonitorInput(ctx(broker_connected=False)))
    assert of(BlockEntries, actions)
    assert [(a.severity, a.dedupe_key) for a in of(RaiseAlert, actions)] == [
        (Severity.HIGH, "broker-disconnected")
    ]


@pytest.mark.parametrize(("down_s", "exits"), [(59, False), (60, True)])
def test_disconnect_flattens_after_the_configured_time(down_s: int, exits: bool) -> None:
    monitor = Monitor(RiskSettings(disconnect_flatten_seconds=60, trailing_stop="off"))
    state = MonitorState(disconnected_since=NOW - down_s * 1_000)
    c = ctx(broker_connected=False, positions=long_a())
    actions = monitor.evaluate(MonitorInput(c, state=state))
    assert [a.kind for a in of(ExitPosition, actions)] == ([ExitKind.DISCONNECTED] if exits else [])


def test_disconnect_remembers_when_it_started() -> None:
    first = MON.step(MonitorInput(ctx(broker_connected=False)))
    later = MON.step(MonitorInput(ctx(now=NOW + 5_000, broker_connected=False), state=first.state))
    assert later.state.disconnected_since == NOW


def test_a_broker_outage_is_timed_on_the_wall_clock_not_the_market() -> None:
    first = MON.step(MonitorInput(ctx(now=1_000, broker_connected=False), wall_now=NOW))
    assert first.state.disconnected_since == NOW


@pytest.mark.parametrize(("silent_ms", "fires"), [(9_999, False), (10_000, True)])
def test_dead_mans_switch(silent_ms: int, fires: bool) -> None:
    inp = MonitorInput(ctx(), cycle_interval_ms=1_000, last_cycle_at=NOW - silent_ms)
    alerts = [(a.severity, a.dedupe_key) for a in of(RaiseAlert, MON.evaluate(inp))]
    assert alerts == ([(Severity.CRITICAL, "deadman")] if fires else [])


def test_dead_mans_switch_reads_the_wall_clock_while_a_replay_runs_in_2006() -> None:
    replay = ctx(now=1_140_000_000_000)  # market time: February 2006
    inp = MonitorInput(replay, cycle_interval_ms=1_000, last_cycle_at=NOW - 500, wall_now=NOW)
    assert not of(RaiseAlert, MON.evaluate(inp))


def test_dead_mans_switch_counts_from_start_before_the_first_cycle() -> None:
    inp = MonitorInput(ctx(), cycle_interval_ms=1_000, started_at=NOW - 10_000)
    assert of(RaiseAlert, MON.evaluate(inp))


# -- usage -------------------------------------------------------------------------


def test_usage_reports_each_limit_against_the_context() -> None:
    c = ctx(equity=97_000.0, day_start_equity=100_000.0, positions=long_a(qty=100), trades_today=3)
    figures = {u.name: u for u in usage(c, RiskSettings())}
    assert (figures["daily_loss"].value, figures["daily_loss"].limit) == (3_000.0, 6_000.0)
    assert figures["daily_loss"].share == pytest.approx(0.5)
    assert (figures["trades_per_day"].value, figures["open_positions"].value) == (3, 1)
    assert figures["position_notional"].value == 10_000.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_writer(tmp_path / "usage.db")
    yield database
    database.conn.close()


def test_write_usage_overwrites_one_row_per_limit(db: Database) -> None:
    write_usage(db, usage(ctx(trades_today=1), RiskSettings()), NOW)
    write_usage(db, usage(ctx(trades_today=2), RiskSettings()), NOW + 1_000)
    rows = db.conn.execute(
        "SELECT value, updated_at FROM risk_usage WHERE name = 'trades_per_day'"
    ).fetchall()
    assert rows == [(2.0, NOW + 1_000)]


# -- staleness on the venue's calendar -----------------------------------------------

XNYS_MONITOR = Monitor(RiskSettings(), MarketCalendar({"A": "XNYS"}))


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def stale_on_xnys(last: str, now: str, bar_ms: int = 60_000) -> set[str]:
    inp = MonitorInput(
        ctx(now=utc(now)), bars={"A": bar(99, 101, 100, ts=utc(last))}, bar_interval_ms=bar_ms
    )
    return set(XNYS_MONITOR.stale_symbols(inp))


def test_a_weekend_is_not_stale_data() -> None:
    # Friday's last minute bar, Monday two minutes after the open.
    assert stale_on_xnys("2024-07-05T19:59", "2024-07-08T13:32") == set()


def test_missing_bars_inside_the_session_are_stale() -> None:
    assert stale_on_xnys("2024-07-08T13:31", "2024-07-08T13:40") == {"A"}


def test_a_holiday_is_not_stale_data_for_daily_bars() -> None:
    # Thanksgiving 2024: Wednesday's daily bar, then Friday.
    assert stale_on_xnys("2024-11-27T00:00", "2024-11-29T00:00", bar_ms=86_400_000) == set()


def test_a_week_without_daily_bars_is_stale() -> None:
    assert stale_on_xnys("2024-11-04T00:00", "2024-11-12T00:00", bar_ms=86_400_000) == {"A"}


@pytest.mark.parametrize(
    "broken",
    [
        ({"equity": float("nan")}, "equity is nan"),
        ({"day_start_equity": float("nan")}, "day-start equity is nan"),
        ({"peak_equity": float("inf")}, "peak equity is inf"),
        ({"peak_equity": float("-inf"), "day_start_equity": 1e300}, "peak equity is -inf"),
    ],
    ids=["equity", "day_start", "peak", "peak_negative"],
)
def test_a_non_finite_equity_is_a_fault_that_alerts_and_pauses(
    broken: tuple[dict, str],
) -> None:
    figures, named = broken
    actions = MON.evaluate(MonitorInput(ctx(**figures)))
    assert [p.reason for p in of(Pause, actions)] == [
        f"equity fault: {named}; the loss limits cannot be checked"
    ]
    assert [a.severity for a in of(RaiseAlert, actions)] == [Severity.CRITICAL]
    assert not of(KillSwitch, actions)  # the limits cannot be judged on such figures


def test_finite_figures_are_no_fault() -> None:
    fine = ctx(day_start_equity=100_000.0, peak_equity=100_000.0)
    assert not of(Pause, MON.evaluate(MonitorInput(fine)))
