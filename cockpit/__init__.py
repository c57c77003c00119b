"""What only the cockpit uses: its read models, UI helpers, password and autostart.

Here: the typed read models the pages draw (`views` and the `*_views` modules),
the helpers every page shares (`ui`), the password (`auth`) and starting an
engine when none is alive (`autostart`). The pages themselves stay in `pages/`
and the entry point in `app.py`, where Streamlit expects them.

Not here: anything that writes trading state. The cockpit reads, and writes only
by queueing a command (`store.commands`).
"""
