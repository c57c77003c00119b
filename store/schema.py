"""The schema of the state store: every table, as migration sets in one registry.

Table and column names are a contract between engine, cockpit, CLI and tests
(docs/ARCHITECTURE.md). Times are epoch milliseconds UTC. Money and quantities are stored as
computed (REAL); rounding happens only for display.

The registry (`REGISTRY`) holds the sets in the order they apply: core ("cockpit"),
the paper broker's tables, risk usage, ML, alert deliveries, secrets and backtest
runs. Each set records its applied migrations by name in `_sqlite_migrations` (so a
database made before the registry keeps its history), and the database's schema
version (`PRAGMA user_version`) is the number of registry migrations applied.

The writer applies every pending migration once, when it opens the database
(`store.db.open_writer` -> `migrate`), in one transaction; an empty database gets
an image of what they make, taken once per process (`_FreshImage`). Nothing else migrates:
readers check the version (`require_current`) and refuse an older database with
an error that says how to upgrade it. A migration only ever appends: never edit or
reorder one that has shipped, add a new one at the end of its set. A migration
that creates many tables calls one helper per group of tables, in order; the
helpers are part of the shipped migration and are never edited either.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

core = Migrations("cockpit")
paper = Migrations("paper_broker")
risk = Migrations("risk")
ml = Migrations("ml")
notify = Migrations("notify")
secrets = Migrations("secrets")
backtests = Migrations("backtests")

# The order migrations apply in. A set may refer to tables of a set before it (the
# ML set indexes the core `models` table).
REGISTRY: tuple[Migrations, ...] = (core, paper, risk, ml, notify, secrets, backtests)

# The statuses of a working order, as SQL. The open-order indexes hold only rows in
# these statuses, and SQLite uses such a partial index only for a query whose WHERE
# names the same literal list in the same order: every reader of open orders writes
# `status IN {OPEN_STATUSES}`. Part of shipped migrations, so never edited.
OPEN_STATUSES = "('NEW', 'SUBMITTED', 'ACCEPTED', 'PARTIALLY_FILLED')"


# ---------------------------------------------------------------- core ("cockpit")


@core()
def m001_core(db: Database) -> None:
    _core_engine_and_commands(db)
    _core_market(db)
    _core_decisions(db)
    _core_orders(db)
    _core_portfolio(db)
    _core_records(db)


def _core_engine_and_commands(db: Database) -> None:
    """The engine's own row and the command queue."""
    db.table("engine").create(
        {
            "id": int,
            "owner": str,
            "pid": int,
            "started_at": int,
            "heartbeat_at": int,
            "trading_state": str,
            "state_reason": str,
            "state_changed_at": int,
            "mode": str,  # PAPER or LIVE
            "broker": str,
            "broker_connected": int,
            "market_open": int,
            "cycle_seconds": float,
            "last_cycle_at": int,
            "stopped_at": int,
        },
        pk="id",
        not_null={"trading_state"},
        defaults={"trading_state": "ACTIVE", "state_reason": "", "mode": "PAPER"},
        if_not_exists=True,
    )
    db.table("commands").create(
        {
            "id": int,
            "kind": str,
            "args": str,  # JSON
            "requested_at": int,
            "requested_by": str,
            "status": str,  # pending, done, failed
            "result": str,
            "done_at": int,
        },
        pk="id",
        not_null={"kind", "requested_at", "status"},
        defaults={"status": "pending", "args": "{}"},
        if_not_exists=True,
    )


def _core_market(db: Database) -> None:
    """Bars and the `cycles` rows."""
    db.table("bars").create(
        {
            "symbol": str,
            "ts": int,
            "open": float,
            "high": float,
            "low": float,
            "close": float,
            "volume": float,
            "true_regime": str,
        },
        pk=("symbol", "ts"),
        if_not_exists=True,
    )
    db.table("cycles").create(
        {
            "id": int,
            "started_at": int,
            "duration_ms": float,
            "feed_ms": float,
            "features_ms": float,
            "regime_ms": float,
            "signal_ms": float,
            "risk_ms": float,
            "execution_ms": float,
            "portfolio_ms": float,
            "state_ms": float,
            "bars": int,
            "rejected_bars": int,
            "intents": int,
            "denied": int,
            "orders": int,
            "fills": int,
            "error": str,
        },
        pk="id",
        if_not_exists=True,
    )


