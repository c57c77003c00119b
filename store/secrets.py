"""The secrets store: credentials encrypted at rest with Fernet, in the database.

Values (the SMTP password, webhook URLs with their tokens, bot tokens, broker
credentials, API keys, the audit chain's HMAC key) live in the `secrets` table as
Fernet tokens, so the database, its WAL and every backup hold ciphertext only.
The key never enters the database: it is `COCKPIT_SECRET_KEY` (a Fernet key) or
the key file beside the database (`cockpit.db` -> `cockpit.key`), created with
mode 0600 the first time a secret is stored. A backup restored elsewhere needs
that key brought along separately.

A secret named `section.key` after a configuration key (`alerts.smtp_password`,
`alerts.webhook_url`) fills that key when the environment and cockpit.toml leave
it unset; any other name is read with `SecretStore.get`.

Rotation writes the new key to `<key file>.new` first, re-encrypts every row in
one transaction, then moves the new file over the old one. A store opened in
between reads with both keys, so a crash at any point loses nothing.

    SecretsError          the store cannot be used as asked
     └── WrongKey         the key does not open the stored values
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlite_utils import Database

from store.db import now_ms

log = logging.getLogger(__name__)

KEY_ENV = "COCKPIT_SECRET_KEY"
NAME_PATTERN = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,99}$")
# Names the engine manages itself; `secrets set` refuses them.
RESERVED_PREFIX = "audit."


class SecretsError(RuntimeError):
    """The store cannot be used as asked; the message says what to do."""


class WrongKey(SecretsError):
    """The configured key does not decrypt the stored values."""


def key_file(db: Path) -> Path:
    """The key file beside a database: `var/cockpit.db` -> `var/cockpit.key`."""
    return db.with_suffix(".key")


def db_file_of(conn: sqlite3.Connection) -> Path | None:
    """The file a connection has open (its `main` database); None when in memory."""
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main" and row[2]:
            return Path(row[2])
    return None


_process_key: list[bytes] = []


def _in_memory_key() -> bytes:
    """An in-memory database lives as long as this process: so may its key."""
    if not _process_key:
        _process_key.append(Fernet.generate_key())
    return _process_key[0]


def _fernet(key: bytes, origin: str) -> Fernet:
    try:
        return Fernet(key.strip())
    except ValueError:
        raise SecretsError(
            f"{origin} is not a Fernet key (32 url-safe base64-encoded bytes)"
        ) from None


def _write_key(path: Path, key: bytes) -> None:
    """Write a key file readable by its owner only, durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


