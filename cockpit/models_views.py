"""Read models for the Models page: the registry, each version's training report,
live accuracy against training, drift over time and the shadow comparison.

Every function opens one short-lived read-only connection. A missing database, or
ML tables the engine has not created yet, read as empty: the page shows why.
The training report lives in `models.metrics` (JSON written at training time), so
the page needs no artifact file.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

import pandas as pd

from engine.ml.shadow import PairSums, PromotionAdvice, advice_from_sums
from store.db import maybe_reader
from store.models import shadow_sums

PathLike = str | os.PathLike[str] | None
HEADS = ("direction", "regime")
ML_COMMANDS = ("train", "promote", "rollback", "retire")


def _rows(conn: sqlite3.Connection | None, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    if conn is None:
        return []
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return []


def _frame(
    conn: sqlite3.Connection | None, sql: str, columns: list[str], params: Any = ()
) -> pd.DataFrame:
    return pd.DataFrame(_rows(conn, sql, params), columns=columns)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSummary:
    version: str
    name: str
    status: str
    trained_at: int
    status_changed_at: int | None
    sha256: str
    path: str
    data_range: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(h for h in HEADS if h in self.metrics)

    def accuracy(self, head: str, baseline: str = "overall") -> float:
        """Walk-forward accuracy of a head: the model's ("overall") or a baseline's."""
        return _num(self.metrics.get(head, {}).get(baseline, {}).get("accuracy"))


@dataclass(frozen=True)
class ModelsView:
    models: tuple[ModelSummary, ...]  # newest first

    def with_status(self, status: str) -> ModelSummary | None:
        return next((m for m in self.models if m.status == status), None)

    @property
    def champion(self) -> ModelSummary | None:
        return self.with_status("champion")

    @property
    def challenger(self) -> ModelSummary | None:
        return self.with_status("challenger")

    def get(self, version: str) -> ModelSummary | None:
        return next((m for m in self.models if m.version == version), None)

    def table(self) -> pd.DataFrame:
        """One row per version for the registry table."""
        return pd.DataFrame(
            [
                {
                    "version": m.version,
                    "status": m.status,
                    "trained_at": m.trained_at,
                    "status_changed_at": m.status_changed_at,
                    "source": m.data_range.get("source", ""),
                    "rows": m.data_range.get("rows"),
                    "direction_accuracy": m.accuracy("direction"),
                    "direction_majority": m.accuracy("direction", "majority"),
                    "regime_accuracy": m.accuracy("regime"),
                    "regime_rules": m.accuracy("regime", "rules"),
                    "sha256": m.sha256[:12],
                }
                for m in self.models
            ],
            columns=[
                "version", "status", "trained_at", "status_changed_at", "source", "rows",
                "direction_accuracy", "direction_majority", "regime_accuracy", "regime_rules",
                "sha256",
            ],
        )  # fmt: skip


def models_view(path: PathLike = None) -> ModelsView:
    with maybe_reader(path) as conn:
        rows = _rows(
            conn,
            "SELECT version, name, status, trained_at, status_changed_at, sha256, path,"
            " data_range, metrics, params FROM models ORDER BY id DESC",
        )
    return ModelsView(
        tuple(
            ModelSummary(
                version=r[0],
                name=r[1],
                status=r[2],
                trained_at=r[3],
                status_changed_at=r[4],
                sha256=r[5] or "",
                path=r[6] or "",
                data_range=json.loads(r[7] or "{}"),
                metrics=json.loads(r[8] or "{}"),
                params=json.loads(r[9] or "{}"),
            )
            for r in rows
        )
    )


# --------------------------------------------------------------------------- training report

_FOLD_METRICS = ("accuracy", "balanced_accuracy", "log_loss", "auc", "brier")


def fold_table(model: ModelSummary, head: str) -> pd.DataFrame:
    """Walk-forward folds of one head: model and baselines side by side."""
    out = []
    for fold in model.metrics.get(head, {}).get("folds", []):
        row: dict[str, Any] = {
            "fold": fold["fold"],
            "test_start": fold["test_start"],
            "test_end": fold["test_end"],
            "train_rows": fold["train_rows"],
            "test_rows": fold["test_rows"],
            "purged": fold["purged"],
        }
        row.update({name: _num(fold["model"].get(name)) for name in _FOLD_METRICS})
        row["majority_accuracy"] = _num(fold["majority"].get("accuracy"))
        if "rules" in fold:
            row["rules_accuracy"] = _num(fold["rules"].get("accuracy"))
        out.append(row)
    return pd.DataFrame(out)


def overall_table(model: ModelSummary, head: str) -> pd.DataFrame:
    """The head's out-of-fold metrics against its baselines (rows: metrics)."""
    report = model.metrics.get(head, {})
    columns = {"model": report.get("overall", {}), "majority": report.get("majority", {})}
    if "rules" in report:
        columns["rules"] = report["rules"]
    return pd.DataFrame(
        {name: [_num(values.get(m)) for m in _FOLD_METRICS] for name, values in columns.items()},
        index=list(_FOLD_METRICS),
    )


