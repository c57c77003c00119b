"""The cockpit's password at rest: an argon2id hash, never the password itself.

Both sides use it: the cockpit verifies a login against the hash, and
`python -m engine set-password` writes one, so it lives below both (the engine
never imports the cockpit). The hash lives in `.streamlit/secrets.toml`
(git-ignored, mode 0600) under `password_hash`, or in COCKPIT_PASSWORD_HASH,
which wins so a deployment can override the file.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import tomli_w
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from store.db import PROJECT_ROOT

log = logging.getLogger(__name__)

SECRETS_FILE = PROJECT_ROOT / ".streamlit" / "secrets.toml"
ENV_VAR = "COCKPIT_PASSWORD_HASH"
MIN_LENGTH = 8

_hasher = PasswordHasher()


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
