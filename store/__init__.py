"""The state store: SQLite in WAL mode, one writer, any number of readers.

Here: connections and the single-writer rule (`db`), the core migrations
(`schema`), the command queue that is the cockpit's only write path (`commands`),
the engine's status (`status`), the encrypted secrets and the backtest runs, and
one repository per aggregate: `orders`, `portfolio`, `account`, `risk`, `paper`.

Not here: trading behaviour, and queries shaped for one page (`cockpit/`). Engine
modules that still run SQL of their own are the debt listed in
tests/test_architecture.py; their queries belong here, one module per aggregate.
"""
