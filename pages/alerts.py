"""Alerts: the log filtered by severity, source and time; acknowledge one or all;
alert counts over time; what reached the operator outside the cockpit and what did not."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from cockpit import alerts_views, ui

ui.require_access()

ui.page_header("Alerts")

w1, w2 = st.columns([3, 1])
with w1:
    since = ui.window_picker("al_window", default="1 week", market=False)
unacked_only = w2.toggle("Unacknowledged only", key="al_unacked")
f1, f2 = st.columns(2)
severities = f1.multiselect("Severity", list(alerts_views.SEVERITIES), key="al_sev")
sources = f2.multiselect("Source", alerts_views.alert_sources(ui.db()), key="al_src")
flt = alerts_views.AlertFilter(tuple(severities), tuple(sources), since, None, unacked_only)


def _ack(alert_id: int | None) -> None:
    # Acknowledgement is a command like any other: the engine applies and audits it.
    args = {"all": True} if alert_id is None else {"id": alert_id}
    if ui.send_command("ack_alert", args) is not None:
        st.toast("Acknowledgement sent; the engine applies it within a second")


@st.fragment(run_every=ui.refresh_seconds())
def log() -> None:
    total = alerts_views.alerts_count(ui.db(), flt)
    rows = alerts_views.alerts(ui.db(), flt)
    unacked = alerts_views.alerts_count(ui.db(), alerts_views.AlertFilter(unacked_only=True))
    a1, a2 = st.columns([3, 1])
    a1.caption(f"{total} alerts match; the newest {len(rows)} are shown. {unacked} unacknowledged.")
    if a2.button("Acknowledge all", key="ack_all", disabled=unacked == 0, width="stretch"):
        _ack(None)
        st.rerun(scope="fragment")
    if rows.empty:
        ui.empty_state("No alerts match these filters.")
        return
    open_rows = rows.loc[rows["acked_at"].isna()]
    labels: dict[int, str] = {
        int(i): f"#{i} {severity} · {title}"
        for i, severity, title in zip(
            open_rows["id"].tolist(),
            open_rows["severity"].tolist(),
            open_rows["title"].tolist(),
            strict=True,
        )
    }
    if labels:
        b1, b2 = st.columns([3, 1])
        pick = b1.selectbox(
            "Acknowledge one",
            list(labels),
            format_func=labels.__getitem__,
            key="ack_pick",
            label_visibility="collapsed",
        )
        if b2.button("Acknowledge", key="ack_one", width="stretch"):
            _ack(int(pick))
            st.rerun(scope="fragment")
    ui.table(
        rows,
        time_columns=("ts", "last_ts", "acked_at"),
        key="alerts_table",
        column_config={"id": st.column_config.NumberColumn(format="%d")},
    )


log()

st.subheader("Alerts over time")
bucket = ui.bucket_ms(since)
counts = alerts_views.alert_counts_over_time(ui.db(), flt, bucket)
if counts.empty:
    ui.empty_state("Nothing to count in this window.")
else:
    fig = go.Figure()
    for severity in reversed(alerts_views.SEVERITIES):
        part = counts[counts["severity"] == severity]
        if part.empty:
            continue
        fig.add_trace(
            go.Bar(
                x=ui.local_times(part["bucket"]),
                y=part["alerts"],
                name=severity,
                marker={"color": ui.SEVERITY_COLORS[severity]},
                width=bucket * 0.9,
            )
        )
    fig.update_layout(barmode="stack", yaxis_title=f"alerts per {ui.bucket_label(bucket)}")
    ui.time_axis(fig, since, market=False)
    ui.chart(fig, height=300, key="alert_counts")

st.subheader("Deliveries outside the cockpit")
dead_only = st.toggle("Dead letters only", key="al_dead")
sent = alerts_views.deliveries(ui.db(), dead_only=dead_only)
if sent.empty:
    ui.empty_state(
        "No dead letters."
        if dead_only
        else "No alert has been sent to a webhook, email or Telegram."
    )
else:
    ui.table(sent, time_columns=("ts",), key="deliveries_table")
