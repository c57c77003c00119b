"""Shared drawing helpers for every cockpit page: the access guard, theme, plotly
template, time zone, money formatting, empty states and the guarded command button.

Pages import this module and call `require_access()` before drawing anything; it
never talks SQL (each page's read model is `cockpit/<page>_views.py`).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from cockpit import auth, status_views
from engine.config import ConfigError, Settings, load_settings
from store.commands import cockpit_actor, enqueue_command
from store.db import db_path, now_ms

log = logging.getLogger(__name__)

# One palette for the whole cockpit; state colours mean the same on every page.
COLORS = {
    "bg": "#0e1117",
    "panel": "#161b24",
    "grid": "#2a3040",
    "text": "#d7dce5",
    "muted": "#8a93a6",
    "up": "#26a69a",
    "down": "#ef5350",
    "accent": "#4f8bf9",
    "warn": "#f5a623",
}
STATE_COLORS = {"ACTIVE": "green", "PAUSED": "orange", "HALTED": "red", "UNKNOWN": "gray"}
SEVERITY_COLORS = {
    "CRITICAL": "#d32f2f",
    "HIGH": "#ef6c00",
    "WARNING": "#f9a825",
    "INFO": "#607d8b",
}
REGIME_SOLID = {
    "trend_up": "#26a69a",
    "trend_down": "#ef5350",
    "range": "#8a93a6",
    "high_vol": "#f5a623",
    "crash": "#b71c1c",
}
REGIME_COLORS = {
    "trend_up": "rgba(38,166,154,0.22)",
    "trend_down": "rgba(239,83,80,0.22)",
    "range": "rgba(138,147,166,0.18)",
    "high_vol": "rgba(245,166,35,0.22)",
    "crash": "rgba(183,28,28,0.35)",
}

# Set the default template once per process: every figure gets the same theme. It is
# merged with plotly_dark here, once: a default named "plotly_dark+cockpit" would be
# merged and validated again for every figure (tens of ms each, most of a page's run).
_THEME = go.layout.Template(
    layout=go.Layout(
        paper_bgcolor=COLORS["bg"],
        plot_bgcolor=COLORS["panel"],
        font={"color": COLORS["text"], "size": 12},
        colorway=[
            COLORS["accent"],
            COLORS["up"],
            COLORS["down"],
            COLORS["warn"],
            "#ab47bc",
            "#26c6da",
            "#8d6e63",
        ],
        xaxis={"gridcolor": COLORS["grid"], "zerolinecolor": COLORS["grid"]},
        yaxis={"gridcolor": COLORS["grid"], "zerolinecolor": COLORS["grid"]},
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.15},
        hovermode="x unified",
    )
)
pio.templates["cockpit"] = pio.templates.merge_templates("plotly_dark", _THEME)
pio.templates.default = "cockpit"


# --------------------------------------------------------------------------- access

_AUTH_KEY = "authenticated_hash"
_ACTIVE_KEY = "last_active"  # time.monotonic() of the session's last full run
_NOTICE_KEY = "gate_notice"


def access() -> auth.Access:
    """What this session may see now (see cockpit.auth.decide_access).

    A full run of a logged-in session counts as activity; a session idle for
    cockpit.idle_timeout_minutes is logged out here, on its next full run.
    """
    password_hash = auth.password_hash_from_config()
    # The session remembers the hash it logged in with: a new password logs every
    # session out.
    authenticated = password_hash is not None and st.session_state.get(_AUTH_KEY) == password_hash
    if authenticated:
        if idle_expired():
            minutes = settings().cockpit.idle_timeout_minutes
            logout(f"Logged out after {minutes:g} min without activity.")
            authenticated = False
        else:
            st.session_state[_ACTIVE_KEY] = time.monotonic()
    return auth.decide_access(
        password_set=password_hash is not None,
        authenticated=authenticated,
        server_address=str(st.get_option("server.address") or ""),
        remote_ip=_remote_ip(),
    )


def idle_expired() -> bool:
    """True when a logged-in session has had no full run for the idle timeout.

    Fragments refresh on their own, so they do not count as activity; the sidebar's
    fragment asks this to end an idle session's live refresh.
    """
    last = st.session_state.get(_ACTIVE_KEY)
    if st.session_state.get(_AUTH_KEY) is None or last is None:
        return False
    return time.monotonic() - float(last) > settings().cockpit.idle_timeout_minutes * 60


def logout(notice: str = "Logged out.") -> None:
    """Forget everything this session held; the gate shows `notice` once."""
    st.session_state.clear()
    st.session_state[_NOTICE_KEY] = notice
    log.info("operator session ended: %s", notice)


def _remote_ip() -> str | None:
    remote = st.context.ip_address
    # None for loopback clients; AppTest puts a stand-in there, not a str.
    return remote if isinstance(remote, str) else None


def require_access() -> None:
    """The first call of every page: draw only the gate unless the session may see it.

    app.py already routes a session that may not see the cockpit to the gate alone;
    this guard covers a page run without app.py. Streamlit does that on the first run
    of a fresh process, when it still discovers the `pages/` folder by itself: the
    guard ends that mode and reruns through app.py.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
    if not access().allowed:
        gate_page()
        st.stop()


