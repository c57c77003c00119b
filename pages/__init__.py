"""The cockpit's pages, one file per page, listed in `app.py`'s PAGES.

Here: layout and widgets only, with `ui` holding the helpers every page shares
(tables, charts, the sidebar, sending a command).

Not here: queries or trading code. A page reads through a read model in `state/`
and writes only by queueing a command; tests/test_architecture.py enforces both.
"""
