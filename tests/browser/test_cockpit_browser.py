"""The cockpit in a real browser: Debian's chromium driven by Playwright against
`streamlit run app.py` and a real engine (`python -m engine run`) on a tmp database.

Every server and engine is started per test on a free port and torn down in its
fixture; waits are on visible text with bounded timeouts.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("COCKPIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser test password"

if not (ROOT / "engine" / "process" / "runner.py").exists():
    pytest.skip(
        "engine/process/runner.py has not landed yet: no engine to drive", allow_module_level=True
    )
if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM} (set COCKPIT_CHROMIUM)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _count(db: Path, sql: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    from cockpit.auth import hash_password

    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COCKPIT_") and not k.startswith("STREAMLIT_")
    }
    out.update(
        COCKPIT_DB=str(tmp_path / "cockpit.db"),
        COCKPIT_CONFIG=str(tmp_path / "absent.toml"),
        COCKPIT_NO_AUTOSTART="1",
        COCKPIT_PASSWORD_HASH=hash_password(PASSWORD),
        COCKPIT_COCKPIT__REFRESH_SECONDS="0.5",
    )
    return out


TREND_START = 1_704_067_200_000  # 2024-01-01 UTC
TREND_BARS = 1_000
CYCLE_SECONDS = 0.4


def write_slow_uptrend(path: Path) -> None:
    """One-minute bars rising 0.02% a bar, each bar's low just under its open: the
    regime strategy buys on the first live bar, its stop (2 ATRs under) is never
    traded, and with a reward/risk of 110 its target is some 600 bars away."""
    lines = ["timestamp,open,high,low,close,volume"]
    prev = 100.0
    for i in range(TREND_BARS):
        close = 100.0 * 1.0002 ** (i + 1)
        lines.append(
            f"{TREND_START + i * 60_000},{prev:.4f},{close + 0.02:.4f},{prev - 0.02:.4f},"
            f"{close:.4f},100000"
        )
        prev = close
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def engine(env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    """A real engine replaying a market that holds its one position for minutes.

    The position cannot close before the test acts: the price only rises, so the
    stop is never reached; the target is hundreds of bars away (reward/risk 110);
    the regime stays trend_up, so the strategy has no exit; trailing stops and the
    model are off. The precondition holds by construction, not by timing.
    """
    db = Path(env["COCKPIT_DB"])
    data = tmp_path / "data"
    data.mkdir()
    write_slow_uptrend(data / "AAA.csv")
    engine_env = env | {
        "COCKPIT_ML__ENABLED": "false",
        "COCKPIT_RISK__MIN_REWARD_RISK": "100",
        "COCKPIT_RISK__TRAILING_STOP": "off",
    }
    log = (tmp_path / "engine.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "run",
            "--db",
            str(db),
            "--feed",
            "csv",
            "--data",
            str(data),
            "--cycle-seconds",
            str(CYCLE_SECONDS),
        ],
        cwd=ROOT,
        env=engine_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _count(db, "SELECT COUNT(*) FROM positions WHERE qty != 0") == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "the engine opened no position: "
                    + (tmp_path / "engine.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield db
    finally:
        _stop(process)
        log.close()


@pytest.fixture
def cockpit(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "streamlit.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "streamlit did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield url
    finally:
        _stop(process)
        log.close()


@pytest.fixture
def page() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            pg = context.new_page()
            pg.set_default_timeout(30_000)
            yield pg
        finally:
            browser.close()


def _login(page, url: str, password: str = PASSWORD) -> None:
    page.goto(url)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def _sidebar(page):
    return page.get_by_test_id("stSidebar")


def test_emergency_stop_halts_and_goes_flat_within_five_seconds(engine, cockpit, page) -> None:
    _login(page, cockpit)
    sidebar = _sidebar(page)
    expect(sidebar.get_by_text("ACTIVE", exact=True)).to_be_visible()
    expect(page.get_by_text("Open positions", exact=True).first).to_be_visible()
    expect(page.get_by_text("No open positions.")).to_have_count(0)

    sidebar.get_by_role("button", name="EMERGENCY STOP").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("close all positions at market")).to_be_visible()
    confirm = dialog.get_by_role("button", name="Confirm emergency stop")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type STOP to confirm").fill("STOP")
    dialog.get_by_label("Type STOP to confirm").press("Enter")
    expect(confirm).to_be_enabled()
    confirm.click()
    started = time.monotonic()

    expect(sidebar.get_by_text("HALTED", exact=True)).to_be_visible(timeout=5_000)
    expect(page.get_by_text("No open positions.")).to_be_visible(
        timeout=max(100, 5_000 - int((time.monotonic() - started) * 1000))
    )
    log.info(
        "emergency stop: HALTED and flat on screen %.2f s after confirm", time.monotonic() - started
    )
    assert _count(engine, "SELECT COUNT(*) FROM positions WHERE qty != 0") == 0


def test_pause_and_resume_round_trip(engine, cockpit, page) -> None:
    _login(page, cockpit)
    sidebar = _sidebar(page)
    expect(sidebar.get_by_text("ACTIVE", exact=True)).to_be_visible()
    sidebar.get_by_role("button", name="Pause").click()
    expect(sidebar.get_by_text("PAUSED", exact=True)).to_be_visible(timeout=10_000)
    sidebar.get_by_role("button", name="Resume").click()
    expect(sidebar.get_by_text("ACTIVE", exact=True)).to_be_visible(timeout=10_000)
    assert _count(engine, "SELECT COUNT(*) FROM commands WHERE status = 'done'") == 2


def test_a_wrong_password_is_refused(cockpit, page) -> None:
    _login(page, cockpit, "not the password")
    expect(page.get_by_text("Wrong password")).to_be_visible()
    expect(page.get_by_role("button", name="EMERGENCY STOP")).to_have_count(0)
