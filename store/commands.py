"""The operator's commands: the only write path from the cockpit into the engine.

The cockpit and the CLI insert a `commands` row; the engine picks pending rows
up on the trading thread (every 50 ms, and before every cycle), executes them
and marks them done or failed with a result. Commands are idempotent against double clicks: an
identical command still pending is returned instead of inserting a second one.

Anyone who can write the database can write a row, so a row is checked twice:
here when it is queued, and again by the engine before it runs (`parse_row`).
Each kind has a fixed set of arguments with types and size limits, and the
requester is one of a fixed set of shapes (`cockpit:NAME`, `cli:NAME`), never
free text.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from store.db import BUSY_TIMEOUT_MS, db_path, ensure_schema, now_ms


class CommandKind(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    FLATTEN = "flatten"
    EMERGENCY_STOP = "emergency_stop"
    ACK_ALERT = "ack_alert"
    TRAIN = "train"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    RETIRE = "retire"
    BACKTEST = "backtest"  # a backtest or sweep, run by the engine in its own process
    CASH_MOVEMENT = "cash_movement"  # a deposit (amount > 0) or withdrawal (< 0)
    RECONCILE = "reconcile"  # compare the engine's book with the broker's now
    ADOPT_BROKER = "adopt_broker"  # make the broker's positions the engine's, audited


class CommandStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # claimed by the engine; committed only with its first effects
    DONE = "done"
    FAILED = "failed"


FINISHED = frozenset({CommandStatus.DONE, CommandStatus.FAILED})
MAX_REASON = 1_000
MAX_ARGS_CHARS = 4_000  # the engine refuses a bigger row without parsing it
ENGINE_ACTOR = "engine"
_ACTOR = re.compile(r"(cockpit|cli):[A-Za-z0-9._@-]{1,64}")
_SYMBOL = re.compile(r"[A-Za-z0-9.^=_-]{1,32}")
_VERSION = re.compile(r"[A-Za-z0-9._:-]{1,100}")


@dataclass(frozen=True)
class Command:
    id: int
    kind: CommandKind
    args: dict[str, Any]
    requested_at: int
    requested_by: str
    status: CommandStatus
    result: str | None
    done_at: int | None


@dataclass(frozen=True)
class CommandRow:
    """A row as stored, before anything in it is trusted."""

    id: int
    kind: object
    args: object
    requested_at: object
    requested_by: object


class CommandError(ValueError):
    """The command is malformed; nothing was written (or the engine refused the row)."""


@dataclass(frozen=True)
class _Arg:
    type: type
    required: bool = False
    pattern: re.Pattern[str] | None = None
    max_len: int = MAX_REASON


_REASON = _Arg(str)
ARGUMENTS: dict[CommandKind, dict[str, _Arg]] = {
    CommandKind.PAUSE: {"reason": _REASON},
    CommandKind.RESUME: {"confirm": _Arg(bool), "reason": _REASON},
    CommandKind.FLATTEN: {"symbol": _Arg(str, pattern=_SYMBOL)},
    CommandKind.EMERGENCY_STOP: {"reason": _REASON},
    CommandKind.ACK_ALERT: {"id": _Arg(int), "all": _Arg(bool)},
    CommandKind.TRAIN: {"reason": _REASON},
    CommandKind.PROMOTE: {"version": _Arg(str, True, _VERSION), "reason": _REASON},
    CommandKind.ROLLBACK: {"reason": _REASON},
    CommandKind.RETIRE: {"version": _Arg(str, True, _VERSION), "reason": _REASON},
    CommandKind.BACKTEST: {
        "verb": _Arg(str, pattern=re.compile("backtest|sweep")),
        "argv": _Arg(str, max_len=2_000),
    },
    CommandKind.CASH_MOVEMENT: {"amount": _Arg(float, True), "reason": _Arg(str, True)},
    CommandKind.RECONCILE: {"reason": _REASON},
    CommandKind.ADOPT_BROKER: {"reason": _Arg(str, True, max_len=MAX_REASON)},
}


def command_kind(kind: object) -> CommandKind:
    try:
        return CommandKind(str(kind)) if isinstance(kind, str) else CommandKind("")
    except ValueError:
        allowed = ", ".join(k.value for k in CommandKind)
        shown = repr(kind)[:40]
        raise CommandError(f"unknown command {shown}; allowed: {allowed}") from None


def validate_actor(actor: object) -> str:
    """`cockpit:NAME` or `cli:NAME`: who queued the command, as recorded in the audit."""
    if not isinstance(actor, str) or not _ACTOR.fullmatch(actor):
        raise CommandError(
            f"requester {repr(actor)[:40]} is not cockpit:NAME or cli:NAME"
            " (NAME: letters, digits, . _ @ -, at most 64)"
        )
    return actor


def cockpit_actor(operator: str = "operator") -> str:
    return validate_actor(f"cockpit:{operator}")


def cli_actor() -> str:
    """`cli:USER`, with the login name reduced to the allowed characters."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "operator"
    name = re.sub(r"[^A-Za-z0-9._@-]", "_", user)[:64] or "operator"
    return validate_actor(f"cli:{name}")