class SecretStore:
    """The key material for one database; rows are read and written through a connection."""

    def __init__(self, db: Path | None, env: Mapping[str, str] | None = None) -> None:
        self.db = None if db is None else Path(db)
        self._env = os.environ if env is None else env

    @classmethod
    def of(cls, conn: sqlite3.Connection) -> SecretStore:
        return cls(db_file_of(conn))

    @property
    def key_file(self) -> Path:
        if self.db is None:
            raise SecretsError("an in-memory database has no key file")
        return key_file(self.db)

    @property
    def from_env(self) -> bool:
        return bool(self._env.get(KEY_ENV, "").strip())

    def _keys(self, *, create: bool) -> MultiFernet | None:
        if self.from_env:
            return MultiFernet([_fernet(self._env[KEY_ENV].encode(), KEY_ENV)])
        if self.db is None:
            return MultiFernet([Fernet(_in_memory_key())])
        keys: list[Fernet] = []
        pending = self.key_file.with_name(self.key_file.name + ".new")
        for path in (pending, self.key_file):
            if path.exists():
                keys.append(_fernet(path.read_bytes(), str(path)))
        if not keys and create:
            key = Fernet.generate_key()
            _write_key(self.key_file, key)
            log.info("created the secrets key file %s (mode 0600)", self.key_file)
            keys.append(Fernet(key))
        return MultiFernet(keys) if keys else None

    # ---------------------------------------------------------------- rows

    def put(self, db: Database, name: str, value: str, now: int | None = None) -> None:
        """Store (or replace) one secret; not committed, the caller's transaction owns it."""
        if not NAME_PATTERN.match(name):
            raise SecretsError(
                f"{name!r}: a name is lower-case letters, digits, '_', '.', '-' (e.g."
                " alerts.smtp_password)"
            )
        keys = self._keys(create=True)
        assert keys is not None
        if self.names(db.conn):
            self._check(db.conn, keys)
        token = keys.encrypt(value.encode()).decode()
        db.conn.execute(
            "INSERT INTO secrets (name, token, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
            " updated_at = excluded.updated_at",
            (name, token, now_ms() if now is None else now),
        )

    def delete(self, db: Database, name: str) -> bool:
        if not db.table("secrets").exists():
            return False
        return db.conn.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount > 0

    def names(self, conn: sqlite3.Connection) -> list[tuple[str, int]]:
        """Every stored name with when it was last set, by name; never a value."""
        try:
            rows = conn.execute("SELECT name, updated_at FROM secrets ORDER BY name").fetchall()
        except sqlite3.OperationalError:  # no table yet: nothing stored
            return []
        return [(str(r[0]), int(r[1])) for r in rows]

    def get(self, conn: sqlite3.Connection, name: str) -> str | None:
        try:
            row = conn.execute("SELECT token FROM secrets WHERE name = ?", (name,)).fetchone()
        except sqlite3.OperationalError:
            return None
        if row is None:
            return None
        return self._decrypt(str(row[0]), name)

    def values(self, conn: sqlite3.Connection) -> dict[str, str]:
        """Every secret, decrypted (for resolving the configuration)."""
        try:
            rows = conn.execute("SELECT name, token FROM secrets").fetchall()
        except sqlite3.OperationalError:
            return {}
        return {str(r[0]): self._decrypt(str(r[1]), str(r[0])) for r in rows}

    def _decrypt(self, token: str, name: str) -> str:
        keys = self._keys(create=False)
        if keys is None:
            raise WrongKey(
                f"secret {name!r} is stored but there is no key: set {KEY_ENV} or restore"
                f" the key file {self.key_file}"
            )
        try:
            return keys.decrypt(token.encode()).decode()
        except InvalidToken:
            raise WrongKey(
                f"the key ({self._origin()}) does not open secret {name!r}: it was stored"
                " under another key"
            ) from None

    def _origin(self) -> str:
        if self.from_env or self.db is None:
            return KEY_ENV if self.from_env else "the process's in-memory key"
        return str(self.key_file)

    def _check(self, conn: sqlite3.Connection, keys: MultiFernet) -> None:
        """Refuse to mix keys: a new secret under a key that cannot read the old ones."""
        row = conn.execute("SELECT name, token FROM secrets LIMIT 1").fetchone()
        try:
            keys.decrypt(str(row[1]).encode())
        except InvalidToken:
            raise WrongKey(
                f"the key ({self._origin()}) does not open the stored secret {row[0]!r};"
                " refusing to store values under a second key"
            ) from None

    # ------------------------------------------------------------- rotation

    def rotate(self, db: Database) -> Path:
        """Re-encrypt every secret under a fresh key and make it the key; returns where
        the new key is.

        With the key in the key file, the file is replaced. With COCKPIT_SECRET_KEY the
        new key stays in `<key file>.new` (mode 0600) for the operator to move into the
        environment, so a crash after the commit cannot lose it.
        """
        old = self._keys(create=False)
        rows = db.conn.execute("SELECT name, token FROM secrets").fetchall()
        if rows and old is None:
            raise WrongKey(f"secrets are stored but there is no key ({self._origin()})")
        plain: list[tuple[str, bytes]] = []
        for name, token in rows:
            try:
                plain.append((str(name), old.decrypt(str(token).encode()) if old else b""))
            except InvalidToken:
                raise WrongKey(
                    f"the key ({self._origin()}) does not open secret {name!r}; nothing changed"
                ) from None
        new_key = Fernet.generate_key()
        pending = self.key_file.with_name(self.key_file.name + ".new")
        _write_key(pending, new_key)
        new = Fernet(new_key)
        with db.conn:
            for name, value in plain:
                db.conn.execute(
                    "UPDATE secrets SET token = ? WHERE name = ?",
                    (new.encrypt(value).decode(), name),
                )
        log.info("secrets re-encrypted under a new key: %d values", len(rows))
        if self.from_env:
            return pending
        os.replace(pending, self.key_file)
        return self.key_file


def stored_values(db: Path) -> dict[str, str]:
    """Every secret stored in the database at `db` ({} when there is none)."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return SecretStore(db).values(conn)
    finally:
        conn.close()
