"""Registered clients, used client-assertion ids (replay protection) and the token-signing
secret, kept in the gateway's database so every gateway process on it agrees, and so
``gateway clients revoke`` takes effect in a running server.

Only public keys (JWKS) are stored; a client keeps its private key. The signing secret is
generated on first use and never leaves the database (nor the repository).
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_clients (
    client_id TEXT PRIMARY KEY, name TEXT NOT NULL, organization TEXT NOT NULL, jwks TEXT NOT NULL,
    scopes TEXT NOT NULL, admin INTEGER NOT NULL, revoked INTEGER NOT NULL, created INTEGER NOT NULL,
    operator INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS auth_jti (
    client_id TEXT NOT NULL, jti TEXT NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS auth_secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret BLOB NOT NULL);
"""


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    organization: str  # HSA-id of the organisation the client acts for
    jwks: dict
    scopes: str  # the most this client may be granted, e.g. "system/*.cruds"
    admin: bool  # reads the access log about its organisation's records and users
    revoked: bool
    created: int
    operator: bool = False  # runs the gateway: reads the whole access log

    def summary(self) -> dict:
        return {"client_id": self.client_id, "name": self.name, "organization": self.organization,
                "scopes": self.scopes, "admin": self.admin, "operator": self.operator, "revoked": self.revoked,
                "keys": [k.get("kid", "?") for k in self.jwks.get("keys", [])]}


class ClientRegistry:
    def __init__(self, db_path: str):
        self._conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        if "operator" not in {row[1] for row in self._conn.execute("PRAGMA table_info(auth_clients)")}:
            self._conn.execute("ALTER TABLE auth_clients ADD COLUMN operator INTEGER NOT NULL DEFAULT 0")
        self._revoked: frozenset[str] = frozenset()
        self._revoked_at = 0.0

    def close(self) -> None:
        self._conn.close()

    def wait_for_locks(self, seconds: float) -> None:
        """How long a statement may wait for another connection's lock (30 s from the start).
        A server lowers it once open: its statements run on the event loop or a worker thread
        that others queue behind, so a long wait there holds up requests."""
        self._conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def add(self, name: str, organization: str, jwks: dict, scopes: str, admin: bool = False,
            operator: bool = False) -> Client:
        client = Client(str(uuid.uuid4()), name, organization, jwks, scopes, admin or operator, False,
                        int(time.time()), operator)
        self._conn.execute("INSERT INTO auth_clients (client_id, name, organization, jwks, scopes, admin, revoked, "
                           "created, operator) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                           (client.client_id, name, organization, json.dumps(jwks), scopes, int(client.admin),
                            client.created, int(operator)))
        return client

    def get(self, client_id: str) -> Client | None:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM auth_clients WHERE client_id = ?", (client_id,)).fetchone()
        return _client(row) if row else None

    def list(self) -> list[Client]:
        return [_client(r) for r in self._conn.execute(f"SELECT {_COLUMNS} FROM auth_clients ORDER BY created, client_id")]

    def revoke(self, client_id: str) -> bool:
        cur = self._conn.execute("UPDATE auth_clients SET revoked = 1 WHERE client_id = ?", (client_id,))
        self._revoked_at = 0.0
        return cur.rowcount == 1

    def is_revoked(self, client_id: str, max_age: float = 2.0) -> bool:
        """Checked on every request: the revoked set is re-read at most every ``max_age`` seconds,
        so a revocation reaches every process within that time."""
        now = time.monotonic()
        if now - self._revoked_at > max_age:
            rows = self._conn.execute("SELECT client_id FROM auth_clients WHERE revoked = 1").fetchall()
            self._revoked = frozenset(r[0] for r in rows)
            self._revoked_at = now
        return client_id in self._revoked

    def use_jti(self, client_id: str, jti: str, expires: int) -> bool:
        """Record a client assertion id; False if it was used before (a replay)."""
        now = int(time.time())
        self._conn.execute("DELETE FROM auth_jti WHERE expires < ?", (now - 60,))
        cur = self._conn.execute("INSERT OR IGNORE INTO auth_jti VALUES (?, ?, ?)", (client_id, jti, expires))
        return cur.rowcount == 1

    def signing_secret(self) -> bytes:
        self._conn.execute("INSERT OR IGNORE INTO auth_secret VALUES (1, ?)", (secrets.token_bytes(32),))
        return self._conn.execute("SELECT secret FROM auth_secret WHERE id = 1").fetchone()[0]


_COLUMNS = "client_id, name, organization, jwks, scopes, admin, revoked, created, operator"


def _client(row: tuple) -> Client:
    return Client(row[0], row[1], row[2], json.loads(row[3]), row[4], bool(row[5]), bool(row[6]), row[7], bool(row[8]))