def gate_page() -> None:
    """The only page a session that may not see the cockpit gets, whatever its URL."""
    password_hash = auth.password_hash_from_config()
    if password_hash is None:
        st.error(
            "No cockpit password is set, so the cockpit only serves on 127.0.0.1."
            " Set one with `python -m engine set-password`, or bind to 127.0.0.1."
        )
        return
    _login_form(password_hash)


def _login_form(password_hash: str) -> None:
    st.title("Cockpit")
    notice = st.session_state.pop(_NOTICE_KEY, None)
    if notice:
        st.info(notice, icon=":material/logout:")
    with st.form("login"):
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if not submitted:
        return
    throttle = auth.throttle_for(Path(db()))
    source = _remote_ip() or "local"
    wait = throttle.wait_seconds(source, time.time())
    if wait > 0:
        st.error(f"Too many failed attempts: try again in {wait:.0f} s.")
        return
    if auth.verify_password(password_hash, password):
        throttle.record_success(source)
        st.session_state[_AUTH_KEY] = password_hash
        st.session_state[_ACTIVE_KEY] = time.monotonic()
        log.info("operator logged in from %s", source)
        st.rerun()
    delay = throttle.record_failure(source, time.time())
    log.warning("failed login from %s; next attempt allowed in %.0f s", source, delay)
    st.error(f"Wrong password. Next attempt allowed in {delay:.0f} s.")


# --------------------------------------------------------------------------- settings


@st.cache_resource(ttl=30, show_spinner=False, max_entries=8)
def _settings_cached(environment: tuple[tuple[str, str], ...]) -> Settings:
    # `environment` is only the cache key; a leading underscore would leave it out.
    return load_settings()


def settings() -> Settings:
    """The validated settings; a bad configuration stops the page with its message."""
    # Keyed on the COCKPIT_* environment so a changed variable is seen at once.
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("COCKPIT_")))
    try:
        return _settings_cached(environment)
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
        raise  # unreachable: st.stop raises


def db() -> str:
    """The state database this cockpit reads (COCKPIT_DB or var/cockpit.db)."""
    return str(db_path())


def now() -> int:
    return now_ms()


def refresh_seconds() -> float:
    return float(settings().cockpit.refresh_seconds)


def tz_name() -> str:
    return settings().cockpit.timezone


def tz() -> ZoneInfo:
    return ZoneInfo(tz_name())


# --------------------------------------------------------------------------- formatting


