"""Regime: the current call per symbol, price with regime bands, the indicators behind
the call, time spent in each regime, and rules against ML where a model made calls."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cockpit import regime_views, ui

ui.require_access()

ui.page_header("Regime")
symbols = regime_views.regime_symbols(ui.db())
if not symbols:
    ui.empty_state(
        "No regime calls yet: the engine has not completed a cycle.", ui.no_engine_hint()
    )
    st.stop()


@st.fragment(run_every=ui.refresh_seconds())
def current() -> None:
    df = regime_views.current_regimes(ui.db())
    ui.table(
        df,
        time_columns=("ts",),
        key="current_regimes",
        column_config={"confidence": st.column_config.ProgressColumn(min_value=0, max_value=1)},
    )


current()

left, right = st.columns([1, 3])
symbol = left.selectbox("Symbol", symbols, key="regime_symbol")
with right:
    since = ui.window_picker("regime_window", default="1 day")


def _bands(df: pd.DataFrame, x: pd.Series) -> list[go.Bar]:
    """One bar trace per regime, spanning the price range: bands without a shape per call."""
    lo, hi = float(df["close"].min()), float(df["close"].max())
    pad = (hi - lo) * 0.05 or 1.0
    traces = []
    for regime, color in ui.REGIME_COLORS.items():
        mask = df["regime"] == regime
        if not mask.any():
            continue
        traces.append(
            go.Bar(
                x=x[mask],
                y=[hi - lo + 2 * pad] * int(mask.sum()),
                base=lo - pad,
                marker={"color": color, "line": {"width": 0}},
                name=regime,
                hoverinfo="skip",
            )
        )
    return traces


@st.fragment(run_every=ui.refresh_seconds())
def timeline() -> None:
    df = regime_views.regime_timeline(ui.db(), symbol, since)
    priced = df.dropna(subset=["close"])
    if priced.empty:
        ui.empty_state(f"No prices for {symbol} in this window.")
        return
    x = ui.local_times(priced["ts"])
    fig = go.Figure(_bands(priced, x))
    fig.add_trace(
        go.Scatter(x=x, y=priced["close"], name=symbol, mode="lines", line={"color": "#e0e0e0"})
    )
    fig.update_layout(
        bargap=0, barmode="overlay", title=f"{symbol}: close and regime", xaxis_title=ui.tz_name()
    )
    ui.chart(fig, height=380, key="regime_chart")


timeline()

c1, c2 = st.columns(2)
with c1:
    st.subheader("Behind the latest call")
    ts, features = regime_views.latest_features(ui.db(), symbol)
    if not features:
        ui.empty_state("The engine stored no indicators with this call.")
    else:
        st.caption(f"{symbol} at {ui.fmt_ts(ts)}")
        ui.table(
            pd.DataFrame({"indicator": list(features), "value": list(features.values())}),
            key="features",
        )
with c2:
    st.subheader("Time in each regime")
    spent = regime_views.time_in_regime(ui.db(), symbol, since)
    fig = go.Figure(
        go.Bar(
            x=spent["regime"],
            y=spent["hours"],
            text=[ui.pct(s, digits=1) for s in spent["share"]],
            marker={"color": [ui.REGIME_SOLID.get(r, "#888") for r in spent["regime"]]},
        )
    )
    fig.update_layout(yaxis_title="hours", showlegend=False)
    ui.chart(fig, height=300, key="time_in_regime")

st.subheader("Rules against ML")
sources = regime_views.regime_sources(ui.db(), symbol, since)
versus = regime_views.rules_vs_ml(ui.db(), symbol, since)
if versus.empty:
    ui.empty_state(
        f"No ML calls for {symbol} in this window: every call came from the rules.",
        "The ML model overrides the rules only above its confidence threshold.",
    )
else:
    agree = int(versus.loc[versus["rules_regime"] == versus["ml_regime"], "calls"].sum())
    total = int(versus["calls"].sum())
    st.metric(
        "ML calls agreeing with the rules", f"{agree} / {total}", help="where ML made the call"
    )
    matrix = versus.pivot_table(
        index="rules_regime", columns="ml_regime", values="calls", fill_value=0, aggfunc="sum"
    )
    fig = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=list(matrix.columns),
            y=list(matrix.index),
            colorscale="Blues",
            text=matrix.to_numpy(),
            texttemplate="%{text}",
        )
    )
    fig.update_layout(xaxis_title="ML said", yaxis_title="rules said")
    ui.chart(fig, height=320, key="rules_vs_ml")
ui.table(sources, key="sources", column_config={"avg_confidence": ui.PCT})
