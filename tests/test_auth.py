"""Password hashing, where the hash is configured, the set-password CLI and the throttle."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from state import auth


def test_a_hash_verifies_its_password_only() -> None:
    h = auth.hash_password("correct horse")
    assert auth.verify_password(h, "correct horse")
    assert not auth.verify_password(h, "correct hors")


def test_the_hash_is_argon2_and_never_the_password() -> None:
    h = auth.hash_password("correct horse")
    assert h.startswith("$argon2id$") and "correct horse" not in h


def test_a_malformed_hash_refuses_every_password() -> None:
    assert not auth.verify_password("not-a-hash", "anything")


def test_the_environment_wins_over_secrets_toml(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('password_hash = "from-file"\n')
    assert auth.password_hash_from_config(secrets, env={}) == "from-file"
    assert auth.password_hash_from_config(secrets, env={auth.ENV_VAR: "from-env"}) == "from-env"


def test_no_file_and_no_variable_means_no_password(tmp_path: Path) -> None:
    assert auth.password_hash_from_config(tmp_path / "absent.toml", env={}) is None


def test_writing_the_hash_keeps_other_secrets_and_is_private(tmp_path: Path) -> None:
    secrets = tmp_path / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text('webhook = "keep me"\n')
    auth.write_secrets_hash("$argon2id$x", secrets)
    data = tomllib.loads(secrets.read_text())
    assert data == {"webhook": "keep me", "password_hash": "$argon2id$x"}
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600


def test_set_password_stores_a_hash_that_verifies(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(auth.ENV_VAR, raising=False)
    secrets = tmp_path / "secrets.toml"
    answers = iter(["s3cret-enough", "s3cret-enough"])
    code = auth.set_password_cli(["--secrets", str(secrets)], prompt=lambda _: next(answers))
    assert code == 0
    assert auth.verify_password(auth.password_hash_from_config(secrets, env={}), "s3cret-enough")


@pytest.mark.parametrize("answers", [["s3cret-enough", "different"], ["short", "short"]])
def test_set_password_refuses_without_writing(tmp_path: Path, answers: list[str]) -> None:
    secrets = tmp_path / "secrets.toml"
    it = iter(answers)
    assert auth.set_password_cli(["--secrets", str(secrets)], prompt=lambda _: next(it)) == 1
    assert not secrets.exists()


def test_the_throttle_doubles_the_delay_after_each_failure() -> None:
    t = auth.LoginThrottle(base=1.0, cap=60.0)
    delays = [t.record_failure(now=100.0) for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert t.wait_seconds(103.0) == 5.0


def test_the_throttle_caps_the_delay_and_a_success_clears_it() -> None:
    t = auth.LoginThrottle(base=1.0, cap=10.0)
    for _ in range(10):
        last = t.record_failure(now=0.0)
    assert last == 10.0
    t.record_success()
    assert t.wait_seconds(0.0) == 0.0


@pytest.mark.parametrize(
    ("password_set", "authenticated", "address", "remote", "expected"),
    [
        (True, False, "127.0.0.1", None, auth.Access.LOGIN),
        (True, True, "0.0.0.0", "192.0.2.7", auth.Access.AUTHENTICATED),
        (False, False, "127.0.0.1", None, auth.Access.OPEN),
        (False, False, "0.0.0.0", None, auth.Access.REFUSED),
        (False, False, "", None, auth.Access.REFUSED),
        (False, False, "127.0.0.1", "192.0.2.7", auth.Access.REFUSED),
    ],
)
def test_access_is_decided_by_password_session_and_bind_address(
    password_set: bool, authenticated: bool, address: str, remote: str | None, expected
) -> None:
    got = auth.decide_access(
        password_set=password_set,
        authenticated=authenticated,
        server_address=address,
        remote_ip=remote,
    )
    assert got is expected
    assert got.allowed == (expected in {auth.Access.OPEN, auth.Access.AUTHENTICATED})
