"""Queue a command for the running engine and wait for its answer: the one tail
every CLI verb that acts on trading shares (`engine pause`, `engine models
promote`, `engine reconcile`, ...).

Exit codes follow the engine CLI: 0 done, 1 failed, 3 no engine answered in time
(the command stays queued and runs when the engine starts).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from store.commands import CommandKind, CommandStatus, cli_actor, enqueue_command, wait_for_command

OK, FAILED, NO_ENGINE = 0, 1, 3


def queue_and_wait(
    kind: CommandKind,
    payload: dict[str, Any],
    *,
    db: str | os.PathLike[str] | None,
    timeout: float,
) -> tuple[int, str]:
    """Queue `kind` as the command-line user, wait up to `timeout` s; (exit code, what to say)."""
    command_id = enqueue_command(kind, payload, requested_by=cli_actor(), db=db)
    done = wait_for_command(command_id, timeout, db=db)
    if done is None:
        return NO_ENGINE, (
            f"command #{command_id} ({kind.value}) is queued but no engine answered within"
            f" {timeout:.0f} s; it runs when the engine starts"
        )
    if done.status is CommandStatus.DONE:
        return OK, f"{kind.value}: {done.result}"
    return FAILED, f"{kind.value} failed: {done.result}"


def run_queued(
    kind: CommandKind,
    payload: dict[str, Any],
    *,
    db: str | os.PathLike[str] | None,
    timeout: float,
) -> int:
    """`queue_and_wait`, its answer printed (stdout when done, stderr otherwise)."""
    code, message = queue_and_wait(kind, payload, db=db, timeout=timeout)
    print(message, file=sys.stderr if code else sys.stdout)
    return code
