"""A CLI verb's handler, imported only when that verb runs.

`python -m engine run` builds the whole parser; with every verb's module imported
eagerly it paid for the backtester's and the trainer's imports on each start.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable


def deferred(target: str) -> Callable[[argparse.Namespace], int]:
    """`"package.module:function"` as a handler that imports the module on first call."""
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"deferred({target!r}): use 'module:function'")

    def run(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), name
        )
        return int(handler(args))

    run.__qualname__ = run.__name__ = f"deferred:{target}"
    return run
