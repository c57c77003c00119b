"""Backtests: runs with their key figures, side-by-side comparison with overlaid
equity, one run's report, sweep heatmaps, and a launcher that queues a `backtest`
command (the engine runs it in its own process; progress shows here)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit import components

from cockpit import backtests_views as backtests
from cockpit import ui

ui.require_access()
ui.page_header("Backtests", "History and stress runs on the engine's own code path.")

FIGURES: dict[str, tuple[str, Callable[[float], str]]] = {
    "total_return": ("Total return", ui.pct),
    "cagr": ("CAGR", ui.pct),
    "sharpe": ("Sharpe", "{:.2f}".format),
    "max_drawdown": ("Max drawdown", ui.pct),
    "trades": ("Trades", lambda v: f"{v:,.0f}"),
    "win_rate": ("Win rate", ui.pct),
    "final_equity": ("Final equity", ui.money),
}


def _figure(run: backtests.RunRow, key: str) -> str:
    value = run.metrics.get(key)
    if not isinstance(value, int | float):
        return "–"
    return str(FIGURES[key][1](value))


with st.expander("Launch a backtest or a sweep", expanded=False), st.form("bt_launch"):
    verb = st.radio("Run", ["backtest", "sweep"], horizontal=True, key="bt_verb")
    argv = st.text_input(
        "Arguments (as on the command line)",
        value="--sim --bars 2000 --bar-interval 1h --strategy regime",
        help="e.g. --data DIR --from 2010-01-01 --strategy sma_cross --param fast=10"
        " --risk-off; a sweep takes --param fast=5:50:5 --metric sharpe",
        key="bt_argv",
    )
    if st.form_submit_button("Queue", type="primary"):
        command_id = ui.send_command("backtest", {"verb": verb, "argv": argv})
        if command_id is not None:
            st.toast(f"Queued as command #{command_id}; the engine starts it in its own process")


@st.fragment(run_every=ui.refresh_seconds())
def runs_table() -> None:
    runs = backtests.list_runs(ui.db())
    if not runs:
        ui.empty_state("No backtests yet.", "Run `python -m engine backtest` or launch one above.")
        return
    for run in [r for r in runs if r.status == "running"]:
        st.progress(run.progress, text=f"{run.kind} {run.run_id}: {run.progress:.0%}")
    rows = [
        {
            "run": r.run_id,
            "kind": r.kind,
            "status": r.status,
            "strategy": r.strategy,
            "symbols": r.symbols,
            **{label: _figure(r, k) for k, (label, _) in FIGURES.items()},
            "message": r.message,
        }
        for r in runs
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


runs_table()
runs = backtests.list_runs(ui.db())
done = [r for r in runs if r.status == "done" and r.kind == "backtest"]
sweeps = [r for r in runs if r.status == "done" and r.kind == "sweep"]

if done:
    st.subheader("Compare")
    chosen = st.multiselect(
        "Runs", [r.run_id for r in done], default=[r.run_id for r in done[:2]], key="bt_cmp"
    )
    picked = [r for r in done if r.run_id in chosen]
    if picked:
        st.dataframe(
            pd.DataFrame(
                {r.run_id: {label: _figure(r, k) for k, (label, _) in FIGURES.items()}
                 for r in picked}
            ),
            width="stretch",
        )  # fmt: skip
        fig = go.Figure()
        for r in picked:
            curve = backtests.equity_of(r)
            fig.add_trace(go.Scatter(x=curve["ts"], y=curve["equity"], name=r.run_id))
        fig.update_layout(yaxis_title="equity")
        ui.chart(fig, height=360, key="bt_equity")

    st.subheader("Report")
    one = st.selectbox("Run", [r.run_id for r in done], key="bt_report")
    run = next(r for r in done if r.run_id == one)
    html = backtests.html_of(run, "report.html")
    if html is None:
        st.warning(f"No report at {run.out_dir}: the folder was moved or deleted.")
    else:
        st.download_button("Download report.html", html, file_name=f"{one}.html")
        components.v1.html(html, height=1200, scrolling=True)

if sweeps:
    st.subheader("Sweep heatmaps")
    one = st.selectbox("Sweep", [r.run_id for r in sweeps], key="bt_sweep")
    run = next(r for r in sweeps if r.run_id == one)
    best = run.metrics.get("best")
    st.caption(f"Best {run.metrics.get('metric')}: {run.metrics.get('best_value')} at {best}")
    html = backtests.html_of(run, "heatmap.html")
    if html is not None:
        components.v1.html(html, height=560, scrolling=True)
