"""What only the cockpit uses: its read models, UI helpers, password and autostart.

Here: one read model per page (`X_views` for `pages/X.py`, `status_views` for
the sidebar) over the shared query helpers (`reader`), the helpers every page
shares (`ui`), the password (`auth`) and starting an engine when none is alive
(`autostart`). Not here: policy; the go-live checklist is the engine's
(`engine.risk.golive`). The pages themselves stay in `pages/`
and the entry point in `app.py`, where Streamlit expects them.

Not here: anything that writes trading state. The cockpit reads, and writes only
by queueing a command (`store.commands`).
"""
