"""The engine process: wiring, the scheduler and its jobs, and the command line.

Here: the runner (`Engine`: opens, runs and closes), wiring (feed, broker, strategy,
ML, the opened engine's parts), jobs (commands, cycle, monitor, heartbeat, daily),
schedule (the scheduler and the signals), the watchdog, the lease (one engine per
database), the command handlers (one table), housekeeping and backups, the
Prometheus metrics, logging, and the CLI verbs.

Not here: the cycle and the trading state (`engine.cycle`), what a cycle decides
(`market`, `decide`, `risk`, `execution`).
"""
