"""The encrypted secrets store, its CLI, and the configuration that reads it."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from engine.__main__ import main
from engine.config import ConfigError, load_settings
from engine.process.runner import Engine
from store.db import open_writer
from store.secrets import KEY_ENV, SecretStore, WrongKey, key_file
from tests.conftest import FakeClock, engine_settings
from tests.test_engine import query
from tests.test_notify import Receiver, receiver

__all__ = ["receiver"]  # the webhook receiver fixture, shared with the notifier's tests

PLANTED = "s3cr3t-PLANTED-7f2c9a"


def set_secret(db: Path, name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    return main(["secrets", "--db", str(db), "set", name])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stored_value_is_ciphertext_in_the_database(
    db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set_secret(db_file, "alerts.smtp_password", PLANTED, monkeypatch) == 0
    conn = sqlite3.connect(db_file)
    token = conn.execute("SELECT token FROM secrets").fetchone()[0]
    conn.close()
    assert PLANTED not in token
    assert PLANTED.encode() not in db_file.read_bytes()
    assert load_settings(db=db_file).alerts.smtp_password.get_secret_value() == PLANTED  # type: ignore[union-attr]


def test_key_file_and_database_are_private(db_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_secret(db_file, "alerts.smtp_password", PLANTED, monkeypatch)
    writer = open_writer(db_file)  # the WAL exists while a writer is open
    writer.conn.execute("UPDATE secrets SET updated_at = 1")
    writer.conn.commit()
    assert mode(key_file(db_file)) == 0o600
    assert mode(db_file) == 0o600
    assert mode(Path(f"{db_file}-wal")) == 0o600
    writer.conn.close()


def test_existing_world_readable_database_is_tightened(db_file: Path) -> None:
    open_writer(db_file).conn.close()
    db_file.chmod(0o644)
    open_writer(db_file).conn.close()
    assert mode(db_file) == 0o600


def test_list_shows_names_never_values(
    db_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_secret(db_file, "alerts.webhook_url", f"https://h.example/hook/{PLANTED}", monkeypatch)
    capsys.readouterr()
    assert main(["secrets", "--db", str(db_file), "list"]) == 0
    out = capsys.readouterr().out
    assert "alerts.webhook_url" in out
    assert PLANTED not in out


def test_rotate_re_encrypts_under_a_new_key(db_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_secret(db_file, "ib.api_key", PLANTED, monkeypatch)
    old_key = key_file(db_file).read_bytes()
    assert main(["secrets", "--db", str(db_file), "rotate"]) == 0
    assert key_file(db_file).read_bytes() != old_key
    assert mode(key_file(db_file)) == 0o600
    conn = sqlite3.connect(db_file)
    token = conn.execute("SELECT token FROM secrets WHERE name = 'ib.api_key'").fetchone()[0]
    assert SecretStore(db_file).get(conn, "ib.api_key") == PLANTED
    conn.close()
    with pytest.raises(InvalidToken):
        Fernet(old_key.strip()).decrypt(token.encode())


def test_wrong_environment_key_is_a_clear_error(
    db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_secret(db_file, "alerts.smtp_password", PLANTED, monkeypatch)
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    conn = sqlite3.connect(db_file)
    with pytest.raises(WrongKey, match="does not open"):
        SecretStore(db_file).get(conn, "alerts.smtp_password")
    conn.close()
    with pytest.raises(ConfigError, match="secrets store"):
        load_settings(db=db_file)


def test_environment_key_needs_no_key_file(db_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    set_secret(db_file, "alerts.smtp_password", PLANTED, monkeypatch)
    assert not key_file(db_file).exists()
    assert load_settings(db=db_file).alerts.smtp_password is not None


def test_environment_value_wins_over_the_store(
    db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_secret(db_file, "alerts.webhook_url", "http://127.0.0.1:1/stored", monkeypatch)
    monkeypatch.setenv("COCKPIT_ALERTS__WEBHOOK_URL", "http://127.0.0.1:1/env")
    assert load_settings(db=db_file).alerts.webhook_url == "http://127.0.0.1:1/env"


def test_engine_managed_names_cannot_be_set(db_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert set_secret(db_file, "audit.key", "x" * 20, monkeypatch) == 1


def test_config_masks_url_credentials_path_and_query_tokens(
    db_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"https://bob:{PLANTED}@hooks.example:8443/services/{PLANTED}?token={PLANTED}"
    monkeypatch.setenv("COCKPIT_ALERTS__WEBHOOK_URL", url)
    monkeypatch.setenv("COCKPIT_ALERTS__SMTP_USER", "bob")
    set_secret(db_file, "alerts.smtp_password", PLANTED, monkeypatch)
    capsys.readouterr()
    assert main(["config", "--db", str(db_file)]) == 0
    out = capsys.readouterr().out
    assert PLANTED not in out
    alerts = json.loads(out)["alerts"]
    assert alerts["webhook_url"] == "https://hooks.example:8443/***"
    assert alerts["smtp_password"] == "***"
    assert alerts["smtp_user"] == "***"


def test_planted_secrets_appear_nowhere_in_plain_text(
    *,
    db_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    receiver: Receiver,
    clock: FakeClock,
    open_engines: list[Any],
) -> None:
    """The store's values reach the channels, and no file, log, output or alert shows them."""
    monkeypatch.setenv("COCKPIT_ALERTS__MIN_SEVERITY", "INFO")
    set_secret(db_file, "alerts.webhook_url", f"{receiver.url}/{PLANTED}?t={PLANTED}", monkeypatch)
    set_secret(db_file, "alerts.smtp_password", PLANTED, monkeypatch)
    set_secret(db_file, "alerts.telegram_token", f"123456:{PLANTED}", monkeypatch)
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_CHAT_ID", "42")
    monkeypatch.setenv("COCKPIT_ALERTS__TELEGRAM_API_URL", receiver.url.removesuffix("/hook"))
    caplog.set_level(logging.DEBUG)
    eng = Engine(engine_settings(warmup_bars=30), db_file, clock=clock)
    eng.open()
    open_engines.append(eng)
    for _ in range(5):
        clock.advance(1000)
        eng.step()
    eng.daily_job()
    deadline = time.monotonic() + 10
    while {"chat_id" in b for b in receiver.bodies} != {True, False}:
        assert time.monotonic() < deadline, "the webhook or the Telegram bot got no alert"
        time.sleep(0.02)
    wal = Path(f"{db_file}-wal").read_bytes()
    main(["config", "--db", str(db_file)])
    eng.close()
    files = [db_file, *(p for p in db_file.parent.rglob("backups/**/*") if p.is_file())]
    seen = [p.read_bytes() for p in files] + [wal]
    seen += [capsys.readouterr().out.encode(), caplog.text.encode()]
    seen += [json.dumps(receiver.bodies).encode()]
    seen += [json.dumps(query(db_file, "SELECT * FROM alerts")).encode()]
    assert any(p.name == "manifest.json" for p in files), "the daily backup is searched too"
    assert not [blob[:80] for blob in seen if PLANTED.encode() in blob]
