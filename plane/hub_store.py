"""The hub's registry of peer planes and its users' own peer tokens, in the plane's SQLite file.

The hub must send a peer's token to call that peer, so it cannot keep a hash of it as the
token store does. Tokens are encrypted with Fernet (AES-128-CBC with an HMAC-SHA256 tag,
from ``cryptography``) under a key derived with HKDF-SHA256 from the key file
(``--hub-key-path``). A copy of the database without the key file reveals no token. The
tokens are decrypted only to build a request to that peer. No API response and no log line
contains one.
"""

import base64
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from temper.errors import TemperError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_peers (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    token BLOB NOT NULL,
    token_name TEXT,
    token_role TEXT,
    created_by TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hub_credentials (
    principal TEXT NOT NULL,
    peer TEXT NOT NULL,
    token BLOB NOT NULL,
    token_name TEXT,
    token_role TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (principal, peer)
);
"""

MIN_KEY_BYTES = 32
_HKDF_INFO = b"temper plane hub peer tokens v1"


class HubStoreError(TemperError):
    """The peer registry or its key file cannot be used."""


@dataclass(frozen=True)
class Peer:
    """A registered peer plane, without its token."""

    name: str
    url: str
    token_name: str | None
    token_role: str | None
    created_by: str
    updated_at_seconds: float


@dataclass(frozen=True)
class Credential:
    """The identity of a hub user's own token for one peer, as stored (never the token)."""

    peer: str
    token_name: str | None
    token_role: str | None
    updated_at_seconds: float


class TokenCipher:
    """Encrypts and decrypts peer tokens with the key in ``key_path``, created when missing."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._fernet: Fernet | None = None
        self._lock = threading.Lock()

    def _load(self) -> Fernet:
        with self._lock:
            if self._fernet is None:
                material = self._read_or_create()
                derived = HKDF(
                    algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO
                ).derive(material)
                self._fernet = Fernet(base64.urlsafe_b64encode(derived))
            return self._fernet

    def _read_or_create(self) -> bytes:
        path = self.key_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as error:
            raise HubStoreError(
                f"cannot create the hub key file {path}: {error}; set --hub-key-path to a "
                "writable path or provide the file"
            ) from error
        else:
            with os.fdopen(descriptor, "w") as key_file:
                key_file.write(secrets.token_urlsafe(48) + "\n")
            log.info("hub key file created", extra={"path": str(path)})
        try:
            material = path.read_bytes().strip()
        except OSError as error:
            raise HubStoreError(
                f"cannot read the hub key file {path}: {error}; fix --hub-key-path"
            ) from error
        if len(material) < MIN_KEY_BYTES:
            raise HubStoreError(
                f"the hub key file {path} contains {len(material)} bytes; it needs at least "
                f"{MIN_KEY_BYTES} random bytes (e.g. `head -c 48 /dev/urandom | base64`)"
            )
        return material

    def encrypt(self, token: str) -> bytes:
        """Return the ciphertext of ``token``."""
        return self._load().encrypt(token.encode())

    def decrypt(self, ciphertext: bytes, label: str) -> str:
        """Return the token; ``label`` names it in the error when the key does not fit."""
        try:
            return self._load().decrypt(ciphertext).decode()
        except InvalidToken as error:
            raise HubStoreError(
                f"cannot decrypt the stored token of {label}: the key in {self.key_path} is "
                "not the one it was stored with; store the token again"
            ) from error


class HubStore:
    """Peers and per-user peer tokens, in their own tables of the plane's database."""

    def __init__(self, database_path: Path, cipher: TokenCipher) -> None:
        self.cipher = cipher
        try:
            database_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(database_path, check_same_thread=False, isolation_level=None)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise HubStoreError(
                f"cannot open the plane database {database_path} for the hub: {error}; set "
                "--database-path to a writable file"
            ) from error
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def put_peer(
        self,
        name: str,
        url: str,
        token: str,
        *,
        token_name: str | None,
        token_role: str | None,
        created_by: str,
    ) -> Peer:
        """Register or replace the peer ``name``."""
        ciphertext = self.cipher.encrypt(token)
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO hub_peers (name, url, token, token_name, token_role, "
                "created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, url, ciphertext, token_name, token_role, created_by, now),
            )
        log.info("hub peer registered", extra={"peer": name, "url": url, "by": created_by})
        return Peer(name, url, token_name, token_role, created_by, now)

    def delete_peer(self, name: str) -> bool:
        """Remove the peer and every user's token for it; False when it was not registered."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM hub_peers WHERE name = ?", (name,)).rowcount
            self._db.execute("DELETE FROM hub_credentials WHERE peer = ?", (name,))
        if deleted:
            log.info("hub peer removed", extra={"peer": name})
        return bool(deleted)

    def peers(self) -> list[Peer]:
        """Return every peer, sorted by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, url, token_name, token_role, created_by, updated_at "
                "FROM hub_peers ORDER BY name"
            ).fetchall()
        return [Peer(*row) for row in rows]

    def peer(self, name: str) -> Peer | None:
        """Return one peer, or None."""
        return next((peer for peer in self.peers() if peer.name == name), None)

    def peer_token(self, name: str) -> str | None:
        """Return the decrypted read token of a peer, or None when it is not registered."""
        with self._lock:
            row = self._db.execute("SELECT token FROM hub_peers WHERE name = ?", (name,)).fetchone()
        return None if row is None else self.cipher.decrypt(row[0], f"peer {name}")

    def put_credential(
        self,
        principal: str,
        peer: str,
        token: str,
        *,
        token_name: str | None,
        token_role: str | None,
    ) -> Credential:
        """Store ``principal``'s own token for ``peer``, replacing an earlier one."""
        ciphertext = self.cipher.encrypt(token)
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO hub_credentials (principal, peer, token, token_name, "
                "token_role, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (principal, peer, ciphertext, token_name, token_role, now),
            )
        log.info("hub credential stored", extra={"peer": peer, "principal": principal})
        return Credential(peer, token_name, token_role, now)

    def delete_credential(self, principal: str, peer: str) -> bool:
        """Remove ``principal``'s token for ``peer``; False when there was none."""
        with self._lock:
            deleted = self._db.execute(
                "DELETE FROM hub_credentials WHERE principal = ? AND peer = ?", (principal, peer)
            ).rowcount
        if deleted:
            log.info("hub credential removed", extra={"peer": peer, "principal": principal})
        return bool(deleted)

    def credentials(self, principal: str) -> dict[str, Credential]:
        """Return ``principal``'s stored peer identities by peer name (without tokens)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT peer, token_name, token_role, updated_at FROM hub_credentials "
                "WHERE principal = ?",
                (principal,),
            ).fetchall()
        return {row[0]: Credential(*row) for row in rows}

    def credential_token(self, principal: str, peer: str) -> str | None:
        """Return ``principal``'s decrypted token for ``peer``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT token FROM hub_credentials WHERE principal = ? AND peer = ?",
                (principal, peer),
            ).fetchone()
        if row is None:
            return None
        return self.cipher.decrypt(row[0], f"{principal}'s token for peer {peer}")
