"""Overview: account figures, equity and drawdown, open positions, latest fills."""

from __future__ import annotations

from pages import ui

ui.page_header("Overview")
ui.empty_state("The overview is being built.", ui.no_engine_hint())
