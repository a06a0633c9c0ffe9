"""API tokens and the append-only audit log, stored in one SQLite file.

A token is ``temper_<id>_<secret>``. Only the id, a random per-token salt and
``sha256(salt + secret)`` are stored, so the database does not reveal usable tokens. The
audit table has triggers that raise on UPDATE and DELETE, and this module issues neither.
"""

import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from temper.errors import TemperError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "temper_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    salt BLOB NOT NULL,
    digest BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    token_name TEXT,
    role TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    operation TEXT,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
"""


class Role(StrEnum):
    """Permission level of a token; each role includes the rights of the ones before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, required: "Role") -> bool:
        """True when this role has at least the rights of ``required``."""
        order = list(Role)
        return order.index(self) >= order.index(required)


class StoreError(TemperError):
    """The token store rejected a request (for example a duplicate token name)."""


@dataclass(frozen=True)
class Principal:
    """The named token a request authenticated with."""

    name: str
    role: Role


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    seq: int
    time_seconds: float
    token_name: str | None
    role: str | None
    method: str
    path: str
    operation: str | None
    outcome: str
    status: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form used by the audit export."""
        return {
            "seq": self.seq,
            "time": self.time_seconds,
            "token": self.token_name,
            "role": self.role,
            "method": self.method,
            "path": self.path,
            "operation": self.operation,
            "outcome": self.outcome,
            "status": self.status,
            "detail": self.detail,
        }


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class Store:
    """Tokens and audit entries in SQLite; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(
                f"cannot open the plane database {path}: {error}; set --database-path to a "
                "writable file"
            ) from error
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def create_token(self, name: str, role: Role) -> str:
        """Store a new named token and return it; the token cannot be read back later."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO tokens (id, name, role, salt, digest, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (token_id, name, role.value, salt, _digest(salt, secret), time.time()),
                )
        except sqlite3.IntegrityError as error:
            raise StoreError(
                f"a token named {name!r} already exists in {self.path}; choose another --name"
            ) from error
        return f"{TOKEN_PREFIX}{token_id}_{secret}"

    def authenticate(self, token: str) -> Principal | None:
        """Return the token's principal, or None when the token is malformed or unknown."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        token_id, separator, secret = token[len(TOKEN_PREFIX) :].partition("_")
        if not separator or not secret:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, salt, digest FROM tokens WHERE id = ?", (token_id,)
            ).fetchone()
        if row is None:
            return None
        name, role, salt, digest = row
        if not hmac.compare_digest(_digest(salt, secret), digest):
            return None
        return Principal(name=str(name), role=Role(role))

    def append_audit(
        self,
        *,
        principal: Principal | None,
        method: str,
        path: str,
        operation: str | None,
        outcome: str,
        status: int,
        detail: str,
    ) -> None:
        """Append one entry to the audit log."""
        with self._lock:
            self._db.execute(
                "INSERT INTO audit (time, token_name, role, method, path, operation, outcome, "
                "status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    principal.name if principal else None,
                    principal.role.value if principal else None,
                    method,
                    path,
                    operation,
                    outcome,
                    status,
                    detail,
                ),
            )

    def audit_entries(self, after_seq: int = 0) -> list[AuditEntry]:
        """Return the audit entries with a sequence number above ``after_seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, time, token_name, role, method, path, operation, outcome, status, "
                "detail FROM audit WHERE seq > ? ORDER BY seq",
                (after_seq,),
            ).fetchall()
        return [AuditEntry(*row) for row in rows]


def audit_jsonl(entries: list[AuditEntry]) -> Iterator[str]:
    """Yield one JSON line per entry."""
    for entry in entries:
        yield json.dumps(entry.to_json(), sort_keys=True) + "\n"
