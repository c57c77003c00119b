"""The cockpit's pages, one file per page, listed in `app.py`'s PAGES.

Here: layout and widgets only; the helpers every page shares are `cockpit.ui`.

Not here: queries or trading code. A page reads through a read model in
`cockpit/` and writes only by queueing a command (`store.commands`);
tests/test_architecture.py enforces both.
"""