def importance_table(model: ModelSummary, head: str) -> pd.DataFrame:
    shares = model.metrics.get(head, {}).get("importance", {})
    frame = pd.DataFrame({"feature": list(shares), "gain_share": list(shares.values())})
    return frame.sort_values("gain_share", ascending=False, ignore_index=True)


def calibration_table(model: ModelSummary, head: str) -> pd.DataFrame:
    """Reliability bins with at least one row: predicted against observed."""
    bins = model.metrics.get(head, {}).get("calibration", [])
    frame = pd.DataFrame(bins, columns=["lo", "hi", "count", "mean_predicted", "observed"])
    return frame[frame["count"] > 0].reset_index(drop=True)


# --------------------------------------------------------------------------- live


def live_accuracy(path: PathLike = None) -> pd.DataFrame:
    """Per version and role: scored predictions, live accuracy, and training accuracy,
    from the sums kept as predictions are scored (`prediction_scores`): every
    prediction the version made, including those pruned since."""
    with maybe_reader(path) as conn:
        live = _frame(
            conn,
            "SELECT model_version, role, scored, 1.0 * correct / scored,"
            " brier_sum / scored FROM prediction_scores WHERE scored > 0"
            " ORDER BY model_version, role",
            ["version", "role", "scored", "live_accuracy", "live_brier"],
        )
    training = {m.version: m.accuracy("direction") for m in models_view(path).models}
    live["training_accuracy"] = [training.get(v, math.nan) for v in live["version"]]
    return live


def drift_history(
    path: PathLike = None, version: str | None = None, since: int | None = None
) -> pd.DataFrame:
    """Drift measurements over time, oldest first."""
    where: list[str] = ["1 = 1"]
    params: list[object] = []
    if version is not None:
        where.append("model_version = ?")
        params.append(version)
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    with maybe_reader(path) as conn:
        return _frame(
            conn,
            "SELECT ts, model_version, kind, name, value, threshold, severity, n, detail"
            f" FROM drift WHERE {' AND '.join(where)} ORDER BY ts, id",
            ["ts", "version", "kind", "name", "value", "threshold", "severity", "n", "detail"],
            params,
        )


def latest_drift(path: PathLike = None) -> pd.DataFrame:
    """The most recent drift check, worst first: its rows only, found by the `ts`
    index, however many checks a marathon has stored."""
    with maybe_reader(path) as conn:
        latest = _frame(
            conn,
            "SELECT ts, model_version, kind, name, value, threshold, severity, n, detail"
            " FROM drift WHERE ts = (SELECT MAX(ts) FROM drift) ORDER BY id",
            ["ts", "version", "kind", "name", "value", "threshold", "severity", "n", "detail"],
        )
    if latest.empty:
        return latest
    latest["ratio"] = latest["value"] / latest["threshold"]
    ordered: pd.DataFrame = latest.sort_values("ratio", ascending=False, ignore_index=True)
    return ordered


def shadow_advice(
    path: PathLike, champion: str, challenger: str, *, min_samples: int, horizon_bars: int
) -> PromotionAdvice:
    """Champion against challenger on the same scored bars (what the engine judges)."""
    with maybe_reader(path) as conn:
        sums = PairSums(*shadow_sums(conn, champion, challenger)) if conn else PairSums.none()
    return advice_from_sums(
        champion,
        challenger,
        sums,
        min_samples=min_samples,
        horizon_bars=horizon_bars,
    )


def model_events(path: PathLike = None, limit: int = 50) -> pd.DataFrame:
    with maybe_reader(path) as conn:
        return _frame(
            conn,
            "SELECT ts, version, action, from_status, to_status, actor, reason"
            " FROM model_events ORDER BY id DESC LIMIT ?",
            ["ts", "version", "action", "from", "to", "actor", "reason"],
            (limit,),
        )


def model_commands(path: PathLike = None, limit: int = 10) -> pd.DataFrame:
    """The latest train/promote/rollback/retire commands and what became of them."""
    marks = ",".join("?" * len(ML_COMMANDS))
    with maybe_reader(path) as conn:
        return _frame(
            conn,
            "SELECT id, kind, args, requested_at, requested_by, status, result FROM commands"
            f" WHERE kind IN ({marks}) ORDER BY id DESC LIMIT ?",
            ["id", "kind", "args", "requested_at", "requested_by", "status", "result"],
            (*ML_COMMANDS, limit),
        )
