"""The state store: SQLite in WAL mode, one writer, any number of readers.

Here: connections and the single-writer rule (`db`), the core migrations
(`schema`), the command queue that is the cockpit's only write path (`commands`),
the engine's status (`status`), the encrypted secrets and the backtest runs, and
one repository per aggregate: `orders`, `portfolio`, `account`, `risk`, `paper`.

Not here: trading behaviour, and queries shaped for one page (`cockpit/`). No
engine module runs SQL of its own (tests/test_architecture.py holds that).
"""

import sys


def _sqlite_utils_without_pandas() -> None:
    """Import sqlite_utils without letting it import pandas.

    sqlite_utils imports pandas (and pandas pyarrow) whenever it is installed,
    only to accept pandas values in inserts, which this project never passes. That
    was about half a second of every engine start and every CLI verb, on a path
    that otherwise never needs pandas. Where pandas is already loaded (the
    cockpit, a backtest) nothing changes. tests/test_start_imports.py checks that
    the engine's start path stays free of pandas.
    """
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` fail
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]


_sqlite_utils_without_pandas()
