""".streamlit/config.toml keeps the cockpit local, headless, private and XSRF-protected."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("server", "address", "127.0.0.1"),
        ("server", "headless", True),
        ("server", "fileWatcherType", "none"),
        ("server", "enableXsrfProtection", True),
        ("browser", "gatherUsageStats", False),
    ],
)
def test_config_toml_sets(section: str, key: str, expected: object) -> None:
    config = tomllib.loads(CONFIG.read_text())
    assert config[section][key] == expected


def test_secrets_toml_is_git_ignored() -> None:
    ignored = (CONFIG.parent.parent / ".gitignore").read_text().splitlines()
    assert ".streamlit/secrets.toml" in ignored
