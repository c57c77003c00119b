"""The ML layer's own tables, as the "ml" migration set beside the shared schema.

- predictions: every live prediction, champion and shadow challenger side by side,
  scored against the price once its horizon has passed.
- drift: drift measurements over time (feature PSI, prediction PSI, live accuracy).
- model_events: the registry's status history, so rollback knows which champion
  came before and the cockpit can show who changed what.

Readers must tolerate these tables not existing yet (an engine that never ran ML).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from store.schema import apply_pending

migrations = Migrations("ml")


@migrations()
def m001_ml_tables(db: Database) -> None:
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


def apply_migrations(db: Database) -> list[str]:
    """Apply pending ML migrations (idempotent); return the names applied."""
    return apply_pending(migrations, db)
