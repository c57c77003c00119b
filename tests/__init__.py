"""The suite: unit and integration tests on real SQLite files, the real scheduler and
real local HTTP and SMTP receivers; `browser/` drives Debian's chromium against a
real Streamlit server (`-m browser`). `*_support.py` and `cockpit_fixtures.py` hold
shared helpers, not tests.

Not here: timings. Speed is measured by the `bench/` scripts, never asserted.
"""
