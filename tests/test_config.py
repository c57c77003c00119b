"""Configuration: defaults, file, environment, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, load_settings


def test_runs_with_no_file_and_no_variables():
    settings = load_settings()
    assert settings.engine.feed == "sim" and settings.engine.broker == "paper"


def test_the_file_then_the_environment_then_the_command_line_win(tmp_path: Path, monkeypatch):
    toml = tmp_path / "cockpit.toml"
    toml.write_text("[engine]\nseed = 1\ncycle_seconds = 3\nwarmup_bars = 10\n")
    monkeypatch.setenv("COCKPIT_CONFIG", str(toml))
    monkeypatch.setenv("COCKPIT_ENGINE__CYCLE_SECONDS", "2")
    settings = load_settings(engine={"seed": 5})
    assert (settings.engine.seed, settings.engine.cycle_seconds, settings.engine.warmup_bars) == (
        5,
        2.0,
        10,
    )


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("engine", {"cycle_seconds": 0}, "engine.cycle_seconds = 0: Input should be greater"),
        ("engine", {"cycel_seconds": 1}, "engine.cycel_seconds = 1: unknown key; allowed keys:"),
        (
            "risk",
            {"daily_loss": "lots"},
            "risk.daily_loss = 'lots': Input should be a valid number",
        ),
        (
            "engine",
            {"feed": "ftp"},
            "engine.feed = 'ftp': Input should be 'sim', 'csv', 'ccxt' or 'ib'",
        ),
        ("cockpit", {"timezone": "Mars/Base"}, "cockpit.timezone = 'Mars/Base'"),
    ],
)
def test_a_bad_value_names_the_key_the_value_and_what_is_allowed(section, values, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings(**{section: values})
    assert expected in str(caught.value)


def test_an_unknown_section_in_the_file_is_refused(tmp_path: Path, monkeypatch):
    toml = tmp_path / "cockpit.toml"
    toml.write_text("[engnie]\nseed = 1\n")
    monkeypatch.setenv("COCKPIT_CONFIG", str(toml))
    with pytest.raises(ConfigError, match=r"engnie = .*unknown key; allowed sections: engine"):
        load_settings()


def test_a_misspelt_environment_variable_is_refused(monkeypatch):
    monkeypatch.setenv("COCKPIT_ENGIN__SEED", "3")
    with pytest.raises(ConfigError, match="COCKPIT_ENGIN__SEED"):
        load_settings()


def test_the_csv_feed_needs_a_data_folder():
    with pytest.raises(ConfigError, match=r"engine\.data_dir"):
        load_settings(engine={"feed": "csv"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ops@example.com", ("ops@example.com",)),
        ("ops@example.com, oncall@example.com", ("ops@example.com", "oncall@example.com")),
        ('["ops@example.com"]', ("ops@example.com",)),
    ],
)
def test_a_list_in_the_environment_may_be_plain_comma_separated_text(monkeypatch, text, expected):
    monkeypatch.setenv("COCKPIT_ALERTS__SMTP_TO", text)
    assert load_settings().alerts.smtp_to == expected


def test_broken_json_in_the_environment_is_a_one_line_configuration_error(monkeypatch):
    monkeypatch.setenv("COCKPIT_ALERTS__SMTP_TO", '["ops@example.com"')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "alerts" in str(caught.value) and "\n" not in str(caught.value)


def test_a_toml_syntax_error_is_a_one_line_configuration_error(tmp_path: Path, monkeypatch):
    toml = tmp_path / "cockpit.toml"
    toml.write_text("[engine\nseed = 1\n")
    monkeypatch.setenv("COCKPIT_CONFIG", str(toml))
    with pytest.raises(ConfigError, match="end of a table declaration"):
        load_settings()
