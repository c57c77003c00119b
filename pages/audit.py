"""Audit: whether the keyed hash chain verifies, its head against the anchored head,
and the newest audit rows (who did what, when and why)."""

from __future__ import annotations

import streamlit as st

from cockpit import ui
from cockpit.audit_views import audit_state

ui.require_access()

ui.page_header("Audit", "Every operator action and state change, in a keyed hash chain.")
state = audit_state(ui.db())
report = state.report
if report is None:
    if state.error:
        st.error(f"The audit chain cannot be read: {state.error}", icon=":material/key_off:")
    else:
        ui.empty_state("No audit trail yet.", ui.no_engine_hint())
    st.stop()

if report.ok:
    st.success(report.describe(), icon=":material/verified:")
else:
    st.error(report.describe(), icon=":material/gpp_bad:")
    st.caption("`python -m engine audit export --csv` writes every row for inspection.")

c1, c2, c3 = st.columns(3)
c1.metric("Rows", f"{report.rows:,}")
c2.metric("Head", f"#{report.head.id}" if report.head else "-")
c3.metric("Anchored head", f"#{report.anchor.id}" if report.anchor else "none yet")
if report.head:
    st.caption(f"Head hash `{report.head.hash}`")
if report.anchor and report.anchor.id >= 0:
    st.caption(f"Anchored hash `{report.anchor.hash}` at {ui.fmt_ts(report.anchor.ts)}")

if state.recent.empty:
    ui.empty_state("The chain is empty.")
else:
    st.subheader("Newest rows")
    ui.table(state.recent, time_columns=("ts",), key="audit_rows")
