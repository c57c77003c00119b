"""The schema of the state store, as named migrations applied in order.

Table and column names are a contract between engine, cockpit, CLI and tests
(docs/ARCHITECTURE.md). Times are epoch milliseconds UTC. Money and quantities are stored as
computed (REAL); rounding happens only for display.

Modules that own extra tables (the paper broker, the ML registry) register their
own `Migrations` set and apply it themselves; this set holds the shared tables.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("cockpit")


@migrations()
def m001_core(db: Database) -> None:
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


@migrations()
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


@migrations()
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


@migrations()
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


@migrations()
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


@migrations()
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


@migrations()
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


@migrations()
def m008_engine_heartbeat_seconds(db: Database) -> None:
    """How often the engine beats, so every reader judges liveness by one rule."""
    if "heartbeat_seconds" not in db.table("engine").columns_dict:
        db.table("engine").add_column("heartbeat_seconds", float)


def apply_pending(migration_set: Migrations, db: Database) -> list[str]:
    """Apply a set's pending migrations (idempotent); return the names applied.
    Every module that owns tables (paper broker, risk, ML) applies its set through this."""
    names = [m.name for m in migration_set.pending(db)]
    if names:
        migration_set.apply(db)
    return names


def migrate(db: Database) -> list[str]:
    """Apply the shared set's pending migrations; return the names applied."""
    return apply_pending(migrations, db)
