"""The cockpit's password: an argon2id hash, never the password itself.

The hash lives in `.streamlit/secrets.toml` (git-ignored) under `password_hash`,
or in COCKPIT_PASSWORD_HASH, which wins so a deployment can override the file.
`python -m engine set-password` writes it (`store.passwords`, where hashing lives,
below both the cockpit and the engine).

Who may see the cockpit is decided once, by `decide_access`: with a password, a
session that logged in; without one, only a browser on this machine talking to a
cockpit bound to loopback.

Failed logins slow the next attempt from the same address down (LoginThrottle);
the throttle is kept in a file beside the database, so a restart does not reset it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from store.passwords import (
    ENV_VAR,
    MIN_LENGTH,
    hash_password,
    set_password_cli,
    verify_password,
    write_secrets_hash,
)
from store.passwords import SECRETS_FILE as PASSWORDS_FILE

# Hashing and the set-password verb live in store.passwords; the cockpit's names stay.
__all__ = [
    "ENV_VAR",
    "MIN_LENGTH",
    "SECRETS_FILE",
    "Access",
    "LoginThrottle",
    "decide_access",
    "hash_password",
    "password_hash_from_config",
    "set_password_cli",
    "throttle_for",
    "throttle_path",
    "verify_password",
    "write_secrets_hash",
]

log = logging.getLogger(__name__)

SECRETS_FILE = PASSWORDS_FILE

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


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


@dataclass(frozen=True)
class _Record:
    failures: int
    not_before: float  # epoch seconds
    last_failure: float  # epoch seconds


class LoginThrottle:
    """A growing delay after failed logins from one source: base, 2x, 4x ... up to `cap`.

    Keyed by source (the client's address; "local" for this machine), because a new
    browser session costs an attacker nothing but their address is theirs: an
    attacker's failures delay only attempts from where they come from. From any one
    source the wait never exceeds `cap`, even if the file says otherwise (a clock
    set back, an edited file), and failures are forgotten `forget_after` seconds
    after the last one, so an old attack does not keep the operator at the cap.

    With a `path`, the state lives in that small JSON file (mode 0600), read and
    written on every call, so a restart of the cockpit does not reset it and two
    cockpit processes share it. When the file cannot be written the throttle keeps
    working from memory. Time is passed in (epoch seconds, since it must survive a
    restart), so tests move it instead of sleeping.
    """

    MAX_SOURCES = 1000  # an attacker with many addresses cannot grow the file without bound

    def __init__(
        self,
        path: Path | None = None,
        *,
        base: float = 1.0,
        cap: float = 60.0,
        forget_after: float = 900.0,
    ) -> None:
        self.path = path
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self._memory: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def failures(self, source: str, now: float) -> int:
        with self._lock:
            record = self._current(self._load(), source, now)
            return 0 if record is None else record.failures

    def wait_seconds(self, source: str, now: float) -> float:
        """How long the next attempt from `source` must wait; 0 when it may go ahead."""
        with self._lock:
            record = self._current(self._load(), source, now)
            return 0.0 if record is None else min(self.cap, max(0.0, record.not_before - now))

    def record_failure(self, source: str, now: float) -> float:
        """Count a failure from `source`; return the delay before its next attempt."""
        with self._lock:
            records = self._load()
            record = self._current(records, source, now)
            failures = 1 if record is None else record.failures + 1
            delay = float(min(self.cap, self.base * 2.0 ** min(failures - 1, 62)))
            records[source] = _Record(failures, now + delay, now)
            self._save(records, now)
            return delay

    def record_success(self, source: str) -> None:
        with self._lock:
            records = self._load()
            if records.pop(source, None) is not None:
                self._save(records, None)

    def _current(self, records: dict[str, _Record], source: str, now: float) -> _Record | None:
        record = records.get(source)
        if record is None or now - record.last_failure > self.forget_after:
            return None
        return record

    def _load(self) -> dict[str, _Record]:
        if self.path is None:
            return dict(self._memory)
        try:
            raw = json.loads(self.path.read_text())
            return {
                str(source): _Record(int(r["failures"]), float(r["not_before"]), float(r["last"]))
                for source, r in raw.items()
            }
        except FileNotFoundError:
            return dict(self._memory)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("login throttle file %s unreadable (%s); using memory", self.path, exc)
            return dict(self._memory)

    def _save(self, records: dict[str, _Record], now: float | None) -> None:
        if now is not None:
            records = {
                s: r for s, r in records.items() if now - r.last_failure <= self.forget_after
            }
        newest = sorted(records.items(), key=lambda item: item[1].last_failure)
        self._memory = dict(newest[-self.MAX_SOURCES :])
        if self.path is None:
            return
        data = {
            s: {"failures": r.failures, "not_before": r.not_before, "last": r.last_failure}
            for s, r in self._memory.items()
        }
        try:
            _write_private(self.path, json.dumps(data).encode())
        except OSError as exc:
            log.warning("cannot write the login throttle file %s: %s", self.path, exc)


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; the file is created with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def throttle_path(db: Path) -> Path:
    """The throttle's file, beside the state database it guards."""
    return db.with_name(f"{db.name}.login-throttle.json")


_throttles: dict[Path, LoginThrottle] = {}
_throttles_lock = threading.Lock()


def throttle_for(db: Path) -> LoginThrottle:
    """One throttle per database per process (its lock serialises this process's sessions)."""
    path = throttle_path(db)
    with _throttles_lock:
        return _throttles.setdefault(path, LoginThrottle(path))
