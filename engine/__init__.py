"""The headless engine: one process that owns the database's writer and trades.

Here, by what each part does in the running process: `process/` (wiring, jobs,
lease, command handlers, trading-state control, the CLI verbs), `market/` (feeds,
calendars, indicators), `decide/` (regime, strategy, exits, sizing), `risk/` (the
gate's pure checks and the monitor), `execution/` (OMS, portfolio, brokers),
`ml/` and `alerts/`. `cycle` runs one cycle through them; `config` and `domain`
are shared with the cockpit.

Not here: the cockpit (`app.py`, `pages/`, `cockpit/`), which never imports the
engine's internals, and the store (`store/`), which holds every SQL statement.
"""

import store  # noqa: F401  # first, so that sqlite_utils loads without pandas (store/__init__.py)
