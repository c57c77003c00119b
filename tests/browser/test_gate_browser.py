"""The access gate in a real browser: every page URL, and some unknown ones, opened in
a fresh browser context against `streamlit run app.py`, bound to 127.0.0.1 and to
0.0.0.0, with and without a password.

Each server is fresh, so the first URL it serves is a page URL: a fresh Streamlit
process runs its first request through its own discovery of `pages/`, the path that
once skipped app.py. The 0.0.0.0 server is probed through 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.test_cockpit_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    ROOT,
    _free_port,
    _stop,
    expect,
    sync_api,
)
from tests.cockpit_support import declared_pages, execute, run_engine_into

pytestmark = pytest.mark.browser

PAGES = sorted(
    p.stem for p in (ROOT / "pages").glob("*.py") if p.name not in {"__init__.py", "ui.py"}
)
# alerts first: it is the page whose button once changed the database without login.
URLS = ["alerts", *[p for p in PAGES if p != "alerts"], "", "ui", "app", "no-such-page"]
TITLES = [title for _, title, _ in declared_pages()]
REFUSAL = "No cockpit password is set, so the cockpit only serves on 127.0.0.1."
DATA = [
    '[data-testid="stMetric"]',
    '[data-testid="stDataFrame"]',
    '[data-testid="stPlotlyChart"]',
    '[data-testid="stSidebar"] button',
    '[data-testid="stSidebarNav"]',
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database an engine filled, with alerts nobody acknowledged."""
    path = tmp_path_factory.mktemp("gate") / "template.db"
    with pytest.MonkeyPatch.context() as env:
        # Module scope runs before conftest's per-test clean environment.
        for name in [n for n in os.environ if n.startswith("COCKPIT_")]:
            env.delenv(name)
        env.setenv("COCKPIT_CONFIG", str(path.with_name("absent.toml")))
        env.setenv("COCKPIT_ML__BOOTSTRAP", "false")
        run_engine_into(path)
    for severity in ["HIGH", "CRITICAL"]:
        execute(
            path,
            "INSERT INTO alerts (ts, severity, source, title, message)"
            " VALUES (?, ?, 'test', ?, '')",
            (int(time.time() * 1000), severity, f"unacknowledged {severity}"),
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def server(request, template: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh `streamlit run app.py` on (address, with password[, idle minutes])."""
    from cockpit.auth import hash_password

    address, password, *idle = request.param
    db = tmp_path / "cockpit.db"
    shutil.copy(template, db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COCKPIT_", "STREAMLIT_"))}
    env.update(
        COCKPIT_DB=str(db),
        COCKPIT_CONFIG=str(tmp_path / "absent.toml"),
        COCKPIT_NO_AUTOSTART="1",
        COCKPIT_COCKPIT__REFRESH_SECONDS="0.5",
    )
    if password:
        env["COCKPIT_PASSWORD_HASH"] = hash_password(PASSWORD)
    if idle:
        env["COCKPIT_COCKPIT__IDLE_TIMEOUT_MINUTES"] = str(idle[0])
    port = _free_port()
    argv = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    argv += ["--server.address", address, "--server.headless", "true"]
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "streamlit.log").open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        "streamlit did not start: " + (tmp_path / "streamlit.log").read_text()
                    )
                time.sleep(0.2)
            yield url, db
        finally:
            _stop(process)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _open(browser, url: str, landmark: str):
    """A fresh context on `url`, once `landmark` shows and the script run has ended."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    expect(page.get_by_text(landmark).first).to_be_visible()
    # expect() waits 5 s unless told: a fresh server's first run (imports, the first
    # queries) can take longer than that on a busy two-core machine.
    expect(
        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')
    ).to_have_count(1, timeout=30_000)
    return context, page


@pytest.mark.parametrize(
    ("server", "gate_text"),
    [
        (("127.0.0.1", True), "Password"),
        (("0.0.0.0", True), "Password"),
        (("0.0.0.0", False), REFUSAL),
    ],
    indirect=["server"],
    ids=["password-loopback", "password-all-interfaces", "no-password-all-interfaces"],
)
def test_every_url_shows_only_the_gate_and_changes_nothing(browser, server, gate_text) -> None:
    url, db = server
    before = _dump(db)
    for path in URLS:
        context, page = _open(browser, f"{url}/{path}", gate_text)
        try:
            for selector in DATA:
                expect(page.locator(selector), f"/{path}: {selector}").to_have_count(0)
            for title in TITLES:
                expect(page.get_by_role("heading", name=title, exact=True)).to_have_count(0)
            expect(page.get_by_role("button", name="Acknowledge all")).to_have_count(0)
        finally:
            context.close()
    assert _dump(db) == before


@pytest.mark.parametrize("server", [("127.0.0.1", False)], indirect=True, ids=["open-loopback"])
def test_without_a_password_on_loopback_every_page_shows_its_data(browser, server) -> None:
    # The counterpart: the same probes do see data when access is allowed.
    url, _ = server
    for path in ["alerts", "overview"]:
        context, page = _open(browser, f"{url}/{path}", path.title())
        try:
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
            expect(page.get_by_role("button", name="EMERGENCY STOP")).to_be_visible()
        finally:
            context.close()


def _log_in(browser, url: str):
    context, page = _open(browser, url, "Password")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    return context, page


@pytest.mark.parametrize("server", [("127.0.0.1", True)], indirect=True, ids=["password"])
def test_log_out_returns_to_the_login_form(browser, server) -> None:
    url, _ = server
    context, page = _log_in(browser, f"{url}/alerts")
    try:
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_label("Password", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Acknowledge all")).to_have_count(0)
        page.goto(f"{url}/alerts")
        expect(page.get_by_label("Password", exact=True)).to_be_visible()
    finally:
        context.close()


@pytest.mark.parametrize("server", [("127.0.0.1", True, 0.05)], indirect=True, ids=["idle-3s"])
def test_an_idle_session_is_logged_out_without_a_click(browser, server) -> None:
    # Nothing is clicked after login: only the sidebar's own refresh notices the idle
    # timeout (3 s here) and ends the live page.
    url, _ = server
    context, page = _log_in(browser, f"{url}/overview")
    try:
        expect(page.get_by_text("without activity")).to_be_visible(timeout=30_000)
        expect(page.get_by_label("Password", exact=True)).to_be_visible()
        expect(page.locator('[data-testid="stMetric"]')).to_have_count(0)
    finally:
        context.close()
