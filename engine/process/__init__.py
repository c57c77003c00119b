"""The engine process: wiring, the scheduler and its jobs, and the command line.

Here: the runner (builds everything, runs the jobs), the lease (one engine per
database), the command handlers, the trading-state transitions (`control`),
housekeeping and backups, the Prometheus metrics, logging, and the CLI verbs.

Not here: what a cycle decides (`market`, `decide`, `risk`, `execution`).
"""
