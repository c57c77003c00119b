"""Password hashing, where the hash is configured, the set-password CLI and the throttle."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from cockpit import auth


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
    delays = [t.record_failure("local", now=100.0) for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert t.wait_seconds("local", 103.0) == 5.0


def test_the_throttle_caps_the_delay_and_a_success_clears_it() -> None:
    t = auth.LoginThrottle(base=1.0, cap=10.0)
    for _ in range(10):
        last = t.record_failure("local", now=0.0)
    assert last == 10.0
    t.record_success("local")
    assert t.wait_seconds("local", 0.0) == 0.0


def test_the_throttle_survives_a_restart(tmp_path: Path) -> None:
    path = auth.throttle_path(tmp_path / "cockpit.db")
    for _ in range(3):
        auth.LoginThrottle(path).record_failure("local", now=1000.0)
    restarted = auth.LoginThrottle(path)
    assert restarted.failures("local", 1001.0) == 3
    assert restarted.wait_seconds("local", 1001.0) == 3.0


def test_the_throttle_file_is_private_and_beside_the_database(tmp_path: Path) -> None:
    path = auth.throttle_path(tmp_path / "cockpit.db")
    auth.LoginThrottle(path).record_failure("local", now=0.0)
    assert path.parent == tmp_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_attackers_failures_do_not_delay_another_address() -> None:
    t = auth.LoginThrottle(base=1.0, cap=60.0)
    for _ in range(20):
        t.record_failure("203.0.113.9", now=0.0)
    assert t.wait_seconds("203.0.113.9", 1.0) == 59.0
    assert t.wait_seconds("local", 1.0) == 0.0


def test_no_stored_deadline_waits_longer_than_the_cap(tmp_path: Path) -> None:
    path = auth.throttle_path(tmp_path / "cockpit.db")
    # An edited file, or a clock set back after the failures were recorded.
    path.write_text('{"local": {"failures": 99, "not_before": 1e12, "last": 1000.0}}')
    assert auth.LoginThrottle(path, cap=60.0).wait_seconds("local", 1000.0) == 60.0


def test_failures_are_forgotten_after_a_quiet_period() -> None:
    t = auth.LoginThrottle(base=1.0, cap=60.0, forget_after=900.0)
    for _ in range(10):
        t.record_failure("local", now=0.0)
    assert t.record_failure("local", now=2000.0) == 1.0


def test_an_unreadable_throttle_file_still_throttles(tmp_path: Path) -> None:
    path = auth.throttle_path(tmp_path / "cockpit.db")
    path.write_text("not json")
    t = auth.LoginThrottle(path)
    t.record_failure("local", now=0.0)
    path.write_text("not json")
    assert t.wait_seconds("local", 0.5) == 0.5


def test_the_throttle_keeps_a_bounded_number_of_addresses() -> None:
    t = auth.LoginThrottle()
    for i in range(auth.LoginThrottle.MAX_SOURCES + 5):
        t.record_failure(f"198.51.100.{i}", now=i / 1000)
    assert t.failures("198.51.100.0", 2.0) == 0  # the oldest gave way
    assert t.failures(f"198.51.100.{auth.LoginThrottle.MAX_SOURCES + 4}", 2.0) == 1


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
