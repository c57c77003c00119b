"""The headless engine: one process that owns the database's writer and trades.

Here: the process and its jobs (runner, lease, commands, housekeeping, the CLI
verbs), the cycle's stages (feeds, indicators, regime, strategy, sizing, exits),
the risk gate and monitor (`risk/`), order management and the portfolio (`oms`,
`portfolio`, `brokers/`), machine learning (`models/`) and alerting (alerts,
notify, audit, digest, deliveries). `domain` and `config` are shared with the
cockpit.

Not here: the cockpit (`app.py`, `pages/`), which never imports the engine's
internals, and the store's schema and read models (`state/`). Engine modules that
still run SQL of their own are the debt listed in tests/test_architecture.py.
"""