def _check(kind: CommandKind, name: str, value: object, spec: _Arg) -> None:
    # bool is an int in Python: an `id` of true is not an id, a `confirm` of 1 not a yes.
    # A JSON number without a fraction reads as int; it is still a valid float.
    accepted = (int, float) if spec.type is float else (spec.type,)
    ok = isinstance(value, accepted) and (spec.type is bool or not isinstance(value, bool))
    if not ok:
        raise CommandError(
            f"{kind.value}: {name} must be {spec.type.__name__}, not {type(value).__name__}"
        )
    if isinstance(value, str):
        if len(value) > spec.max_len:
            raise CommandError(
                f"{kind.value}: {name} is {len(value)} characters; at most {spec.max_len}"
            )
        if spec.pattern is not None and not spec.pattern.fullmatch(value):
            raise CommandError(f"{kind.value}: {name} {value[:40]!r} is not a valid {name}")


def validate_args(kind: CommandKind, args: object) -> dict[str, Any]:
    """The arguments if they fit the kind's fixed set; CommandError naming the problem."""
    if not isinstance(args, dict):
        raise CommandError(f"{kind.value}: arguments must be an object, not {type(args).__name__}")
    spec = ARGUMENTS.get(kind)
    if spec is None:  # a new kind must say which arguments it takes before it can run
        raise CommandError(f"{kind.value}: no argument rules are defined for this command")
    unknown = sorted(set(args) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise CommandError(
            f"{kind.value}: unknown argument {str(unknown[0])[:40]!r}; allowed: {allowed}"
        )
    for name, arg in spec.items():
        if name in args:
            _check(kind, name, args[name], arg)
        elif arg.required:
            raise CommandError(f"{kind.value} needs {name}")
    if kind is CommandKind.ACK_ALERT and ("id" in args) == (args.get("all") is True):
        raise CommandError("ack_alert needs either an alert id or all: true")
    return dict(args)


def parse_row(row: CommandRow) -> Command:
    """The engine's check of a stored row: the same rules as enqueue_command."""
    kind = command_kind(row.kind)
    text = "{}" if row.args is None else row.args
    if not isinstance(text, str):
        raise CommandError(f"arguments must be JSON text, not {type(text).__name__}")
    if len(text) > MAX_ARGS_CHARS:
        raise CommandError(f"arguments are {len(text)} characters; at most {MAX_ARGS_CHARS}")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"arguments are not valid JSON ({str(exc)[:80]})") from None
    args = validate_args(kind, raw)
    actor = validate_actor(row.requested_by)
    at = row.requested_at
    if not isinstance(at, int) or isinstance(at, bool):
        raise CommandError(f"requested_at must be epoch milliseconds, not {repr(at)[:40]}")
    return Command(row.id, kind, args, at, actor, CommandStatus.PENDING, None, None)


def _row_to_command(row: sqlite3.Row | tuple[Any, ...]) -> Command:
    """A stored command for display; a row that does not parse shows its args as empty."""
    r = tuple(row)
    try:
        args = json.loads(r[2] or "{}")
    except ValueError:
        args = {}
    return Command(
        id=r[0],
        kind=r[1],
        args=args if isinstance(args, dict) else {},
        requested_at=r[3],
        requested_by=r[4],
        status=CommandStatus(r[5]),
        result=r[6],
        done_at=r[7],
    )


