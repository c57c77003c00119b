"""Risk: every limit with its current use, the intents the gate denied and why, the
kill-switch and pause history, and the coming sessions and event blackouts."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from cockpit import risk_views, ui

ui.require_access()

ui.page_header(
    "Risk", "Limits from the configuration's [risk] section; the gate and monitor enforce them."
)
risk = ui.settings().risk
COLUMNS = 5


def _shown(value: float, unit: str) -> str:
    if unit == "money":
        return ui.money(value)
    return f"{value:,.0f}" if unit == "count" else f"{value:,.2f}"


def _gauge(g: risk_views.Gauge, row: int, column: int) -> go.Indicator:
    color = (
        ui.COLORS["up"]
        if g.share < 0.7
        else ui.COLORS["warn"]
        if g.share < 1
        else ui.COLORS["down"]
    )
    return go.Indicator(
        mode="gauge+number",
        value=g.value,
        number={"valueformat": ",.0f" if g.unit == "count" else ",.2f"},
        title={
            "text": f"{g.label}<br><sub>limit {_shown(g.limit, g.unit)}</sub>",
            "font": {"size": 13},
        },
        gauge={
            "axis": {
                "range": [0, max(g.limit * 1.25, g.value, 1e-9)],
                "nticks": 4,
                "tickformat": "~s",
            },
            "bar": {"color": color},
            "threshold": {"line": {"color": ui.COLORS["down"], "width": 3}, "value": g.limit},
        },
        domain={"row": row, "column": column},
    )


def _gauges(view: risk_views.LimitsView) -> go.Figure:
    # One figure on a layout grid: make_subplots and a trace added per cell cost a
    # plotly validation each, most of the page's run.
    rows = math.ceil(len(view.gauges) / COLUMNS)
    return go.Figure(
        [_gauge(g, i // COLUMNS, i % COLUMNS) for i, g in enumerate(view.gauges)],
        layout={
            "grid": {"rows": rows, "columns": COLUMNS, "pattern": "independent", "ygap": 0.3},
            "margin": {"l": 30, "r": 30, "t": 60, "b": 10},
        },
    )


@st.fragment(run_every=ui.refresh_seconds())
def limits() -> None:
    status = ui.engine_status()
    if status.present:
        ui.state_badge(status.trading_state, status.state_reason)
    view = risk_views.limit_usage(ui.db(), ui.now(), risk)
    if not view.gauges:
        ui.empty_state(
            "No limits in use yet: the engine has not stored an account.", ui.no_engine_hint()
        )
        return
    source = (
        "live from the monitor"
        if view.source == "engine"
        else "computed from the last stored snapshot"
    )
    st.caption(f"As of {ui.fmt_ts(view.as_of)}, {source}.")
    ui.chart(_gauges(view), height=200 * math.ceil(len(view.gauges) / COLUMNS), key="risk_gauges")
    ui.table(
        view.frame(),
        key="risk_limits",
        column_config={"value": ui.MONEY, "maximum": ui.MONEY, "use": ui.PCT},
    )


limits()

st.subheader("Denied intents")
since = ui.window_picker("risk_window", default="1 day")
by_check = risk_views.denials_by_check(ui.db(), since)
if by_check.empty:
    ui.empty_state("The gate has denied nothing in this window.")
else:
    fig = go.Figure(go.Bar(x=by_check["denied"], y=by_check["check_name"], orientation="h"))
    fig.update_layout(yaxis={"autorange": "reversed"}, xaxis_title="denied intents")
    ui.chart(fig, height=60 + 28 * len(by_check), key="risk_denials_chart")
    ui.table(
        risk_views.denials(ui.db(), since),
        time_columns=("ts",),
        key="risk_denials",
        column_config={"qty": ui.QTY},
    )

st.subheader("Kill switch and pause history")
history = risk_views.state_history(ui.db())
if history.empty:
    ui.empty_state("No trading-state change on record: the engine has stayed as it started.")
else:
    counts = history["event"].value_counts()
    m1, m2, m3 = st.columns(3)
    m1.metric("Kill switches", int(counts.get("kill switch", 0)))
    m2.metric("Emergency stops", int(counts.get("emergency stop", 0)))
    m3.metric("Pauses", int(counts.get("pause", 0)))
    ui.table(history, time_columns=("ts",), key="risk_history")

st.subheader("Sessions and event blackouts")
cal = risk_views.calendar(risk, ui.market_now())
if cal.error:
    st.error(f"The events file has an error: {cal.error}")
s1, s2 = st.columns(2)
with s1:
    if cal.sessions.empty:
        ui.empty_state(
            "No exchange calendar configured: the simulated symbols trade around the clock.",
            'Set `risk.exchanges`, e.g. `{AAPL = "XNYS"}`, to follow an exchange.',
        )
    else:
        ui.table(cal.sessions, time_columns=("open", "close"), key="risk_sessions")
with s2:
    if cal.blackouts.empty:
        ui.empty_state(
            "No event blackouts ahead.",
            "Add dated events to events.csv (its header explains the format).",
        )
    else:
        ui.table(cal.blackouts, time_columns=("start", "end"), key="risk_blackouts")


st.subheader("Broker reconciliation")
st.caption(
    "At start and after every reconnect the engine compares its positions and open"
    " orders with the broker's; a difference halts trading with a CRITICAL alert listing"
    " it. Check the account first: adopting books the broker's positions at the last"
    " price and cancels the orders the engine does not know, with your reason in the"
    " audit trail, and trading stays HALTED until resumed."
)
r1, r2 = st.columns([3, 1])
reason = r1.text_input("Why the broker's positions are right", key="adopt_reason")
confirmed = r1.checkbox("I checked the account at the broker", key="adopt_confirm")
if r2.button(
    "Adopt the broker's positions",
    key="adopt_broker",
    disabled=not (reason.strip() and confirmed),
    width="stretch",
):
    ui.send_command("adopt_broker", {"reason": reason.strip()})
    st.success("Queued: the engine books the broker's positions; resume separately.")
if r2.button("Reconcile now", key="reconcile_now", width="stretch"):
    ui.send_command("reconcile")
    st.success("Queued: the engine compares its book with the broker's.")
