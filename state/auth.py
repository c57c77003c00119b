"""The cockpit's password: an argon2id hash, never the password itself.

The hash lives in `.streamlit/secrets.toml` (git-ignored) under `password_hash`,
or in COCKPIT_PASSWORD_HASH, which wins so a deployment can override the file.
`python -m engine set-password` writes it through `set_password_cli`.

Who may see the cockpit is decided once, by `decide_access`: with a password, a
session that logged in; without one, only a browser on this machine talking to a
cockpit bound to loopback.

Failed logins slow the next attempt down: the throttle is per process, not per
browser session, because a new session costs an attacker nothing.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path

import tomli_w
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from state.db import PROJECT_ROOT

log = logging.getLogger(__name__)

SECRETS_FILE = PROJECT_ROOT / ".streamlit" / "secrets.toml"
ENV_VAR = "COCKPIT_PASSWORD_HASH"
MIN_LENGTH = 8

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

_hasher = PasswordHasher()


class Access(Enum):
    """What one browser session may see."""

    OPEN = "open"  # no password: a browser on this machine, a cockpit bound to loopback
    AUTHENTICATED = "authenticated"  # the session logged in with the password
    LOGIN = "login"  # a password is set and the session has not logged in
    REFUSED = "refused"  # no password, and the cockpit can be reached from elsewhere

    @property
    def allowed(self) -> bool:
        return self in {Access.OPEN, Access.AUTHENTICATED}


def decide_access(
    *, password_set: bool, authenticated: bool, server_address: str, remote_ip: str | None
) -> Access:
    """The one rule for every page. `remote_ip` is None for a loopback client.

    Without a password the bind address decides, not only the client: a cockpit
    bound beyond loopback is refused to a local browser too, so the operator sees
    the problem before someone else does.
    """
    if password_set:
        return Access.AUTHENTICATED if authenticated else Access.LOGIN
    if server_address in LOOPBACK and remote_ip is None:
        return Access.OPEN
    return Access.REFUSED


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("an empty password cannot be set")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches; argon2 compares digests in constant time."""
    try:
        return _hasher.verify(password_hash, password)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        log.error("the configured password hash is not a valid argon2 hash")
        return False


def password_hash_from_config(
    secrets_file: Path | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The configured hash, or None when no password is set."""
    env = os.environ if env is None else env
    secrets_file = SECRETS_FILE if secrets_file is None else secrets_file
    value = env.get(ENV_VAR, "").strip()
    if value:
        return value
    try:
        with secrets_file.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as exc:
        log.error("cannot read %s: %s", secrets_file, exc)
        return None
    found = data.get("password_hash")
    return found.strip() if isinstance(found, str) and found.strip() else None


def write_secrets_hash(password_hash: str, secrets_file: Path | None = None) -> Path:
    """Store the hash in secrets.toml, keeping any other keys; the file is private (0600)."""
    secrets_file = SECRETS_FILE if secrets_file is None else secrets_file
    data: dict[str, object] = {}
    if secrets_file.exists():
        with secrets_file.open("rb") as f:
            data = tomllib.load(f)
    data["password_hash"] = password_hash
    secrets_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = secrets_file.with_suffix(".toml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        tomli_w.dump(data, f)
    os.replace(tmp, secrets_file)
    os.chmod(secrets_file, 0o600)
    return secrets_file


def set_password_cli(
    argv: Sequence[str] | None = None,
    *,
    prompt: Callable[[str], str] = getpass.getpass,
) -> int:
    """`python -m engine set-password [--secrets FILE]`: prompt twice, store the hash."""
    parser = argparse.ArgumentParser(
        prog="python -m engine set-password",
        description="Set the cockpit password (stored as an argon2 hash in secrets.toml).",
    )
    parser.add_argument("--secrets", type=Path, default=None, help="secrets.toml to write")
    args = parser.parse_args(list(argv or []))
    first = prompt("New cockpit password: ")
    if len(first) < MIN_LENGTH:
        print(f"refused: use at least {MIN_LENGTH} characters", file=sys.stderr)
        return 1
    if prompt("Repeat it: ") != first:
        print("refused: the two entries differ", file=sys.stderr)
        return 1
    path = write_secrets_hash(hash_password(first), args.secrets)
    print(f"password hash written to {path}")
    if os.environ.get(ENV_VAR):
        print(f"note: {ENV_VAR} is set and takes precedence over the file", file=sys.stderr)
    return 0


class LoginThrottle:
    """A growing delay after failed logins: 1 s, 2 s, 4 s ... up to `cap` seconds.

    Time is passed in, so tests move it instead of sleeping.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0) -> None:
        self.base = base
        self.cap = cap
        self._failures = 0
        self._not_before = 0.0
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        return self._failures

    def wait_seconds(self, now: float) -> float:
        """How long the next attempt must wait; 0 when it may go ahead."""
        with self._lock:
            return max(0.0, self._not_before - now)

    def record_failure(self, now: float) -> float:
        """Count a failure and return the delay imposed before the next attempt."""
        with self._lock:
            self._failures += 1
            delay = float(min(self.cap, self.base * 2.0 ** (self._failures - 1)))
            self._not_before = now + delay
            return delay

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._not_before = 0.0


# One throttle per cockpit process, shared by every browser session.
throttle = LoginThrottle()
