"""`python -m engine train` and `python -m engine models [list|promote|rollback|retire]`.

`train` runs in this process with a progress bar: it reads the database read-only,
writes the artifact folder, then registers the version (one short write: champion
if the registry has none, else challenger). Registry changes of a running engine
(promote, rollback, retire) are queued as commands for it, as every verb that acts
on trading is, and wait for the engine's answer.

Exit codes follow the engine CLI: 0 done, 1 failed or refused, 2 usage or
configuration error, 3 no engine answered in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.config import load_settings
from engine.ml import registry
from engine.process.queued import FAILED, OK, run_queued
from store.commands import CommandKind, cli_actor
from store.db import db_path, open_reader, open_writer

if TYPE_CHECKING:
    from engine.ml.train import TrainedModel

USAGE = 2


def _time_arg(text: str) -> int:
    """Epoch milliseconds, or an ISO date/time (UTC unless it carries an offset)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give epoch milliseconds or an ISO date such as 2024-01-31T09:30"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _db_option(p: argparse.ArgumentParser, *, leaf: bool) -> None:
    p.add_argument(
        "--db",
        default=argparse.SUPPRESS if leaf else None,
        help="state database (default $COCKPIT_DB or var/cockpit.db)",
    )


def register_cli(subparsers: Any) -> None:
    """Add `train` and `models` to the engine's verb subparsers (sets `func`)."""
    p = subparsers.add_parser(
        "train",
        help="train a model on stored bars (or simulated history) and register it",
        description="Train the direction and regime models with walk-forward CV.",
    )
    _db_option(p, leaf=False)
    p.add_argument("--symbols", help="comma-separated symbols (default: all in the db)")
    p.add_argument("--since", type=_time_arg, help="first bar (epoch ms or ISO time)")
    p.add_argument("--until", type=_time_arg, help="last bar (epoch ms or ISO time)")
    p.add_argument("--simulated", action="store_true", help="train on simulated history")
    p.add_argument("--folds", type=int, help="walk-forward folds (default: TrainParams)")
    p.add_argument(
        "--rounds",
        type=int,
        help="most boosting rounds; the folds choose how many are kept (default: TrainParams)",
    )
    p.add_argument("--no-register", action="store_true", help="write the artifact only")
    p.set_defaults(func=run_cli, ml_verb="train")

    m = subparsers.add_parser(
        "models",
        help="the model registry: list, promote, rollback, retire",
        description="List registered models or change the champion (via the engine).",
    )
    _db_option(m, leaf=False)
    m.set_defaults(func=run_cli, ml_verb="models", models_action="list", json=False)
    actions = m.add_subparsers(dest="models_action", metavar="ACTION")
    a = actions.add_parser("list", help="every version, newest first")
    _db_option(a, leaf=True)
    a.add_argument("--json", action="store_true", help="machine-readable output")
    for name, needs_version, text in [
        ("promote", True, "make a version the champion (retires the current one)"),
        ("rollback", False, "restore the previous champion, retire the current one"),
        ("retire", True, "retire a version"),
    ]:
        a = actions.add_parser(name, help=text, description=text)
        _db_option(a, leaf=True)
        if needs_version:
            a.add_argument("version")
        a.add_argument("--reason", default="", help="recorded in the audit trail")
        a.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")


def run_cli(args: argparse.Namespace) -> int:
    if args.ml_verb == "train":
        return _train(args)
    if (args.models_action or "list") == "list":
        return _list(args)
    return _command(args)


# ------------------------------------------------------------------ train


def _summary(trained: TrainedModel) -> str:
    lines = [f"model {trained.version}  ({trained.data_range.get('source')})"]
    for head, report in trained.metrics.items():
        overall, majority = report["overall"], report["majority"]
        line = (
            f"  {head:9s} accuracy {overall['accuracy']:.3f}  balanced"
            f" {overall['balanced_accuracy']:.3f}  AUC {overall['auc'] or float('nan'):.3f}"
            f"  | majority {majority['accuracy']:.3f}"
        )
        if "rules" in report:
            line += f"  rules {report['rules']['accuracy']:.3f}"
        lines.append(line)
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.ml.train import TrainingError, TrainParams, train_model

    settings = load_settings().ml
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
    given = {"n_folds": args.folds, "rounds": args.rounds}
    params = TrainParams(**{k: v for k, v in given.items() if v is not None})
    bar = tqdm(total=1, desc="training", unit="step", file=sys.stderr)

    def progress(label: str, done: int, total: int) -> None:
        bar.total = total
        bar.set_postfix_str(label)
        bar.update(done - bar.n)

    try:
        trained = train_model(
            args.db,
            settings,
            symbols=symbols,
            since=args.since,
            until=args.until,
            params=params,
            progress=progress,
            simulated=args.simulated,
        )
    except TrainingError as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return FAILED
    finally:
        bar.close()
    print(_summary(trained))
    if args.no_register:
        print(f"artifact {trained.path} (not registered)")
        return OK
    db = open_writer(args.db)
    try:
        registry.adopt(db, trained, actor=cli_actor())
        status = registry.get(db.conn, trained.version)
    finally:
        db.conn.close()
    print(f"registered {trained.version} as {status.status if status else '?'}")
    return OK


# ------------------------------------------------------------------ registry


def _fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _accuracy(metrics: dict[str, Any], head: str) -> str:
    value = metrics.get(head, {}).get("overall", {}).get("accuracy")
    return f"{value:.3f}" if value is not None else "-"


def _list(args: argparse.Namespace) -> int:
    path = db_path(args.db)
    if not path.exists():
        print(f"no state database at {path}", file=sys.stderr)
        return FAILED
    conn = open_reader(path)
    try:
        records = registry.list_models(conn)
    finally:
        conn.close()
    if args.json:
        rows = [
            {
                "version": r.version,
                "status": r.status.value,
                "trained_at": r.trained_at,
                "sha256": r.sha256,
                "path": r.path,
                "data_range": r.data_range,
                "metrics": r.metrics,
            }
            for r in records
        ]
        print(json.dumps(rows, indent=2))
        return OK
    if not records:
        print("no models registered: the engine trades on rules only")
        return OK
    print(f"{'version':24s} {'status':10s} {'trained (UTC)':16s} {'direction':>9s} {'regime':>7s}")
    for r in records:
        print(
            f"{r.version:24s} {r.status.value:10s} {_fmt_time(r.trained_at):16s}"
            f" {_accuracy(r.metrics, 'direction'):>9s} {_accuracy(r.metrics, 'regime'):>7s}"
        )
    return OK


def _command(args: argparse.Namespace) -> int:
    kind = CommandKind(args.models_action)
    payload: dict[str, Any] = {}
    if getattr(args, "version", None):
        payload["version"] = args.version
    if args.reason:
        payload["reason"] = args.reason
    return run_queued(kind, payload, db=args.db, timeout=args.timeout)
