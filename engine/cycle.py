"""The trading cycle: feed -> features -> regime -> signal -> risk -> execution ->
portfolio -> state (docs/ARCHITECTURE.md, The cycle).

`Trader` holds the engine's working state in memory and writes every fact through
the single writer connection.

Two clocks. Market time (`market_now`) is the time of the bars being processed,
taken from the feed: every trading rule (daily limits, cooldowns, streaks,
staleness, time stops, order expiry, blackouts, market hours) and every stamp on
an order, fill, signal or equity mark uses it, so a replay of 2006 trades in
2006. The wall clock (`clock`) is for liveness only: cycles, heartbeat, alerts,
commands and state changes. It is driven by the runner's jobs (cycle, commands,
monitor, heartbeat) on one executor thread, or stepped directly by a backtest or a
test with a simulated clock: one code path for both.

Exceptions inside a cycle are caught at the cycle boundary, recorded in
`cycles.error` and as an alert. Repeated failures raise the severity and, past
`engine.failure_pause_after`, pause trading. A `BrokerFatal` or a corrupt database
halts.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlite_utils import Database

from engine.alerts.alerts import Alerts
from engine.config import Settings
from engine.decide.exits import protective_exit
from engine.decide.regime import RegimeCall, RegimeParams, classify, combine
from engine.decide.sizing import size
from engine.decide.strategy import RegimeStrategy, Strategy, StrategyInput, StrategyParams
from engine.domain import (
    Bar,
    ExitReason,
    Intent,
    Order,
    OrderType,
    Purpose,
    Severity,
    Side,
    TradingState,
    Verdict,
)
from engine.execution.account import fix_starting_cash, movement_problem, record_movement
from engine.execution.brokers.base import Broker, BrokerFatal, BrokerUnavailable
from engine.execution.oms import Oms
from engine.execution.portfolio import Portfolio, write_position, write_snapshot
from engine.market.calendar import TradingDay, symbol_exchanges
from engine.market.feeds import BarValidator, Feed
from engine.market.indicators import IncrementalIndicators, Snapshot
from engine.ml.features import FloatArray, LiveFeatures
from engine.ml.service import CycleModel, Prediction
from engine.process import control
from engine.risk import RiskContext, RiskGate
from engine.risk.daily import DailyFacts
from engine.risk.monitor import (
    BlockEntries,
    ExitPosition,
    KillSwitch,
    Monitor,
    MonitorInput,
    MonitorState,
    MoveStop,
    Pause,
    RaiseAlert,
)
from engine.risk.usage import apply_migrations, usage, write_usage
from store.db import is_store_full
from store.orders import insert_signal

log = logging.getLogger(__name__)

ENTRY_RETRY_MS = 60_000
KELLY_HISTORY = 500  # round trips Kelly sizing estimates its edge from
DRIFT_CHECK_MS = 60_000
ALL_SYMBOLS = "*"
# Denials that hold for the rest of the trading day, for every symbol.
ACCOUNT_DAILY_CHECKS = frozenset({"trades_per_day", "daily_loss", "consecutive_losses"})
RETURNS_WINDOW = 60  # bars of returns kept per symbol for the correlation check
STAGES = ("feed", "features", "regime", "signal", "risk", "execution", "portfolio", "state")


@dataclass
class CycleResult:
    cycle_id: int
    started_at: int
    duration_ms: float
    timings: dict[str, float] = field(default_factory=dict)
    bars: int = 0
    rejected_bars: int = 0
    intents: int = 0
    denied: int = 0
    orders: int = 0
    fills: int = 0
    error: str | None = None


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self._last) * 1000
        self._last = now


def store_bars(db: Database, bars: list[Bar]) -> None:
    """Insert bars (a bar already stored is kept as it was: the feed never rewrites)."""
    db.conn.executemany(
        "INSERT OR IGNORE INTO bars (symbol, ts, open, high, low, close, volume, true_regime)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                b.symbol,
                b.ts,
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.true_regime.value if b.true_regime else None,
            )
            for b in bars
        ],
    )


def default_strategy(settings: Settings) -> Strategy:
    """The regime strategy, sized inside the risk limits so the gate rarely has to
    deny its entries: half the allowed risk per trade, 90% of the notional cap."""
    risk = settings.risk
    return RegimeStrategy(
        StrategyParams(
            risk_per_trade=min(0.01, risk.risk_per_trade / 2),
            reward_risk=max(2.5, risk.min_reward_risk * 1.1),
            max_notional_fraction=risk.max_position_notional * 0.9,
        )
    )


def _is_fatal(exc: BaseException) -> bool:
    if isinstance(exc, BrokerFatal):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class Trader:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        feed: Feed,
        broker: Broker,
        clock: Callable[[], int],
        *,
        strategy: Strategy | None = None,
        alerts: Alerts | None = None,
        model: CycleModel | None = None,
        actor: str = "engine",
        record_usage: bool = True,
    ) -> None:
        """`record_usage` False: no Risk-page gauges (a backtest has no page to show them)."""
        self.settings = settings
        self.record_usage = record_usage
        self.db = db
        self.feed = feed
        self.broker = broker
        self.clock = clock
        self.actor = actor
        self.alerts = alerts or Alerts(db, clock)
        self.strategy: Strategy = strategy or default_strategy(settings)
        exchanges = symbol_exchanges(
            settings.risk.exchanges,
            feed.symbols,
            settings.engine.sim_calendar if settings.engine.feed == "sim" else None,
        )
        # from_settings reads the events file now: a bad row stops the start.
        self.gate = RiskGate.from_settings(settings.risk, exchanges)
        self.trading_day = TradingDay.for_symbols(
            exchanges, feed.symbols, settings.risk.day_boundary_minutes
        )
        self.market_now = clock()  # until the first bar says otherwise
        self.regime_params = RegimeParams.for_bar(settings.engine.bar_ms)
        self.monitor = Monitor(settings.risk, self.gate.calendar)
        self.monitor_state = MonitorState()
        self.entry_blocks: tuple[BlockEntries, ...] = ()
        self.store_block = ""  # set by the runner while the store cannot take writes
        self.started_at = clock()
        self.last_cycle_at: int | None = None
        self.validator = BarValidator(
            max_jump=settings.engine.max_jump, bar_ms=settings.engine.bar_ms, exchanges=exchanges
        )
        starting_cash = fix_starting_cash(db, settings.engine.starting_cash, clock())
        self.portfolio = Portfolio.load(db, starting_cash)
        # The gate's view of today, kept in memory and followed from the OMS's events.
        self.daily = DailyFacts(db.conn, self.market_now, self.trading_day)
        self.oms = Oms(
            db,
            broker,
            self.portfolio,
            self._market_clock,
            order_timeout_ms=int(settings.engine.order_timeout_seconds * 1000),
            day_end=self.trading_day.next_start,
        )
        self.model = model
        self.oms.listen(self.daily)
        self.live_features: dict[str, LiveFeatures] = {}
        self.predictions: dict[str, Prediction] = {}
        self._next_drift_check = 0
        self.indicators: dict[str, IncrementalIndicators] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.regimes: dict[str, RegimeCall] = {}
        self.rules_regimes: dict[str, RegimeCall] = {}
        self.last_bar: dict[str, Bar] = {}
        self.returns: dict[str, deque[float]] = {}
        self.locked_until: dict[str, int] = {}
        self.state, self.state_reason = control.read_state(db)
        self.flattening = self.state is TradingState.HALTED
        self.flatten_reason = ExitReason.EMERGENCY_STOP
        self.consecutive_failures = 0
        self.cycles_run = 0
        self._last_cycle_id = 0

    # ----------------------------------------------------------------- start-up

    def start(self, history: Mapping[str, list[Bar]]) -> None:
        """Warm indicators and the validator from stored or fresh history, then
        reconcile open orders with the broker."""
        for symbol in self.feed.symbols:
            bars = history.get(symbol, [])
            ind, features = IncrementalIndicators(), LiveFeatures()
            snap = None
            for bar in bars:
                snap = ind.update(bar.high, bar.low, bar.close)
                features.update(bar, snap)
            self.indicators[symbol] = ind
            self.live_features[symbol] = features
            if snap is not None:
                self.snapshots[symbol] = snap
                self.regimes[symbol] = self.rules_regimes[symbol] = classify(
                    snap, None, self.regime_params
                )
            if bars:
                self.last_bar[symbol] = bars[-1]
                self.market_now = max(self.market_now, bars[-1].ts)
        if self.last_bar:
            self.market_now = max(b.ts for b in self.last_bar.values())
        self.daily.reload(self.market_now)  # today is the market's, known from the bars
        self.validator.seed(b for bars in history.values() for b in bars)
        for bar in self.last_bar.values():
            self.broker.on_bar(bar)  # the broker learns prices; resting orders match on new bars
        self.oms.reconcile()
        apply_migrations(self.db)
        self.db.conn.commit()
        self.protect_positions()

    def protect_positions(self) -> int:
        """Put a resting stop and target in front of every held position that has
        levels but lost its orders (they never reached the broker before a restart,
        or the broker dropped them); returns how many positions were protected."""
        if self.state is TradingState.HALTED:
            return 0  # the emergency stop's flatten owns the book
        protected = 0
        for position in self.portfolio.positions.values():
            if self.oms.protect(position):
                protected += 1
        return protected

    # -------------------------------------------------------------------- clocks

    def _market_clock(self) -> int:
        return self.market_now

    def advance_market(self, wall: int, bars: Sequence[Bar] = ()) -> int:
        """Move market time to the newest of: the bars just accepted, the feed's own
        clock (a live feed's market moves with the world). It never goes back."""
        feed_now = self.feed.market_time(wall)
        newest = max((b.ts for b in bars), default=self.market_now)
        self.market_now = max(self.market_now, newest, feed_now or self.market_now)
        return self.market_now

    # -------------------------------------------------------------------- cycle

    def cycle(self) -> CycleResult:
        started = self.clock()
        watch = _Stopwatch()
        result = CycleResult(0, started, 0.0)
        try:
            self._run_stages(started, watch, result)
            self.consecutive_failures = 0
        except Exception as exc:
            self.db.conn.rollback()
            if is_store_full(exc):
                raise  # not this cycle's fault: the runner's store guard handles it once
            result.error = f"{type(exc).__name__}: {exc}"
            log.exception("cycle failed")
            self._on_cycle_failure(exc, result.error)
        watch.lap("state")
        result.timings = watch.timings
        result.duration_ms = sum(watch.timings.values())
        result.cycle_id = self._record_cycle(result)
        self.db.conn.commit()
        self.cycles_run += 1
        return result

    def _run_stages(self, wall: int, watch: _Stopwatch, result: CycleResult) -> None:
        cycle_id = self._next_cycle_id()
        self.oms.retry_unsent(int(self.settings.engine.order_timeout_seconds * 1000))
        bars = self._ingest(self.feed.next_bars(wall), result)
        now = self.advance_market(wall, bars)
        watch.lap("feed")

        for bar in bars:
            result.fills += sum(1 for r in self.oms.on_bar(bar) if r.fill is not None)
        watch.lap("execution")

        snaps: dict[str, Snapshot] = {}
        rows: dict[str, FloatArray] = {}
        for bar in bars:
            snap = self.indicators.setdefault(bar.symbol, IncrementalIndicators()).update(
                bar.high, bar.low, bar.close
            )
            snaps[bar.symbol] = snap
            rows[bar.symbol] = self.live_features.setdefault(bar.symbol, LiveFeatures()).update(
                bar, snap
            )
        self.snapshots.update(snaps)
        for symbol, snap in snaps.items():
            if math.isfinite(snap.ret_1):
                self.returns.setdefault(symbol, deque(maxlen=RETURNS_WINDOW)).append(snap.ret_1)
        watch.lap("features")

        if self.model is not None:
            self.model.sync()  # one small query: picks up a promotion or rollback
        predictions = self.model.predict_batch(rows) if self.model is not None else {}
        regime_rows = []
        for bar in bars:
            rules = classify(
                snaps[bar.symbol], self.rules_regimes.get(bar.symbol), self.regime_params
            )
            self.rules_regimes[bar.symbol] = rules
            call = rules
            prediction = predictions.get(bar.symbol)
            if prediction is not None:
                self.predictions[bar.symbol] = prediction
                call = combine(rules, prediction.regime_call, self.settings.ml.override_confidence)
            else:
                self.predictions.pop(bar.symbol, None)
            self.regimes[bar.symbol] = call
            regime_rows.append(
                (
                    cycle_id,
                    bar.symbol,
                    bar.ts,
                    call.regime.value,
                    call.confidence,
                    call.source.value,
                    call.model_version,
                    rules.regime.value,
                    json.dumps(call.features),
                )
            )
        if self.model is not None:
            self.model.record_batch(bars, predictions, rows)
        self.db.conn.executemany(
            "INSERT INTO regimes (cycle_id, symbol, ts, regime, confidence, source,"
            " model_version, rules_regime, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            regime_rows,
        )
        # Market data and regimes are one transaction; orders are committed one by
        # one from here on, because each must be durable before the broker sees it.
        self.db.conn.commit()
        watch.lap("regime")

        intents = self._protective_exits(bars)
        equity = self.portfolio.mark(self._prices(), now).equity
        for bar in bars:
            if any(i.symbol == bar.symbol for i in intents):
                continue  # an exit this bar; decide entries on the next one
            if self._entries_locked(bar.symbol, now):
                continue
            prediction = self.predictions.get(bar.symbol)
            intents.extend(
                self._decide(
                    StrategyInput(
                        symbol=bar.symbol,
                        now=now,
                        snap=snaps[bar.symbol],
                        regime=self.regimes[bar.symbol],
                        position=self.portfolio.position(bar.symbol),
                        equity=equity,
                        model_proba=prediction.proba_up if prediction else None,
                        model_version=prediction.version if prediction else None,
                    )
                )
            )
        intents = [self._sized(i, equity) for i in intents]
        result.intents = len(intents)
        watch.lap("signal")

        for intent in intents:
            order = self.submit(intent, cycle_id=cycle_id, watch=watch)
            if order is None:
                result.denied += 1
            else:
                result.orders += 1
        self.oms.expire(now)
        if self.flattening:
            self.flatten_step()
        watch.lap("execution")

        self._mark(now)
        watch.lap("portfolio")

    # ---------------------------------------------------------------- stages

    def _ingest(self, bars: list[Bar], result: CycleResult) -> list[Bar]:
        accepted: list[Bar] = []
        for bar in bars:
            rejection = self.validator.check(bar)
            if rejection is not None:
                result.rejected_bars += 1
                where = f" ({bar.origin})" if bar.origin else ""
                self.alerts.raise_(
                    Severity.WARNING,
                    "feed",
                    f"Bad bar rejected for {bar.symbol}",
                    f"{bar.symbol} bar at {bar.ts}{where}: {rejection.reason}",
                    dedupe_key=f"bad-bar:{bar.symbol}",
                )
                continue
            accepted.append(bar)
            self.last_bar[bar.symbol] = bar
        store_bars(self.db, accepted)
        result.bars = len(accepted)
        return accepted

    def _protective_exits(self, bars: list[Bar]) -> list[Intent]:
        intents = []
        covered = {o.symbol for o in self.oms.open_orders() if o.purpose.reduces_exposure}
        for bar in bars:
            position = self.portfolio.position(bar.symbol)
            if position is None or position.qty == 0 or bar.symbol in covered:
                continue
            intent = protective_exit(position, bar.high, bar.low, bar.close)
            if intent is not None:
                intents.append(intent)
        return intents

    def _decide(self, ctx: StrategyInput) -> list[Intent]:
        """The strategy's intents for one symbol. A strategy that raises loses that
        symbol's decision for this bar, with an alert; the cycle and the other
        symbols go on."""
        try:
            return self.strategy.decide(ctx)
        except Exception as exc:
            log.warning("strategy %s failed on %s: %s", self.strategy.name, ctx.symbol, exc)
            self.alerts.raise_(
                Severity.HIGH,
                "strategy",
                f"Strategy {self.strategy.name} failed on {ctx.symbol}",
                f"{type(exc).__name__}: {exc}",
                dedupe_key=f"strategy-failed:{ctx.symbol}",
            )
            return []

    def _prices(self) -> dict[str, float]:
        return {s: b.close for s, b in self.last_bar.items()}

    def _mark(self, now: int) -> None:
        snapshot = self.portfolio.mark(self._prices(), now)
        write_snapshot(self.db, self.portfolio, snapshot)
        self.daily.marked(snapshot)

    # ----------------------------------------------------------- order path

    def effective_state(self) -> TradingState:
        """The trading state, made stricter by a stop or pause still waiting in the
        queue, so an operator's stop takes effect even in the middle of a cycle."""
        if self.state is TradingState.HALTED:
            return self.state
        row = self.db.conn.execute(
            "SELECT kind FROM commands WHERE status = 'pending'"
            " AND kind IN ('emergency_stop', 'pause') ORDER BY kind LIMIT 1"
        ).fetchone()
        if row is None:
            return self.state
        return TradingState.HALTED if row[0] == "emergency_stop" else TradingState.PAUSED

    def risk_context(self, now: int) -> RiskContext:
        facts = self.daily.facts(now)
        prices = self._prices()
        snapshot = self.portfolio.mark(prices, now)
        return facts.context(
            now=now,
            equity=snapshot.equity,
            cash=snapshot.cash,
            positions=self.portfolio.positions,
            last_prices=prices,
            open_orders=self.oms.open_orders(),
            atr_pct={s: snap.atr_pct for s, snap in self.snapshots.items()},
            returns={s: tuple(r) for s, r in self.returns.items()},
            broker_connected=self.broker.connected,
            trading_state=self.effective_state(),
            stale_symbols=frozenset(s for block in self.entry_blocks for s in block.symbols),
            entries_blocked="; ".join(
                [b.reason for b in self.entry_blocks if not b.symbols]
                + ([self.store_block] if self.store_block else [])
            ),
        )

    def submit(
        self,
        intent: Intent,
        *,
        cycle_id: int | None = None,
        watch: _Stopwatch | None = None,
        ctx: RiskContext | None = None,
    ) -> Order | None:
        """Gate the intent, record the verdict, and send it if allowed."""
        now = self.market_now
        ref = self.last_bar.get(intent.symbol)
        verdict: Verdict
        if ref is None:
            verdict = Verdict.deny("market_data", f"no price for {intent.symbol}")
        else:
            verdict = self.gate.check(intent, ctx or self.risk_context(now))
        if watch:
            watch.lap("risk")
        signal = (
            cycle_id,
            now,
            intent.symbol,
            intent.side.value,
            intent.qty,
            intent.purpose.value,
            intent.strength,
            intent.model_version,
            "allowed" if verdict.allowed else "denied",
            verdict.check,
            verdict.reason if not verdict.allowed else intent.reason,
        )
        if not verdict.allowed or ref is None:
            insert_signal(self.db.conn, signal, None)
            if not intent.purpose.reduces_exposure:
                self._lock_entries(intent.symbol, verdict, now)
            log.info(
                "denied %s %s %s: %s", intent.side, intent.symbol, verdict.check, verdict.reason
            )
            return None
        self.db.conn.commit()  # what the cycle wrote before: the OMS needs no open transaction
        try:
            # The signal row is written in the order's own transaction.
            order = self.oms.submit(intent, ref.close, signal=signal)
        except BrokerUnavailable as exc:
            self.alerts.raise_(
                Severity.HIGH,
                "broker",
                "Broker unavailable",
                f"{intent.side} {intent.qty:g} {intent.symbol} not sent: {exc}",
                dedupe_key="broker-unavailable",
            )
            return None
        return order

    def _sized(self, intent: Intent, equity: float) -> Intent:
        """Entries are sized by the risk layer's configured method (fixed fractional,
        volatility or Kelly); the strategy chose direction, stop and target."""
        if intent.purpose is not Purpose.ENTRY or intent.stop_loss is None:
            return intent
        risk = self.settings.risk
        bar = self.last_bar.get(intent.symbol)
        if bar is None:
            return intent
        snap = self.snapshots.get(intent.symbol)
        pnls: list[float] = []
        if risk.sizing == "kelly":
            rows = self.db.conn.execute(
                "SELECT pnl FROM trades ORDER BY id DESC LIMIT ?", (KELLY_HISTORY,)
            ).fetchall()
            pnls = [float(r[0]) for r in rows]
        sized = size(
            risk,
            equity=equity,
            entry=bar.close,
            stop=intent.stop_loss,
            atr=snap.atr if snap is not None and math.isfinite(snap.atr) else None,
            pnls=pnls,
            symbol=intent.symbol,
        )
        return replace(intent, qty=sized.qty, sizing=sized.details)

    def _lock_entries(self, symbol: str, verdict: Verdict, now: int) -> None:
        """After a denied entry, don't ask the strategy again until it could pass:
        the verdict's own lock, the next trading day for daily account limits, else
        a market minute. Every denial is still stored; this only stops the same one
        being stored every cycle."""
        if verdict.check in ACCOUNT_DAILY_CHECKS:
            self.locked_until[ALL_SYMBOLS] = verdict.until or self.trading_day.next_start(now)
        else:
            self.locked_until[symbol] = verdict.until or now + ENTRY_RETRY_MS

    def _entries_locked(self, symbol: str, now: int) -> bool:
        if self.portfolio.position(symbol) is not None:
            return False  # the strategy must still be asked about exits
        if self.model is not None and self.model.loading:
            return True  # the champion the strategy trades on is still loading
        until = max(self.locked_until.get(symbol, 0), self.locked_until.get(ALL_SYMBOLS, 0))
        return until > now

    # ------------------------------------------------------ cash movements

    def move_cash(self, amount: float, reason: str, actor: str) -> str:
        """A deposit (> 0) or withdrawal (< 0): recorded and audited, applied to the
        portfolio and the paper account, left out of P&L and drawdown. Raises
        ValueError with the reason when it cannot be made. Stamped on market time,
        the clock of the equity marks it must be set against."""
        now = self.market_now
        equity = self.portfolio.mark(self._prices(), now).equity
        problem = movement_problem(amount, reason, equity)
        if problem is not None:
            raise ValueError(problem)
        transfer = getattr(self.broker, "transfer", None)
        with self.db.atomic():
            record_movement(self.db, amount, reason, actor, now)
            if transfer is not None:
                transfer(amount, now)
        self.daily.moved(amount, now)
        self.portfolio.move_cash(amount)
        self._mark(now)
        self.db.conn.commit()
        kind = "deposit" if amount > 0 else "withdrawal"
        return f"{kind} of {abs(amount):,.2f} recorded; cash {self.portfolio.cash:,.2f}"

    # ------------------------------------------------------ flatten and stop

    def flatten_step(
        self, symbols: set[str] | None = None, reason: ExitReason = ExitReason.FLATTEN
    ) -> int:
        """Send a closing market order for every open position not already being
        closed; returns how many were sent."""
        working = {o.symbol for o in self.oms.open_orders() if o.purpose is Purpose.FLATTEN}
        sent = 0
        ctx = self.risk_context(self.market_now)
        for symbol, position in list(self.portfolio.positions.items()):
            if position.qty == 0 or symbol in working:
                continue
            if symbols is not None and symbol not in symbols:
                continue
            intent = Intent(
                symbol=symbol,
                side=Side.SELL if position.qty > 0 else Side.BUY,
                qty=abs(position.qty),
                purpose=Purpose.FLATTEN,
                order_type=OrderType.MARKET,
                reason=str(reason),
                exit_reason=reason,
            )
            if self.submit(intent, ctx=ctx) is not None:
                sent += 1
        return sent

    def is_flat(self, symbols: set[str] | None = None) -> bool:
        return all(
            p.qty == 0
            for s, p in self.portfolio.positions.items()
            if symbols is None or s in symbols
        )

    def set_state(
        self, target: TradingState, reason: str, actor: str, *, confirm: bool = False
    ) -> TradingState:
        previous = control.set_state(self.db, target, reason, actor, self.clock(), confirm=confirm)
        # Limits that count from a state change (the losing streak) count in market time.
        self.db.conn.execute(
            "UPDATE engine SET state_changed_market_at = ? WHERE id = 1", (self.market_now,)
        )
        self.daily.state_changed(target, self.market_now)
        self.state, self.state_reason = target, reason
        if target is not TradingState.HALTED:
            self.flattening = False
        return previous

    def emergency_stop(
        self, actor: str, reason: str, exit_reason: ExitReason = ExitReason.EMERGENCY_STOP
    ) -> str:
        """HALTED, cancel every open order, close every position at market; the
        monitor keeps retrying until flat. Returns a summary."""
        started = time.perf_counter()
        if self.state is not TradingState.HALTED:
            self.set_state(TradingState.HALTED, reason, actor)
        self.db.conn.commit()  # the halt is durable before anything else happens
        canceled = self.oms.cancel_all()
        self.flattening = True
        self.flatten_reason = exit_reason
        sent = self.flatten_step(reason=exit_reason)
        elapsed = (time.perf_counter() - started) * 1000
        summary = f"HALTED; canceled {canceled} orders; sent {sent} closing orders"
        if self.is_flat():
            self.flattening = False
            summary += f"; flat in {elapsed:.0f} ms"
            self.alerts.raise_(
                Severity.CRITICAL,
                "control",
                "Emergency stop: trading halted, book flat",
                f"{reason} (by {actor}); {summary}",
            )
        else:
            summary += "; flattening continues until flat"
            self.alerts.raise_(
                Severity.CRITICAL,
                "control",
                "Emergency stop: trading halted, flattening",
                f"{reason} (by {actor}); {summary}",
                dedupe_key="estop-flattening",
            )
        self.db.conn.commit()
        return summary

    def continue_flattening(self) -> None:
        """Monitor step while HALTED: retry closing orders until the book is flat."""
        if not self.flattening:
            return
        self.flatten_step(reason=self.flatten_reason)
        if self.is_flat():
            self.flattening = False
            self.alerts.raise_(
                Severity.CRITICAL,
                "control",
                "Emergency stop complete: book flat",
                "every position is closed; trading stays HALTED until resumed",
            )
        self.db.conn.commit()

    # -------------------------------------------------------------- monitor

    def monitor_step(self) -> None:
        """Every second, between cycles: protective exits, kill switch, pauses,
        entry blocks and alerts decided by the pure monitor, acted on here. Its rules
        run on market time; the dead-man's switch and the broker's absence on wall time."""
        wall = self.clock()
        now = self.advance_market(wall)
        ctx = self.risk_context(now)
        engine = self.settings.engine
        result = self.monitor.step(
            MonitorInput(
                ctx=ctx,
                bars=dict(self.last_bar),
                atr={s: snap.atr for s, snap in self.snapshots.items()},
                bar_interval_ms=engine.bar_ms,
                cycle_interval_ms=int(max(engine.cycle_period, 0.05) * 1000),
                last_cycle_at=self.last_cycle_at,
                started_at=self.started_at,
                state=self.monitor_state,
                wall_now=wall,
                next_day=self.trading_day.next_start(now),
            )
        )
        self.monitor_state = result.state
        blocks = []
        for action in result.actions:
            if isinstance(action, BlockEntries):
                blocks.append(action)
                if action.until is not None:
                    # The strategy is not asked again today: one denial, not one a bar.
                    locked = self.locked_until.get(ALL_SYMBOLS, 0)
                    self.locked_until[ALL_SYMBOLS] = max(locked, action.until)
            elif isinstance(action, RaiseAlert):
                self.alerts.raise_(
                    action.severity,
                    action.source,
                    action.title,
                    action.message,
                    dedupe_key=action.dedupe_key,
                )
            elif isinstance(action, KillSwitch):
                if self.state is not TradingState.HALTED:
                    self.emergency_stop(
                        "monitor", f"kill switch: {action.reason}", ExitReason.KILL_SWITCH
                    )
            elif isinstance(action, ExitPosition):
                self.submit(action.intent())
            elif isinstance(action, MoveStop):
                self.move_stop(action)
            elif isinstance(action, Pause) and self.state is TradingState.ACTIVE:
                self.set_state(TradingState.PAUSED, action.reason, "monitor")
        farm_down = frozenset(getattr(self.feed, "stale_symbols", ()))
        if farm_down:
            blocks.append(BlockEntries("market data farm lost", farm_down))
        self.entry_blocks = tuple(blocks)
        if self.record_usage:
            # Stamped on the wall clock: it says how fresh the figures are, not market facts.
            write_usage(self.db, usage(ctx, self.settings.risk), wall)
        if self.model is not None:
            self.model.score_due(now, self._prices())
            # Drift checks cost a query over thousands of rows: paced on the wall clock.
            if wall >= self._next_drift_check:
                self.model.check_drift(now)
                self._next_drift_check = wall + DRIFT_CHECK_MS
        self.db.conn.commit()
        self.continue_flattening()

    def move_stop(self, action: MoveStop) -> None:
        """Trail the resting stop: modify the order at the broker, then the position's
        stop, so the screen shows the level the broker holds."""
        try:
            order = self.oms.modify_stop(action.client_order_id, action.stop, ExitReason.TRAILING)
        except BrokerUnavailable as exc:
            log.warning("trailing stop for %s not moved: %s", action.symbol, exc)
            return
        if order is None or order.stop_price != action.stop:
            return
        position = self.portfolio.position(action.symbol)
        if position is not None:
            self.portfolio.set_protection(action.symbol, action.stop, position.target)
            write_position(self.db, self.portfolio, action.symbol, self.market_now)
        log.info("%s: %s", action.symbol, action.reason)

    # ------------------------------------------------------------- failures

    def _on_cycle_failure(self, exc: BaseException, error: str) -> None:
        self.consecutive_failures += 1
        n = self.consecutive_failures
        limit = self.settings.engine.failure_pause_after
        if _is_fatal(exc):
            self.alerts.raise_(Severity.CRITICAL, "cycle", "Fatal error: trading halted", error)
            if self.state is not TradingState.HALTED:
                self.set_state(TradingState.HALTED, f"fatal error: {error}", self.actor)
            return
        severity = Severity.WARNING if n < 3 else Severity.HIGH
        self.alerts.raise_(
            severity,
            "cycle",
            f"Cycle failed ({n} in a row)",
            error,
            dedupe_key="cycle-failure",
        )
        if n >= limit and self.state is TradingState.ACTIVE:
            self.set_state(
                TradingState.PAUSED, f"{n} consecutive cycle failures: {error}", self.actor
            )
            self.alerts.raise_(
                Severity.CRITICAL,
                "cycle",
                "Trading paused after repeated failures",
                f"{n} cycles failed in a row; last: {error}",
            )

    def _next_cycle_id(self) -> int:
        if not self._last_cycle_id:
            row = self.db.conn.execute("SELECT max(id) FROM cycles").fetchone()
            self._last_cycle_id = int(row[0] or 0)
        return self._last_cycle_id + 1

    def _record_cycle(self, r: CycleResult) -> int:
        t = r.timings
        cycle_id = self._next_cycle_id()
        self.db.conn.execute(
            "INSERT INTO cycles (id, started_at, duration_ms, feed_ms, features_ms, regime_ms,"
            " signal_ms, risk_ms, execution_ms, portfolio_ms, state_ms, bars, rejected_bars,"
            " intents, denied, orders, fills, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cycle_id,
                r.started_at,
                r.duration_ms,
                *(t.get(stage, 0.0) for stage in STAGES),
                r.bars,
                r.rejected_bars,
                r.intents,
                r.denied,
                r.orders,
                r.fills,
                r.error,
            ),
        )
        self.db.conn.execute(
            "UPDATE engine SET last_cycle_at = ?, market_time = ? WHERE id = 1",
            (r.started_at, self.market_now),
        )
        self._last_cycle_id = cycle_id
        self.last_cycle_at = r.started_at
        return cycle_id
