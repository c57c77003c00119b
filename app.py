"""Cockpit entry point: password gate, autostart, navigation and the shared sidebar.

`st.navigation` runs on every run, so Streamlit never discovers `pages/` by itself.
A session that may not see the cockpit gets a navigation whose every entry is the
gate (cockpit.auth.decide_access), so any URL lands on it; a page added to PAGES is
gated by construction, and each page also calls ui.require_access() first.

The sidebar's facts refresh in a fragment; its controls live outside that fragment
so an open dialog is not torn down by the next refresh. Every control writes one
`commands` row (store.commands) and nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="Cockpit", page_icon=":material/flight:", layout="wide")

from cockpit import auth, autostart, status_views, ui  # noqa: E402  (set_page_config first)

log = logging.getLogger("cockpit.app")
ROOT = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- access


def _no_password_banner() -> None:
    st.warning(
        "No password set: the cockpit is open to anyone on this machine."
        " Set one with `python -m engine set-password`.",
        icon=":material/lock_open:",
    )


# --------------------------------------------------------------------------- autostart


def _autostart() -> None:
    """Once per browser session: start an engine if none is alive, and say so."""
    if "autostart" in st.session_state:
        return
    enabled = autostart.autostart_enabled(ui.settings().cockpit.autostart)
    result = autostart.ensure_engine(ui.db(), enabled=enabled)
    st.session_state["autostart"] = result
    if result.outcome in {autostart.Outcome.STARTED, autostart.Outcome.STARTING}:
        st.toast(result.message, icon=":material/rocket_launch:")
    if result.outcome is not autostart.Outcome.RUNNING:
        # shown in the sidebar while no heartbeat is fresh
        st.session_state["autostart_note"] = result.message


# --------------------------------------------------------------------------- sidebar


def _status_panel() -> None:
    if ui.idle_expired():
        # A full run logs the idle session out; until then nothing more is drawn.
        st.rerun()
    s = ui.engine_status()
    st.session_state["engine_state"] = s.trading_state
    if not s.present:
        st.markdown("**No engine has run on this database yet.**")
        st.caption(f"Database: `{ui.db()}`")
        note = st.session_state.get("autostart_note")
        st.caption(note or ui.no_engine_hint())
        return
    ui.state_badge(s.trading_state, s.state_reason)
    mode_color = "red" if s.mode == "LIVE" else "blue"
    st.markdown(f"Mode **:{mode_color}[{s.mode}]** · broker {s.broker or '—'}")
    beat = f"heartbeat {ui.age(s.heartbeat_age_s)}"
    st.markdown(f":red[**{beat} — engine not running**]" if s.stale else f":green[{beat}]")
    broker = ":green[connected]" if s.broker_connected else ":red[disconnected]"
    market = "open" if s.market_open else "closed"
    st.markdown(f"Broker {broker} · market {market}")
    st.markdown(f"Market clock **{_market_clock(s)}**")
    st.caption(f"Wall clock {ui.fmt_ts(ui.now(), '%H:%M:%S')} ({ui.tz_name()})")
    st.caption(f"Last cycle {ui.fmt_ts(s.last_cycle_at)} ({ui.tz_name()})")
    if s.unacked_total:
        st.markdown(
            "Unacknowledged alerts: "
            + " ".join(
                f":{_SEVERITY_BADGE[sev]}-badge[{sev} {s.unacked[sev]}]"
                for sev in status_views.SEVERITIES
                if s.unacked.get(sev)
            )
        )
    else:
        st.caption("No unacknowledged alerts")
    if s.stale and st.session_state.get("autostart_note"):
        st.caption(st.session_state["autostart_note"])
    _estop_progress(s)


def _market_clock(s: status_views.EngineStatus) -> str:
    """Market time (the bars' clock every trading rule runs on) and its pace."""
    if s.market_time is None:
        return "no bar yet"
    when = ui.fmt_ts(s.market_time, "%Y-%m-%d %H:%M")
    if not s.simulated:
        return f"{when} (live)"
    pace = "unpaced" if s.speed is None else f"{s.speed:g}×"
    return f"{when} · {pace} · simulated"


_SEVERITY_BADGE = {"CRITICAL": "red", "HIGH": "orange", "WARNING": "yellow", "INFO": "gray"}


def _estop_progress(s: status_views.EngineStatus) -> None:
    started = st.session_state.get("estop")
    if not started:
        return
    initial = max(started["positions"] + started["orders"], 1)
    remaining = s.open_positions + s.open_orders
    if remaining == 0 and s.trading_state == "HALTED":
        st.success(
            f"Emergency stop complete: flat and HALTED ({ui.fmt_ts(s.state_changed_at)}).",
            icon=":material/check_circle:",
        )
        return
    st.progress(
        min(1.0, max(0.0, 1 - remaining / initial)),
        text=f"Emergency stop: {s.trading_state}, {s.open_positions} positions and"
        f" {s.open_orders} orders still open",
    )


def _open_dialog(name: str) -> None:
    # The flag keeps the dialog open across full reruns (a page switch, a refresh)
    # until it is confirmed or dismissed.
    st.session_state["dialog"] = name


def _close_dialog() -> None:
    st.session_state.pop("dialog", None)


@st.dialog("Emergency stop", on_dismiss=_close_dialog)
def _estop_dialog() -> None:
    s = ui.engine_status()
    st.markdown(
        "This will, at once:\n"
        f"1. **cancel all open orders** ({s.open_orders} now),\n"
        f"2. **close all positions at market** ({s.open_positions} now), retried until flat,\n"
        "3. **halt trading** until you resume it with a reason."
    )
    typed = st.text_input("Type STOP to confirm", key="estop_typed", placeholder="STOP")
    confirmed = st.button(
        "Confirm emergency stop",
        type="primary",
        disabled=typed.strip() != "STOP",
        key="estop_confirm",
        width="stretch",
    )
    if confirmed:
        ui.send_command("emergency_stop", {})
        st.session_state["estop"] = {"positions": s.open_positions, "orders": s.open_orders}
        _close_dialog()
        st.rerun()


@st.dialog("Resume from HALTED", on_dismiss=_close_dialog)
def _resume_dialog() -> None:
    st.markdown(
        "Trading is **HALTED**. Resuming lets the strategy open new positions again."
        " Say why it is safe; the reason goes into the audit log."
    )
    reason = st.text_input("Reason", key="resume_reason")
    if st.button(
        "Resume trading", type="primary", disabled=not reason.strip(), key="resume_confirm"
    ):
        ui.send_command("resume", {"confirm": True, "reason": reason.strip()})
        st.session_state.pop("estop", None)
        _close_dialog()
        st.rerun()


@st.dialog("Flatten positions", on_dismiss=_close_dialog)
def _flatten_dialog() -> None:
    symbols = status_views.symbols_with_positions(ui.db())
    if not symbols:
        st.info("There are no open positions.")
    choice = st.selectbox("What to close at market", ["All positions", *symbols], key="flat_sym")
    st.caption("Flattening pauses new entries; resume when you are ready.")
    if st.button("Confirm flatten", type="primary", key="flatten_confirm"):
        args = {} if choice == "All positions" else {"symbol": choice}
        ui.send_command("flatten", args)
        _close_dialog()
        st.rerun()


_DIALOGS = {"estop": _estop_dialog, "resume": _resume_dialog, "flatten": _flatten_dialog}


def _controls() -> None:
    col1, col2 = st.columns(2)
    if col1.button("Pause", key="ctl_pause", width="stretch"):
        ui.send_command("pause", {})
        st.toast("Pause sent")
    if col2.button("Resume", key="ctl_resume", width="stretch"):
        state = ui.engine_status().trading_state
        if state == "HALTED":
            _open_dialog("resume")
        elif state == "ACTIVE":
            st.toast("Trading is already ACTIVE")
        else:
            ui.send_command("resume", {})
            st.toast("Resume sent")
    if st.button("Flatten…", key="ctl_flatten", width="stretch"):
        _open_dialog("flatten")
    if st.button("EMERGENCY STOP", key="ctl_estop", type="primary", width="stretch"):
        st.session_state.pop("estop_typed", None)
        _open_dialog("estop")
    dialog = _DIALOGS.get(st.session_state.get("dialog", ""))
    if dialog is not None:
        dialog()


def _sidebar(access: auth.Access) -> None:
    with st.sidebar:
        st.fragment(_status_panel, run_every=ui.refresh_seconds())()
        st.divider()
        _controls()
        if access is auth.Access.AUTHENTICATED:
            st.divider()
            if st.button("Log out", key="logout", icon=":material/logout:", width="stretch"):
                ui.logout()
                st.rerun()


# --------------------------------------------------------------------------- pages

# Every page of the cockpit, in one place: (file in pages/, title, icon).
PAGES = (
    ("overview.py", "Overview", ":material/dashboard:"),
    ("regime.py", "Regime", ":material/insights:"),
    ("orders.py", "Orders", ":material/receipt_long:"),
    ("models.py", "Models", ":material/model_training:"),
    ("alerts.py", "Alerts", ":material/notifications:"),
    ("risk.py", "Risk", ":material/shield:"),
    ("marathon.py", "Marathon", ":material/timer:"),
    ("audit.py", "Audit", ":material/fact_check:"),
    ("backtests.py", "Backtests", ":material/query_stats:"),
)
DEFAULT_PAGE = "overview.py"


def _navigation(allowed: bool) -> st.Page:
    """The page this run draws. Before access every entry draws the gate.

    The gate entries keep the pages' URLs, so a bookmarked page shows the gate and,
    after login, the page itself instead of a "page not found".
    """
    present = [spec for spec in PAGES if (ROOT / "pages" / spec[0]).exists()]
    if not allowed:
        gate = [
            st.Page(
                ui.gate_page,
                title="Cockpit",
                url_path=Path(name).stem,
                default=name == DEFAULT_PAGE,
            )
            for name, _, _ in present
        ]
        return st.navigation(gate, position="hidden")
    return st.navigation(
        [
            st.Page(f"pages/{name}", title=title, icon=icon, default=name == DEFAULT_PAGE)
            for name, title, icon in present
        ]
    )


access = ui.access()
if access.allowed:
    _autostart()
page = _navigation(access.allowed)
if access.allowed:
    if access is auth.Access.OPEN:
        _no_password_banner()
    _sidebar(access)
page.run()