def _core_decisions(db: Database) -> None:
    """Regime calls and signals."""
    db.table("regimes").create(
        {
            "id": int,
            "cycle_id": int,
            "symbol": str,
            "ts": int,
            "regime": str,
            "confidence": float,
            "source": str,  # rules or ml
            "model_version": str,
            "rules_regime": str,  # what the rules said, kept when ML overrides
            "features": str,  # JSON: the indicators behind the call
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("signals").create(
        {
            "id": int,
            "cycle_id": int,
            "ts": int,
            "symbol": str,
            "side": str,
            "qty": float,
            "purpose": str,
            "strength": float,
            "model_version": str,
            "verdict": str,  # allowed or denied
            "check_name": str,
            "reason": str,
            "client_order_id": str,
        },
        pk="id",
        if_not_exists=True,
    )


def _core_orders(db: Database) -> None:
    """Orders, their events and their fills."""
    db.table("orders").create(
        {
            "id": int,
            "client_order_id": str,
            "broker_order_id": str,
            "symbol": str,
            "side": str,
            "qty": float,
            "type": str,
            "limit_price": float,
            "stop_price": float,
            "status": str,
            "filled_qty": float,
            "avg_price": float,
            "purpose": str,
            "stop_loss": float,
            "take_profit": float,
            "ref_price": float,
            "sizing": str,  # JSON: method and inputs
            "reason": str,
            "created_at": int,
            "updated_at": int,
            "expires_at": int,
        },
        pk="id",
        not_null={"client_order_id", "symbol", "side", "qty", "type", "status"},
        defaults={"filled_qty": 0.0},
        if_not_exists=True,
    )
    db.table("order_events").create(
        {"id": int, "client_order_id": str, "ts": int, "status": str, "detail": str},
        pk="id",
        if_not_exists=True,
    )
    db.table("fills").create(
        {
            "id": int,
            "client_order_id": str,
            "exec_id": str,
            "ts": int,
            "symbol": str,
            "side": str,
            "qty": float,
            "price": float,
            "commission": float,
            "ref_price": float,
        },
        pk="id",
        if_not_exists=True,
    )


def _core_portfolio(db: Database) -> None:
    """Positions, round trips and equity marks."""
    db.table("positions").create(
        {
            "symbol": str,
            "qty": float,
            "avg_price": float,
            "realized_pnl": float,
            "stop": float,
            "target": float,
            "opened_at": int,
            "updated_at": int,
            "last_price": float,
            "unrealized_pnl": float,
        },
        pk="symbol",
        if_not_exists=True,
    )
    db.table("trades").create(  # round trips, written when a position returns to flat or flips
        {
            "id": int,
            "symbol": str,
            "side": str,  # side of the opening fill: BUY = long trade
            "qty": float,
            "entry_ts": int,
            "exit_ts": int,
            "entry_price": float,
            "exit_price": float,
            "pnl": float,  # net of commission
            "commission": float,
            "slippage": float,  # cost against the decision prices, in money
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("equity").create(
        {
            "ts": int,
            "cash": float,
            "equity": float,
            "realized": float,
            "unrealized": float,
            "peak": float,
            "drawdown": float,  # fraction below peak, >= 0
            "gross_exposure": float,
            "net_exposure": float,
        },
        pk="ts",
        if_not_exists=True,
    )


def _core_records(db: Database) -> None:
    """Alerts, the model registry and the audit trail."""
    db.table("alerts").create(
        {
            "id": int,
            "ts": int,
            "last_ts": int,
            "severity": str,
            "source": str,
            "title": str,
            "message": str,
            "dedupe_key": str,
            "count": int,
            "acked_at": int,
            "acked_by": str,
        },
        pk="id",
        defaults={"count": 1},
        if_not_exists=True,
    )
    db.table("models").create(
        {
            "id": int,
            "name": str,
            "version": str,
            "path": str,
            "sha256": str,
            "params": str,
            "features": str,
            "data_range": str,
            "metrics": str,
            "lib_versions": str,
            "status": str,  # candidate, challenger, champion, retired
            "trained_at": int,
            "status_changed_at": int,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("audit").create(
        {
            "id": int,
            "ts": int,
            "actor": str,
            "action": str,
            "payload": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="id",
        if_not_exists=True,
    )


@core()
def m002_indexes(db: Database) -> None:
    for table, columns, unique in [
        ("orders", ["client_order_id"], True),
        ("orders", ["status"], False),
        ("orders", ["symbol", "created_at"], False),
        ("orders", ["created_at"], False),
        ("fills", ["exec_id"], True),
        ("fills", ["client_order_id"], False),
        ("fills", ["ts"], False),
        ("order_events", ["client_order_id", "ts"], False),
        ("commands", ["status", "id"], False),
        ("cycles", ["started_at"], False),
        ("regimes", ["symbol", "ts"], False),
        ("regimes", ["cycle_id"], False),
        ("signals", ["ts"], False),
        ("signals", ["verdict", "ts"], False),
        ("alerts", ["dedupe_key", "acked_at"], False),
        ("alerts", ["ts"], False),
        ("alerts", ["acked_at", "severity"], False),
        ("trades", ["exit_ts"], False),
        ("audit", ["action", "ts"], False),
        ("bars", ["ts"], False),
    ]:
        db.table(table).create_index(columns, unique=unique, if_not_exists=True)


@core()
def m003_covering_indexes_for_risk_facts(db: Database) -> None:
    """The risk gate reads today's orders and trades before every order; covering
    indexes keep those reads inside the index instead of visiting every row."""
    db.table("orders").create_index(
        ["created_at", "purpose", "filled_qty", "status"],
        index_name="idx_orders_day_entries",
        if_not_exists=True,
    )
    db.table("trades").create_index(
        ["exit_ts", "pnl", "symbol"], index_name="idx_trades_exit_pnl", if_not_exists=True
    )


@core()
def m004_read_model_indexes(db: Database) -> None:
    """What the cockpit's read models need on a marathon-sized database:
    equity(drawdown) answers the worst drawdown with one probe; failed cycles and
    denied signals get partial indexes; alerts by source; the intent behind an order."""
    db.table("equity").create_index(["drawdown"], if_not_exists=True)
    db.table("alerts").create_index(["source", "ts"], if_not_exists=True)
    db.table("signals").create_index(["client_order_id"], if_not_exists=True)
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_cycles_failed ON cycles (started_at)"
        " WHERE error IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_signals_denied ON signals (check_name, ts)"
        " WHERE verdict = 'denied'"
    )


@core()
def m005_brackets_and_exit_reasons(db: Database) -> None:
    """Stops and targets rest at the broker as a bracket with their entry, and every
    round trip says why it closed and at which protective levels."""
    orders = db.table("orders")
    orders.add_column("parent_id", str)
    orders.add_column("oco_group", str)
    orders.add_column("exit_reason", str)
    orders.create_index(["oco_group"], if_not_exists=True)
    trades = db.table("trades")
    trades.add_column("exit_reason", str)
    trades.add_column("stop", float)
    trades.add_column("target", float)


@core()
def m006_market_clock(db: Database) -> None:
    """Market time beside wall time on the engine row: the market clock the cycle
    runs on, its speed, whether it is simulated, the bar interval, the trading-day
    definition every page shares, and the market time of the last state change
    (a losing streak counts from there)."""
    engine = db.table("engine")
    for name, kind in (
        ("market_time", int),
        ("speed", float),
        ("simulated", int),
        ("bar_interval", str),
        ("trading_day", str),
        ("state_changed_market_at", int),
    ):
        if name not in engine.columns_dict:
            engine.add_column(name, kind)


@core()
def m007_account_and_cash_movements(db: Database) -> None:
    """Starting cash is fixed for an account's life; deposits and withdrawals are
    their own audited rows, so P&L and drawdown can leave them out."""
    db.table("account").create(
        {"id": int, "starting_cash": float, "created_at": int}, pk="id", if_not_exists=True
    )
    db.table("cash_movements").create(
        {"id": int, "ts": int, "amount": float, "reason": str, "actor": str},
        pk="id",
        not_null={"ts", "amount"},
        if_not_exists=True,
    )
    db.table("cash_movements").create_index(["ts"], if_not_exists=True)


@core()
def m008_engine_heartbeat_seconds(db: Database) -> None:
    """How often the engine beats, so every reader judges liveness by one rule."""
    if "heartbeat_seconds" not in db.table("engine").columns_dict:
        db.table("engine").add_column("heartbeat_seconds", float)


@core()
def m009_lean_order_indexes(db: Database) -> None:
    """Each index an order touches is a page written per commit (about 44 pages an
    order, most of the order path's cost). Two were prefixes of covering indexes;
    the status index now holds only working orders, all its readers ask for, so it
    stays a page or two instead of one page per status an order passes through;
    and the OCO group index holds only the orders that have one."""
    for redundant in ("idx_orders_created_at", "idx_trades_exit_ts"):
        db.execute(f"DROP INDEX IF EXISTS {redundant}")
    db.execute("DROP INDEX IF EXISTS idx_orders_status")
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_orders_open ON orders (status)"
        f" WHERE status IN {OPEN_STATUSES}"
    )
    db.execute("DROP INDEX IF EXISTS idx_orders_oco_group")
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_orders_oco_group ON orders (oco_group)"
        " WHERE oco_group IS NOT NULL"
    )


def _without_rowid(db: Database, table: str) -> None:
    """Rebuild a table keyed by a text primary key as WITHOUT ROWID, rows kept: the
    row then lives in its key's b-tree, so a write touches one b-tree instead of
    the table and its key index. No-op when it already is one."""
    found = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
    ).fetchone()
    if found is None or "WITHOUT ROWID" in str(found[0]).upper():
        return
    db.execute(f'ALTER TABLE "{table}" RENAME TO "_old_{table}"')
    db.execute(f"{found[0]} WITHOUT ROWID")
    db.execute(f'INSERT INTO "{table}" SELECT * FROM "_old_{table}"')
    db.execute(f'DROP TABLE "_old_{table}"')


@core()
def m010_fewer_pages_per_fill(db: Database) -> None:
    """What a fill writes, in fewer b-trees (see m009): positions, one row per held
    symbol, keyed by the symbol alone; and today's entries are found by time and
    purpose, no longer covering the fill state, which every fill changed. Since the
    gate keeps the day's facts in memory (engine.risk.daily), the day is read from
    the store a few times a day, not before every order, so the cover no longer
    pays for the index writes."""
    _without_rowid(db, "positions")
    db.execute("DROP INDEX IF EXISTS idx_orders_day_entries")
    db.execute("CREATE INDEX IF NOT EXISTS idx_orders_day_entries ON orders (created_at, purpose)")


@core()
def m011_portfolio_checkpoint(db: Database) -> None:
    """The portfolio as it stood after the fills up to `fill_id`, so a restart (or a
    failed write's reload) replays the fills after it, not the whole history: a
    year of a million fills took 8.7 s to replay before the first cycle. One row,
    replaced as the engine writes a newer one (engine.execution.portfolio)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS portfolio_checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " fill_id INTEGER NOT NULL, fills INTEGER NOT NULL, fill_cash REAL NOT NULL,"
        " state TEXT NOT NULL, written_at INTEGER NOT NULL)"
    )


# ----------------------------- the paper broker ("paper_broker")


@paper()
def m001_paper_tables(db: Database) -> None:
    _paper_account(db)
    _paper_orders(db)


def _paper_account(db: Database) -> None:
    """The paper account, its positions and the last bar per symbol."""
    db.table("paper_account").create(
        {
            "id": int,
            "cash": float,
            "starting_cash": float,
            "order_seq": int,
            "exec_seq": int,
            "updated_at": int,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("paper_positions").create(
        {"symbol": str, "qty": float, "updated_at": int}, pk="symbol", if_not_exists=True
    )
    db.table("paper_bars").create(  # the last bar seen per symbol: the broker's market data
        {
            "symbol": str,
            "ts": int,
            "open": float,
            "high": float,
            "low": float,
            "close": float,
            "volume": float,
        },
        pk="symbol",
        if_not_exists=True,
    )


def _paper_orders(db: Database) -> None:
    """The paper broker's orders and executions."""
    db.table("paper_orders").create(
        {
            "client_order_id": str,
            "broker_order_id": str,
            "symbol": str,
            "side": str,
            "qty": float,
            "type": str,
            "purpose": str,
            "limit_price": float,
            "stop_price": float,
            "status": str,
            "filled_qty": float,
            "avg_price": float,
            "triggered": int,
            "after_ts": int,  # the order works on bars later than this one
            "expires_at": int,
            "created_at": int,
            "updated_at": int,
            "detail": str,
        },
        pk="client_order_id",
        if_not_exists=True,
    )
    db.table("paper_orders").create_index(["status"], if_not_exists=True)
    db.table("paper_executions").create(
        {
            "exec_id": str,
            "client_order_id": str,
            "broker_order_id": str,
            "symbol": str,
            "side": str,
            "ts": int,
            "qty": float,
            "price": float,
            "commission": float,
            "ref_price": float,
        },
        pk="exec_id",
        if_not_exists=True,
    )
    db.table("paper_executions").create_index(["client_order_id"], if_not_exists=True)


@paper()
def m002_brackets(db: Database) -> None:
    orders = db.table("paper_orders")
    orders.add_column("parent_id", str)
    orders.add_column("oco_group", str)


@paper()
def m003_open_orders_index(db: Database) -> None:
    """The status index holds only working orders (see core m009): a market order
    that fills at once never enters it."""
    db.execute("DROP INDEX IF EXISTS idx_paper_orders_status")
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_paper_orders_open ON paper_orders (status)"
        f" WHERE status IN {OPEN_STATUSES}"
    )


@paper()
def m004_keyed_by_symbol(db: Database) -> None:
    """The broker's positions and last bars, one row per symbol, keyed by the symbol
    alone (see core m010): one b-tree written per fill and per bar."""
    _without_rowid(db, "paper_positions")
    _without_rowid(db, "paper_bars")


# ------------------------------------------- risk usage ("risk")


@risk()
def m001_risk_usage(db: Database) -> None:
    db.table("risk_usage").create(
        {
            "name": str,
            "value": float,
            "limit_value": float,
            "unit": str,
            "share": float,
            "detail": str,
            "updated_at": int,
        },
        pk="name",
        if_not_exists=True,
    )


# ----------------------------------------------------- ML ("ml")


@ml()
def m001_ml_tables(db: Database) -> None:
    _ml_tables(db)
    _ml_indexes(db)


@ml()
def m002_prediction_scores(db: Database) -> None:
    """Each version's and role's scored predictions summed as they are scored, so
    the Models page reads one row a version, not a marathon's predictions (a month
    at 20 symbols is near two million rows). A trigger keeps the sums on every
    scoring write; pruning old predictions leaves them whole. The rows scored
    before this migration are summed once here."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS prediction_scores (model_version TEXT NOT NULL,"
        " role TEXT NOT NULL, scored INTEGER NOT NULL, correct INTEGER NOT NULL,"
        " brier_sum REAL NOT NULL, PRIMARY KEY (model_version, role)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO prediction_scores SELECT model_version, role, COUNT(*),"
        " COALESCE(SUM((proba >= 0.5) = outcome), 0),"
        " COALESCE(SUM((proba - outcome) * (proba - outcome)), 0.0)"
        " FROM predictions WHERE scored_at IS NOT NULL AND outcome IS NOT NULL"
        " AND model_version IS NOT NULL AND role IS NOT NULL GROUP BY model_version, role"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS predictions_scored AFTER UPDATE OF scored_at"
        " ON predictions WHEN old.scored_at IS NULL AND new.scored_at IS NOT NULL"
        " AND new.outcome IS NOT NULL AND new.model_version IS NOT NULL"
        " AND new.role IS NOT NULL BEGIN"
        " INSERT INTO prediction_scores VALUES (new.model_version, new.role, 1,"
        " (new.proba >= 0.5) = new.outcome, (new.proba - new.outcome) * (new.proba - new.outcome))"
        " ON CONFLICT (model_version, role) DO UPDATE SET scored = scored + 1,"
        " correct = correct + excluded.correct, brier_sum = brier_sum + excluded.brier_sum;"
        " END"
    )


@ml()
def m003_shadow_scores(db: Database) -> None:
    """The champion-against-challenger comparison summed pair by pair as the pairs
    are scored, so the promotion advice (the engine's, on the trading thread at every
    drift check, and the Models page's) reads one row, not a join over a shadow
    period's predictions (0.9 s on 30 days of 5 symbols). A pair is the challenger's
    prediction and the champion's on the same bar; both are scored on one outcome.
    Pairs scored before this migration are summed once here."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS shadow_scores (champion TEXT NOT NULL,"
        " challenger TEXT NOT NULL, pairs INTEGER NOT NULL, gain_sum REAL NOT NULL,"
        " gain_sq_sum REAL NOT NULL, champion_correct INTEGER NOT NULL,"
        " challenger_correct INTEGER NOT NULL, PRIMARY KEY (champion, challenger))"
        " WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO shadow_scores SELECT champion, challenger, COUNT(*), TOTAL(gain),"
        " TOTAL(gain * gain), TOTAL(c0), TOTAL(c1) FROM ("
        + _PAIRS.format(b="b")
        + " JOIN predictions b ON a.symbol = b.symbol AND a.ts = b.ts"
        " WHERE a.role = 'champion' AND b.role = 'challenger' AND b.scored_at IS NOT NULL"
        " AND b.outcome IS NOT NULL) GROUP BY champion, challenger"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS predictions_shadow_scored AFTER UPDATE OF scored_at"
        " ON predictions WHEN old.scored_at IS NULL AND new.scored_at IS NOT NULL"
        " AND new.role = 'challenger' AND new.outcome IS NOT NULL BEGIN"
        " INSERT INTO shadow_scores SELECT champion, challenger, 1, gain, gain * gain, c0, c1"
        " FROM ("
        + _PAIRS.format(b="new")
        + " WHERE a.symbol = new.symbol AND a.ts = new.ts AND a.role = 'champion') WHERE true"
        " ON CONFLICT (champion, challenger) DO UPDATE SET pairs = pairs + 1,"
        " gain_sum = gain_sum + excluded.gain_sum,"
        " gain_sq_sum = gain_sq_sum + excluded.gain_sq_sum,"
        " champion_correct = champion_correct + excluded.champion_correct,"
        " challenger_correct = challenger_correct + excluded.challenger_correct;"
        " END"
    )


@ml()
def m004_scored_predictions_index(db: Database) -> None:
    """The latest scored predictions of a version (the live accuracy the engine checks
    every minute on the trading thread) come off an index in id order, limit and all:
    the index on (version, role, scored_at) made SQLite read and sort every scored
    row of the version, 70-380 ms on 30 days of 5 symbols. The new index holds only
    scored rows, so a prediction enters it when it is scored, not when the cycle
    stores it."""
    db.execute("DROP INDEX IF EXISTS idx_predictions_model_version_role_scored_at")
    db.execute(
        "CREATE INDEX IF NOT EXISTS predictions_scored ON predictions (model_version, role)"
        " WHERE scored_at IS NOT NULL"
    )


@ml()
def m005_due_predictions_by_symbol(db: Database) -> None:
    """Scoring asks for one symbol's due predictions at a time (it has that symbol's
    price); the due index keyed on horizon alone made each symbol's update walk every
    symbol's due rows, so a monitor step cost symbols x due rows: 170 ms at 100
    symbols, on the trading thread, every second. Keyed on (symbol, horizon) each
    update reads its own rows."""
    db.execute("DROP INDEX IF EXISTS predictions_due")
    db.execute(
        "CREATE INDEX IF NOT EXISTS predictions_due ON predictions (symbol, horizon_ts)"
        " WHERE scored_at IS NULL"
    )


# One champion prediction (a) and the challenger's (b) on the same bar, scored on
# the challenger's outcome: its Brier gain and whether each called it.
_PAIRS = (
    "SELECT a.model_version AS champion, {b}.model_version AS challenger,"
    " (a.proba - {b}.outcome) * (a.proba - {b}.outcome)"
    " - ({b}.proba - {b}.outcome) * ({b}.proba - {b}.outcome) AS gain,"
    " (a.proba >= 0.5) = ({b}.outcome = 1) AS c0, ({b}.proba >= 0.5) = ({b}.outcome = 1) AS c1"
    " FROM predictions a"
)


def _ml_tables(db: Database) -> None:
    """Predictions, drift readings and model events."""
    db.table("predictions").create(
        {
            "id": int,
            "ts": int,  # bar time the prediction was made on
            "symbol": str,
            "model_version": str,
            "role": str,  # champion or challenger
            "proba": float,  # p(up over the horizon)
            "regime": str,  # the regime head's call, when it has one
            "regime_confidence": float,
            "true_regime": str,  # the simulator's truth at ts, when known
            "ref_price": float,  # close at ts
            "horizon_ts": int,  # when the outcome is known
            "outcome": int,  # 1 up, 0 not up; NULL until scored
            "exit_price": float,
            "scored_at": int,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("drift").create(
        {
            "id": int,
            "ts": int,
            "model_version": str,
            "kind": str,  # feature_psi, prediction_psi, live_accuracy
            "name": str,  # feature name, proba_up or accuracy
            "value": float,
            "threshold": float,
            "severity": str,  # NULL within bounds
            "n": int,
            "detail": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("model_events").create(
        {
            "id": int,
            "ts": int,
            "version": str,
            "action": str,  # register, promote, rollback, retire, challenger, demote
            "from_status": str,
            "to_status": str,
            "replaced": str,  # the champion this one replaced, for rollback
            "actor": str,
            "reason": str,
        },
        pk="id",
        if_not_exists=True,
    )


def _ml_indexes(db: Database) -> None:
    """The ML tables' indexes, and the registry's."""
    for table, columns in [
        ("predictions", ["model_version", "role", "scored_at"]),
        ("predictions", ["symbol", "ts"]),
        ("drift", ["ts"]),
        ("drift", ["kind", "name", "ts"]),
        ("model_events", ["version", "id"]),
        ("models", ["version"]),
        ("models", ["status"]),
    ]:
        db.table(table).create_index(columns, if_not_exists=True)
    # Scoring looks only at unscored rows; a partial index keeps that lookup small.
    db.execute(
        "CREATE INDEX IF NOT EXISTS predictions_due ON predictions (horizon_ts)"
        " WHERE scored_at IS NULL"
    )


# ----------------------------------- alert deliveries ("notify")


@notify()
def m001_alert_deliveries(db: Database) -> None:
    db.table("alert_deliveries").create(
        {
            "id": int,
            "ts": int,
            "channel": str,  # webhook, email, telegram
            "target": str,  # the channel's name, no secret
            "alert_ids": str,  # JSON list: a grouped message stands for several alerts
            "title": str,
            "status": str,  # delivered or dead
            "attempts": int,
            "error": str,
        },
        pk="id",
        not_null={"ts", "channel", "status"},
        if_not_exists=True,
    )
    db.table("alert_deliveries").create_index(["status", "ts"], if_not_exists=True)


# ------------------------------------------- secrets ("secrets")


@secrets()
def m001_secrets(db: Database) -> None:
    db.table("secrets").create(
        {"name": str, "token": str, "updated_at": int},
        pk="name",
        not_null={"token", "updated_at"},
        if_not_exists=True,
    )


# ----------------------------------- backtest runs ("backtests")


@backtests()
def m001_backtest_runs(db: Database) -> None:
    db.table("backtest_runs").create(
        {
            "run_id": str,
            "kind": str,  # backtest or sweep
            "status": str,  # running, done, failed
            "progress": float,  # 0..1
            "created_at": int,
            "finished_at": int,
            "strategy": str,
            "symbols": str,
            "out_dir": str,
            "config": str,  # JSON
            "metrics": str,  # JSON
            "message": str,
            "command_id": int,
        },
        pk="run_id",
        if_not_exists=True,
    )
    db.table("backtest_runs").create_index(["created_at"], if_not_exists=True)


# ------------------------------------------------------------------ the registry


class SchemaError(RuntimeError):
    """The database's schema is not the one this code reads; the message says why."""


def _names(migration_set: Migrations) -> list[str]:
    return [m.name for m in migration_set._migrations]


def registered(registry: Sequence[Migrations] = REGISTRY) -> list[tuple[str, str]]:
    """Every migration of the registry as (set, name), in the order they apply."""
    return [(s.name, name) for s in registry for name in _names(s)]


SCHEMA_VERSION = len(registered())


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema version: how many registry migrations it has applied."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: Database, registry: Sequence[Migrations] = REGISTRY) -> list[str]:
    """Bring the database to the registry's version; return the names applied
    ("set/name"). Idempotent: on a current database it reads one pragma and writes
    nothing.

    Everything pending applies in one IMMEDIATE transaction (the write lock is taken
    before anything is read, so two writers cannot both apply a migration): a
    failing migration leaves the database as it was, at its old version.
    """
    version = len(registered(registry))
    current = schema_version(db.conn)
    if current == version:
        return []
    if current > version:
        raise SchemaError(
            f"the database is at schema version {current}, newer than this code's"
            f" {version}: it was written by a newer version of the cockpit; run that"
            " version (or restore a backup made by this one)"
        )
    if db.conn.in_transaction:
        db.conn.commit()
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        if current == 0 and _is_empty(db.conn) and tuple(registry) == REGISTRY:
            applied = _FRESH.write(db.conn)
        else:
            applied = _apply_pending(db, registry)
        db.conn.execute(f"PRAGMA user_version = {version}")
        db.conn.execute("COMMIT")
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    return applied


def _apply_pending(db: Database, registry: Sequence[Migrations]) -> list[str]:
    """Run each set's pending migrations, in registry order; the names applied."""
    applied: list[str] = []
    for migration_set in registry:
        pending = [m.name for m in migration_set.pending(db)]
        if pending:
            migration_set.apply(db)
            applied += [f"{migration_set.name}/{name}" for name in pending]
    return applied


def _is_empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None


MIGRATIONS_TABLE = Migrations.migrations_table  # sqlite-utils' record of what was applied

# A database as its schema statements, then each table's rows with their INSERT.
_Image = tuple[list[str], list[tuple[str, str, list[Any]]]]


class _FreshImage:
    """What the registry's migrations make of an empty database, taken once per
    process by running them on an in-memory one, and written into an empty
    database as its schema statements and rows.

    Running the migrations through sqlite-utils costs some 760 statements (it
    looks at the schema before each step); the image is about 100. The result is
    the same database: the same `sqlite_master` text, in the same order, the same
    rows, and each migration recorded as applied now (tests/test_schema.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: _Image | None = None

    def _take(self) -> _Image:
        with self._lock:
            if self._taken is None:
                conn = sqlite3.connect(":memory:")
                try:
                    _apply_pending(Database(conn), REGISTRY)
                    conn.commit()
                    self._taken = _image_of(conn)
                finally:
                    conn.close()
            return self._taken

    def write(self, conn: sqlite3.Connection) -> list[str]:
        """Write the image into `conn` (empty, in the caller's transaction)."""
        statements, tables = self._take()
        for sql in statements:
            conn.execute(sql)
        applied_at = str(datetime.now(UTC))
        for insert, name, rows in tables:
            if name == MIGRATIONS_TABLE:  # (id, migration_set, name, applied_at)
                conn.executemany(insert, [(*r[:3], applied_at) for r in rows])
            else:
                conn.executemany(insert, rows)
        return [f"{set_name}/{name}" for set_name, name in registered()]


def _image_of(conn: sqlite3.Connection) -> _Image:
    """A database's schema statements (in the order they were made; SQLite's own
    automatic indexes aside) and every table's rows, with the statement that
    inserts them."""
    objects = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
    ).fetchall()
    statements = [sql for _, name, sql in objects if not name.startswith("sqlite_")]
    tables = [name for kind, name, _ in objects if kind == "table"]
    data = []
    for name in tables:
        cursor = conn.execute(f'SELECT * FROM "{name}"')
        rows = cursor.fetchall()
        if rows:
            columns = ", ".join(f'"{d[0]}"' for d in cursor.description)
            marks = ", ".join("?" * len(cursor.description))
            data.append((f'INSERT INTO "{name}" ({columns}) VALUES ({marks})', name, rows))
    return statements, data


_FRESH = _FreshImage()


def require_current(conn: sqlite3.Connection, where: object = "the database") -> None:
    """Refuse to read a database whose schema is older than this code's.

    Readers never migrate: only the writer (the engine) may change the schema, while
    it holds the database.
    """
    current = schema_version(conn)
    if current < SCHEMA_VERSION:
        raise SchemaError(
            f"{where} is at schema version {current}, this code reads version"
            f" {SCHEMA_VERSION}: start the engine once (python -m engine run) so it"
            " upgrades the database, then try again"
        )