_COLUMNS = "id, kind, args, requested_at, requested_by, status, result, done_at"


def _connect(path: str | os.PathLike[str] | None) -> sqlite3.Connection:
    file = db_path(path)
    if not file.exists():
        ensure_schema(file)
    conn = sqlite3.connect(file, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def enqueue_command(
    kind: CommandKind | str,
    args: dict[str, Any] | None = None,
    requested_by: str = "cockpit:operator",
    *,
    db: str | os.PathLike[str] | None = None,
) -> int:
    """Queue a command for the engine and return its id.

    Raises CommandError, writing nothing, when the kind, an argument or the
    requester is not allowed. If the same command (kind and args) is still
    pending, its id is returned and nothing is inserted, so a double click sends
    one command.
    """
    kind = command_kind(kind)
    payload = json.dumps(validate_args(kind, args or {}), sort_keys=True)
    if len(payload) > MAX_ARGS_CHARS:
        raise CommandError(f"arguments are {len(payload)} characters; at most {MAX_ARGS_CHARS}")
    validate_actor(requested_by)
    conn = _connect(db)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT id FROM commands WHERE status = 'pending' AND kind = ? AND args = ?",
                (kind.value, payload),
            ).fetchone()
            if row:
                return int(row[0])
            cur = conn.execute(
                "INSERT INTO commands (kind, args, requested_at, requested_by, status)"
                " VALUES (?, ?, ?, ?, 'pending')",
                (kind.value, payload, now_ms(), requested_by),
            )
            return int(cur.lastrowid or 0)
    finally:
        conn.close()


def get_command(command_id: int, *, db: str | os.PathLike[str] | None = None) -> Command | None:
    conn = _connect(db)
    try:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM commands WHERE id = ?", (command_id,)
        ).fetchone()
        return _row_to_command(row) if row else None
    finally:
        conn.close()


def wait_for_command(
    command_id: int, timeout: float, *, db: str | os.PathLike[str] | None = None
) -> Command | None:
    """Poll until the command is done or failed; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        cmd = get_command(command_id, db=db)
        if cmd and cmd.status in FINISHED:
            return cmd
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def data_version(conn: sqlite3.Connection) -> int:
    """A number that changes whenever another connection commits (PRAGMA
    data_version): rows queued by the cockpit or the CLI change it, the engine's
    own writes do not. Comparing it costs no read of any table."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def pending_rows(conn: sqlite3.Connection) -> list[CommandRow]:
    """Pending rows, oldest first, unparsed: the engine checks each on its own."""
    rows = conn.execute(
        "SELECT id, kind, args, requested_at, requested_by FROM commands"
        " WHERE status = 'pending' ORDER BY id"
    ).fetchall()
    return [CommandRow(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def claim(conn: sqlite3.Connection, command_id: int) -> bool:
    """Mark a pending row `running` (in the caller's transaction); False if it was taken."""
    cur = conn.execute(
        "UPDATE commands SET status = 'running' WHERE id = ? AND status = 'pending'",
        (command_id,),
    )
    return cur.rowcount > 0


def finish(
    conn: sqlite3.Connection, command_id: int, status: CommandStatus, result: str, now: int
) -> None:
    conn.execute(
        "UPDATE commands SET status = ?, result = ?, done_at = ? WHERE id = ?",
        (status.value, result, now, command_id),
    )


def running_ids(conn: sqlite3.Connection) -> list[int]:
    """Rows a crash left `running`."""
    return [int(r[0]) for r in conn.execute("SELECT id FROM commands WHERE status = 'running'")]


def pending_stop(conn: sqlite3.Connection) -> CommandKind | None:
    """An emergency stop or a pause still waiting in the queue (the stop first)."""
    row = conn.execute(
        "SELECT kind FROM commands WHERE status = 'pending'"
        " AND kind IN ('emergency_stop', 'pause') ORDER BY kind LIMIT 1"
    ).fetchone()
    return None if row is None else CommandKind(row[0])
