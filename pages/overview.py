"""Overview: account figures, equity with drawdown, open positions, latest fills."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from cockpit import overview_views, ui

ui.require_access()

ui.page_header("Overview")
since = ui.window_picker("overview_window")
limit = ui.settings().risk.max_open_positions


@st.fragment(run_every=ui.refresh_seconds())
def live() -> None:
    s = overview_views.account_summary(ui.db(), ui.now())
    if s.equity is None:
        ui.empty_state("No equity yet: the engine has not completed a cycle.", ui.no_engine_hint())
    cols = st.columns(6)
    cols[0].metric("Equity", ui.money(s.equity, digits=0), help=f"exactly {ui.money(s.equity)}")
    cols[1].metric("Day P&L", ui.money(s.day_pnl, signed=True))
    cols[2].metric("Total P&L", ui.money(s.total_pnl, signed=True))
    cols[3].metric("Drawdown", ui.pct(s.drawdown), help=f"worst on record {ui.pct(s.max_drawdown)}")
    cols[4].metric("Open positions", f"{s.open_positions} / {limit}")
    cols[5].metric("Trades today", s.trades_today, help=f"{s.fills_today} fills today")
    if s.as_of is not None:
        st.caption(f"As of {ui.fmt_ts(s.as_of)} ({ui.tz_name()})")
        _equity_chart()

    st.subheader("Open positions")
    positions = overview_views.open_positions(ui.db())
    if positions.empty:
        ui.empty_state("No open positions.")
    else:
        ui.table(
            positions,
            time_columns=("opened_at",),
            key="positions",
            column_config={
                "qty": ui.QTY,
                "avg_price": ui.PRICE,
                "last_price": ui.PRICE,
                "unrealized_pnl": ui.MONEY,
                "realized_pnl": ui.MONEY,
                "stop": ui.PRICE,
                "target": ui.PRICE,
            },
        )
        st.caption(f"Unrealized P&L {ui.money(s.unrealized, signed=True)}")

    st.subheader("Latest fills")
    fills = overview_views.latest_fills(ui.db())
    if fills.empty:
        ui.empty_state("No fills yet.")
    else:
        ui.table(
            fills,
            time_columns=("ts",),
            key="fills",
            column_config={
                "qty": ui.QTY,
                "price": ui.PRICE,
                "ref_price": ui.PRICE,
                "commission": ui.MONEY,
            },
        )


def _equity_chart() -> None:
    curve = overview_views.equity_curve(ui.db(), since)
    if curve.empty:
        return
    # No marks for a while: the engine was down. Break the line and say so.
    gaps = ui.time_gaps(curve["ts"])
    curve = ui.broken_at(curve, "ts", gaps)
    x = ui.local_times(curve["ts"])
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04
    )
    fig.add_trace(go.Scatter(x=x, y=curve["equity"], name="equity", mode="lines"), 1, 1)
    fig.add_trace(
        go.Scatter(
            x=x,
            y=-curve["drawdown"].astype(float),
            name="drawdown",
            mode="lines",
            fill="tozeroy",
            line={"color": ui.COLORS["down"]},
        ),
        2,
        1,
    )
    ui.mark_downtime(fig, gaps, "engine down")
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".1%", row=2, col=1)
    fig.update_xaxes(title_text=ui.tz_name(), row=2, col=1)
    ui.chart(fig, height=420, key="equity_chart")


live()