def fmt_ts(ms: int | float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An epoch-ms instant as wall time in the operator's time zone."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz()).strftime(fmt)


def local_times(ms: pd.Series) -> pd.Series:
    """Epoch ms as naive wall-clock datetimes in the operator's zone.

    Naive on purpose: plotly.js drops offsets, so a tz-aware series would be drawn
    in the browser's zone instead of the configured one.
    """
    ts = pd.to_datetime(ms.astype("int64"), unit="ms", utc=True)
    return ts.dt.tz_convert(tz_name()).dt.tz_localize(None)


def with_local_times(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    out = df.copy()
    for c in columns:
        if c in out and len(out):
            mask = out[c].notna()
            converted = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
            converted[mask] = local_times(out.loc[mask, c])
            out[c] = converted
    return out


def money(x: float | None, signed: bool = False, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    sign = "+" if signed and x > 0 else ""
    text = f"{sign}{x:,.{digits}f}"
    return text.replace("-", "−")


def pct(x: float | None, signed: bool = False, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    sign = "+" if signed and x > 0 else ""
    return f"{sign}{x * 100:.{digits}f}%"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {s}s"


# --------------------------------------------------------------------------- drawing


def empty_state(message: str, hint: str = "") -> None:
    """What a page shows where data would be: say why there is none and what to do."""
    st.info(message + (f"  \n{hint}" if hint else ""), icon=":material/hourglass_empty:")


def no_engine_hint() -> str:
    return "Start the engine with `python -m engine run` (or `make run`)."


def chart(fig: go.Figure, *, height: int = 360, key: str | None = None) -> None:
    """Draw a plotly figure with the cockpit template (not Streamlit's theme)."""
    fig.update_layout(height=height)
    st.plotly_chart(fig, theme=None, width="stretch", key=key, config={"displaylogo": False})


def mark_downtime(fig: go.Figure, gaps: Sequence[tuple[int, int]], label: str) -> None:
    """Shade each stretch the engine was down, so a chart shows the outage instead of
    a line drawn straight across it."""
    for start, end in gaps:
        x0, x1 = local_times(pd.Series([start, end])).tolist()
        fig.add_vrect(
            x0=x0,
            x1=x1,
            fillcolor="gray",
            opacity=0.2,
            line_width=0,
            annotation_text=label,
            annotation_position="top left",
        )


def state_badge(state: str, reason: str = "") -> None:
    color = STATE_COLORS.get(state, "gray")
    st.badge(state, color=color)  # type: ignore[arg-type]
    if reason:
        st.caption(reason)


# --------------------------------------------------------------------------- commands

_GUARD_SECONDS = 3.0


def send_command(
    kind: str, args: dict[str, Any] | None = None, *, by: str | None = None
) -> int | None:
    """Queue one command; a repeat of the same command within a few seconds is dropped.

    enqueue_command already returns the pending row for an identical command, but a
    fast engine may have finished the first one before the second click arrives;
    the session guard covers that window.

    Access is checked again here: a button in a fragment reruns only its fragment,
    not app.py, so a session that went idle or whose password changed since the
    page was drawn is sent to the gate instead of queueing anything.
    """
    if not access().allowed:
        log.warning("refused a %s command from a session without access", kind)
        st.rerun()
    key = (kind, tuple(sorted((args or {}).items())))
    last = st.session_state.get("_last_command")
    t = time.monotonic()
    if last and last[0] == key and t - last[1] < _GUARD_SECONDS:
        log.info("dropped a repeated %s command from the same session", kind)
        return None
    command_id = enqueue_command(kind, args or {}, requested_by=by or cockpit_actor(), db=db())
    st.session_state["_last_command"] = (key, t, command_id)
    log.info("queued command %s %s as #%d", kind, args or {}, command_id)
    return command_id


def page_header(title: str, caption: str = "") -> None:
    st.title(title)
    if caption:
        st.caption(caption)


WINDOWS = {
    "1 hour": 3_600_000,
    "1 day": 86_400_000,
    "1 week": 604_800_000,
    "30 days": 2_592_000_000,
    "All": None,
}


def engine_status() -> status_views.EngineStatus:
    """The engine row as the sidebar shows it, now."""
    return status_views.engine_status(db(), now())


def market_now() -> int:
    """The engine's market clock (the time of the bars it processed), else the wall's.
    Orders, fills, signals, regimes and equity are stamped with it, so windows over
    them end there: a replay of 2006 shows 2006, a 60x simulation its own evening."""
    market = engine_status().market_time
    return now() if market is None else market


def window_end(market: bool = True) -> int:
    return market_now() if market else now()


def window_picker(key: str, default: str = "All", *, market: bool = True) -> int | None:
    """A time-window control; returns the window start (epoch ms) or None for all.
    `market`: the window ends at market time (else at wall time, for alerts)."""
    choice = st.segmented_control(
        "Window", list(WINDOWS), default=default, key=key, label_visibility="collapsed"
    )
    span = WINDOWS.get(choice or default)
    return None if span is None else window_end(market) - span


def table(
    df: pd.DataFrame,
    *,
    time_columns: tuple[str, ...] = (),
    key: str | None = None,
    column_config: dict[str, Any] | None = None,
    height: int | Literal["auto", "stretch", "content"] = "auto",
) -> None:
    """A read-only table with times in the operator's zone."""
    shown = with_local_times(df, *time_columns)
    config = {
        c: st.column_config.DatetimeColumn(c, format="YYYY-MM-DD HH:mm:ss") for c in time_columns
    }
    config.update(column_config or {})
    st.dataframe(
        shown, hide_index=True, width="stretch", column_config=config, key=key, height=height
    )


MONEY = st.column_config.NumberColumn(format="%.2f")
PRICE = st.column_config.NumberColumn(format="%.4f")
QTY = st.column_config.NumberColumn(format="%g")
PCT = st.column_config.NumberColumn(format="percent")


def bucket_ms(since: int | None) -> int:
    """A time bucket that gives a window about a hundred to two hundred bars."""
    span = now() - since if since is not None else None
    for limit, bucket in (
        (2 * 3_600_000, 60_000),
        (2 * 86_400_000, 600_000),
        (8 * 86_400_000, 3_600_000),
        (31 * 86_400_000, 4 * 3_600_000),
    ):
        if span is not None and span <= limit:
            return bucket
    return 86_400_000


def bucket_label(bucket: int) -> str:
    return {60_000: "minute", 600_000: "10 min", 3_600_000: "hour", 14_400_000: "4 h"}.get(
        bucket, "day"
    )


def time_axis(fig: go.Figure, since: int | None, *, market: bool = True) -> None:
    """Show the whole window on a time axis, in the operator's zone."""
    if since is not None:
        ends = local_times(pd.Series([since, window_end(market)]))
        fig.update_xaxes(range=[ends.iloc[0], ends.iloc[1]])
    fig.update_xaxes(title_text=tz_name())


# --------------------------------------------------------------------------- gaps

GAP_FACTOR = 3.0  # a spacing this many times the usual one is a gap, not a slow tick


def time_gaps(ts: Iterable[int], min_gap: float | None = None) -> list[tuple[int, int]]:
    """Stretches with no points, as (last point before, first point after): consecutive
    instants further apart than `min_gap`, by default GAP_FACTOR x their median
    spacing. On the equity curve a gap is time the engine did not mark: it was down."""
    times = [int(t) for t in ts]
    steps = [b - a for a, b in itertools.pairwise(times)]
    if not steps:
        return []
    limit = min_gap if min_gap is not None else GAP_FACTOR * float(statistics.median(steps))
    return [(a, b) for a, b in itertools.pairwise(times) if b - a > limit]


def broken_at(frame: pd.DataFrame, column: str, gaps: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """The frame with an empty row in the middle of each gap, so a line chart breaks
    there instead of drawing a straight line across time nobody saw."""
    if not gaps:
        return frame
    blanks = pd.DataFrame({column: [(a + b) // 2 for a, b in gaps]})
    out = pd.concat([frame, blanks], ignore_index=True)
    return out.sort_values(column, kind="stable").reset_index(drop=True)


if __name__ == "__main__":
    # Streamlit's own discovery of `pages/` (a fresh process's first run) lists this
    # helper as a page too; run that way, it is only the gate.
    require_access()
