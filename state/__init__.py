"""The state store (SQLite, WAL) and everything that reads it for the cockpit.

Here: connections and the single-writer rule (`db`), the core migrations (`schema`),
the command queue that is the cockpit's only write path (`commands`), the engine's
status (`status`), the secrets store, and the cockpit's typed read models (`views`
and the `*_views` modules, one concern each), its password (`auth`) and autostart
(`engine_control`).

Not here: trading behaviour. Nothing in this package changes an order, a position
or the trading state; the engine applies commands and owns every such write.
"""
