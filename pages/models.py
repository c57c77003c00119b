"""Models: the registry, champion against challenger, each version's walk-forward report,
drift over time, live against training accuracy, and the promote / rollback / retrain
commands (each behind a confirmation)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from cockpit import models_views, ui

ui.require_access()

ui.page_header("Models", "LightGBM direction and regime models; the champion trades.")
ml = ui.settings().ml
view = models_views.models_view(ui.db())


def confirmed_button(label: str, key: str, question: str, *, disabled: bool = False) -> bool:
    """A command button that does nothing until its confirmation box is ticked."""
    sure = st.checkbox(question, key=f"confirm_{key}", disabled=disabled)
    return st.button(label, key=key, disabled=disabled or not sure) and sure


def queued(command_id: int | None, what: str) -> None:
    if command_id is None:
        st.info(f"{what} was just sent; not sent twice.")
    else:
        st.success(f"{what} queued as command #{command_id}; the engine applies it.")


def retrain_control() -> None:
    if confirmed_button(
        "Retrain now", "retrain", "Train a new version now (it becomes challenger)"
    ):
        queued(ui.send_command("train", {}), "Retrain")


if not view.models:
    if ml.bootstrap:
        hint = "A bootstrap model is being trained on simulated history at the engine's start."
    else:
        hint = "ml.bootstrap is off: train one with `python -m engine train`."
    ui.empty_state("No model yet: the engine trades on the regime rules alone.", hint)
    retrain_control()
    st.stop()

# --------------------------------------------------------------------------- registry

st.subheader("Registry")
ui.table(
    view.table(),
    time_columns=("trained_at", "status_changed_at"),
    key="registry",
    column_config={
        c: ui.PCT
        for c in ("direction_accuracy", "direction_majority", "regime_accuracy", "regime_rules")
    },
)

champion, challenger = view.champion, view.challenger
left, right = st.columns(2)
for column, model, role in [(left, champion, "Champion"), (right, challenger, "Challenger")]:
    with column:
        if model is None:
            st.markdown(f"**{role}**: none")
            continue
        st.markdown(f"**{role}** `{model.version}`")
        st.metric(
            f"{role} direction accuracy (walk-forward)",
            ui.pct(model.accuracy("direction"), digits=1),
            f"{(model.accuracy('direction') - model.accuracy('direction', 'majority')) * 100:+.1f}"
            " pts vs majority",
        )
        if "regime" in model.heads:
            st.metric(
                f"{role} regime accuracy (walk-forward)",
                ui.pct(model.accuracy("regime"), digits=1),
            )
if champion is None:
    st.warning("No champion: the engine trades on rules only until one is promoted.")
if champion is not None and challenger is not None:
    advice = models_views.shadow_advice(
        ui.db(),
        champion.version,
        challenger.version,
        min_samples=ml.min_scored,
        horizon_bars=ml.horizon_bars,
    )
    st.caption(f"Shadow comparison: {advice.message}")

# --------------------------------------------------------------------------- actions

with st.expander("Promote, roll back, retrain", icon=":material/swap_horiz:"):
    others = [m.version for m in view.models if m.status != "champion"]
    a, b, c = st.columns(3)
    with a:
        target = st.selectbox("Version to promote", others, key="promote_version")
        if confirmed_button(
            "Promote", "promote", f"Make {target} the champion", disabled=target is None
        ):
            queued(ui.send_command("promote", {"version": target}), f"Promote {target}")
    with b:
        if confirmed_button(
            "Roll back",
            "rollback",
            "Restore the previous champion and retire the current one",
            disabled=champion is None,
        ):
            queued(ui.send_command("rollback", {}), "Rollback")
    with c:
        retrain_control()
    commands = models_views.model_commands(ui.db())
    if not commands.empty:
        ui.table(commands, time_columns=("requested_at",), key="model_commands")

# --------------------------------------------------------------------------- report

st.subheader("Training report")
versions = [m.version for m in view.models]
default = versions.index(champion.version) if champion else 0
chosen = view.get(st.selectbox("Version", versions, index=default, key="report_version"))
if chosen is not None:
    st.caption(
        f"{chosen.data_range.get('source', '')}; {chosen.data_range.get('rows')} rows;"
        f" horizon {chosen.params.get('horizon_bars')} bars; SHA-256 {chosen.sha256[:16]}…"
    )
    for head in chosen.heads:
        st.markdown(f"**{head.capitalize()} head**")
        st.dataframe(models_views.overall_table(chosen, head), key=f"overall_{head}")
        ui.table(
            models_views.fold_table(chosen, head),
            time_columns=("test_start", "test_end"),
            key=f"folds_{head}",
        )
        imp, cal = st.columns(2)
        importance = models_views.importance_table(chosen, head).head(12)
        fig = go.Figure(
            go.Bar(x=importance["gain_share"], y=importance["feature"], orientation="h")
        )
        fig.update_layout(title="Feature importance (gain share)", yaxis={"autorange": "reversed"})
        with imp:
            ui.chart(fig, height=340, key=f"importance_{head}")
        curve = models_views.calibration_table(chosen, head)
        fig = go.Figure(
            [
                go.Scatter(x=[0, 1], y=[0, 1], name="perfect", line={"dash": "dot"}),
                go.Scatter(
                    x=curve["mean_predicted"],
                    y=curve["observed"],
                    name="model",
                    mode="lines+markers",
                    text=curve["count"],
                ),
            ]
        )
        fig.update_layout(
            title="Calibration (out of fold)", xaxis_title="predicted", yaxis_title="observed"
        )
        with cal:
            ui.chart(fig, height=340, key=f"calibration_{head}")

# --------------------------------------------------------------------------- live


@st.fragment(run_every=ui.refresh_seconds() * 5)
def live() -> None:
    st.subheader("Live against training")
    accuracy = models_views.live_accuracy(ui.db())
    if accuracy.empty:
        ui.empty_state("No scored predictions yet: outcomes arrive one horizon after each bar.")
    else:
        ui.table(
            accuracy,
            key="live_accuracy",
            column_config={c: ui.PCT for c in ("live_accuracy", "training_accuracy")},
        )
    st.subheader("Drift")
    since = ui.window_picker("drift_window", "1 day")
    worst = models_views.latest_drift(ui.db())
    if worst.empty:
        ui.empty_state("No drift checks yet: the engine runs them every few minutes.")
        return
    history = models_views.drift_history(ui.db(), since=since)
    psi = history[history["kind"] == "feature_psi"]
    top = worst[worst["kind"] == "feature_psi"]["name"].head(6).tolist()
    fig = go.Figure(
        [
            go.Scatter(x=ui.local_times(g["ts"]), y=g["value"], name=name, mode="lines")
            for name, g in psi[psi["name"].isin(top)].groupby("name")
        ]
    )
    fig.update_layout(title="Feature PSI (the six worst now)", yaxis_title="PSI")
    ui.chart(fig, height=320, key="psi_chart")
    ui.table(worst, time_columns=("ts",), key="latest_drift")


live()
st.subheader("History")
ui.table(models_views.model_events(ui.db()), time_columns=("ts",), key="model_events")
