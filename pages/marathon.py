"""Marathon: how a long paper-trading run is going, and whether it is ready to go live.

Uptime, cycles run, missed and failed; cycle time p50/p99 over time; errors per hour;
P&L per day; a go-live checklist computed from those facts.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cockpit import marathon_views, ui

ui.require_access()

ui.page_header("Marathon", "A paper-trading marathon and its go-live readiness.")
cfg = ui.settings()
thresholds = marathon_views.ReadinessThresholds(max_drawdown=cfg.risk.max_drawdown)
windows = {
    "1 day": marathon_views.DAY_MS,
    "1 week": 7 * marathon_views.DAY_MS,
    "30 days": 30 * marathon_views.DAY_MS,
}
choice = st.segmented_control("Charts over", list(windows), default="1 week", key="mar_window")
since = ui.now() - windows[choice or "1 week"]

facts = marathon_views.marathon_facts(ui.db(), ui.now(), thresholds.no_halt_days)
if facts.cycles == 0:
    ui.empty_state("No cycles yet: the marathon starts with the engine.", ui.no_engine_hint())
    st.stop()

uptime = (
    (ui.now() - facts.engine_started_at) / 1000
    if facts.engine_alive and facts.engine_started_at
    else None
)
c = st.columns(6)
c[0].metric("Uptime", ui.duration(uptime) if uptime is not None else "engine down")
c[1].metric(
    "Days run (wall)",
    f"{facts.days_run:.1f}",
    help=f"operations: wall time with cycles since {ui.fmt_ts(facts.first_cycle_at)}",
)
c[2].metric(
    "Market sessions",
    f"{facts.market_sessions:,}",
    help="strategy evidence: trading days of market time the engine has traded",
)
c[3].metric("Cycles run", f"{facts.cycles:,}")
c[4].metric(
    "Missed", f"{facts.missed:,}", help=f"{facts.gaps} gaps beyond 1.5 × the cycle interval"
)
c[5].metric("Failed", f"{facts.failed:,}")

daily = marathon_views.pnl_per_day(ui.db())
sharpe = marathon_views.sharpe_like(daily["ret"].dropna().astype(float).tolist())
bucket = ui.bucket_ms(since)
window = marathon_views.cycle_window(ui.db(), since, bucket)
p99 = window.p99_ms

st.subheader("Go-live readiness")
items = marathon_views.readiness(facts, sharpe, p99, thresholds)
passed = sum(i.passed for i in items)
(st.success if passed == len(items) else st.warning)(f"{passed} of {len(items)} checks pass.")
st.dataframe(
    pd.DataFrame(
        {
            "result": ["PASS" if i.passed else "FAIL" for i in items],
            "check": [i.name for i in items],
            "fact": [i.fact for i in items],
            "target": [i.target for i in items],
            "counted on": [i.clock for i in items],
        }
    ),
    hide_index=True,
    width="stretch",
    key="readiness",
)

times = window.times
down: list[tuple[int, int]] = []
left, right = st.columns(2)
with left:
    st.subheader("Cycle time")
    if times.empty:
        ui.empty_state("No cycles in this window.")
    else:
        # A bucket without a single cycle is time the engine was down.
        down = ui.time_gaps(times["bucket"], min_gap=1.5 * bucket)
        times = ui.broken_at(times, "bucket", down)
        x = ui.local_times(times["bucket"])
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=x, y=times["p50_ms"], name="p50", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=x, y=times["p99_ms"], name="p99", mode="lines+markers"))
        ui.mark_downtime(fig, down, "engine down")
        fig.update_layout(yaxis_title=f"ms per cycle (per {ui.bucket_label(bucket)})")
        ui.time_axis(fig, since, market=False)
        ui.chart(fig, height=300, key="cycle_times")
with right:
    st.subheader("Errors per hour")
    errors = marathon_views.errors_per_hour(ui.db(), since)
    if errors.empty:
        st.success("No failed cycles in this window.")
    else:
        fig = go.Figure(
            go.Bar(
                x=ui.local_times(errors["hour"]),
                y=errors["errors"],
                width=marathon_views.HOUR_MS * 0.9,
                marker={"color": ui.COLORS["down"]},
            )
        )
        ui.mark_downtime(fig, down, "engine down")
        fig.update_layout(yaxis_title="failed cycles per hour")
        ui.time_axis(fig, since, market=False)
        ui.chart(fig, height=300, key="errors_per_hour")

st.subheader("P&L per day")
if daily.empty:
    ui.empty_state("No equity marks yet.")
else:
    days = ui.local_times(daily["day"])
    fig = go.Figure(
        go.Bar(
            x=days,
            y=daily["pnl"],
            # a bar spans its local day, starting at midnight
            width=marathon_views.DAY_MS * 0.8,
            offset=marathon_views.DAY_MS * 0.1,
            marker={
                "color": [ui.COLORS["up"] if v >= 0 else ui.COLORS["down"] for v in daily["pnl"]]
            },
        )
    )
    fig.update_layout(yaxis_title="P&L", xaxis_title=f"trading day, market time ({ui.tz_name()})")
    ui.chart(fig, height=300, key="pnl_per_day")
