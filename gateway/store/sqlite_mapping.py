"""What the ingest service keeps about source messages, in the embedded store (``gateway.mapping.ingest``).

``mapping_messages``: the reply given to each message taken, by its key (the mapping's name, the
sending organisation and the message's own identity), so a repeat is answered with the same
reply and changes nothing. Kept as long as notification events (``prune_events``).
``mapping_sequence``: per subject (an HL7 stay), the time of the newest message taken, so an
older one changes nothing. Both are written in the transaction of the message's write.
"""
from __future__ import annotations

import sqlite3

MAPPING_SCHEMA = """
CREATE TABLE IF NOT EXISTS mapping_messages (key TEXT PRIMARY KEY, reply BLOB NOT NULL, media_type TEXT NOT NULL,
    received INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mapping_messages_received ON mapping_messages (received);
CREATE TABLE IF NOT EXISTS mapping_sequence (subject TEXT PRIMARY KEY, occurred INTEGER NOT NULL) WITHOUT ROWID;
"""


def prune_mapping_messages(conn: sqlite3.Connection, before_us: int) -> int:
    return conn.execute("DELETE FROM mapping_messages WHERE received < ?", (before_us,)).rowcount


class TransactionMapping:
    """The ingest methods of ``SqliteTransaction`` (its ``_conn`` is the writer, in a transaction)."""

    _conn: sqlite3.Connection

    async def mapping_reply(self, key: str) -> tuple[bytes, str] | None:
        row = self._conn.execute("SELECT reply, media_type FROM mapping_messages WHERE key = ?", (key,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    async def record_mapping_reply(self, key: str, reply: bytes, media_type: str, received_us: int) -> None:
        self._conn.execute("INSERT INTO mapping_messages VALUES (?, ?, ?, ?)", (key, reply, media_type, received_us))

    async def mapping_sequence(self, subject: str) -> int | None:
        row = self._conn.execute("SELECT occurred FROM mapping_sequence WHERE subject = ?", (subject,)).fetchone()
        return row[0] if row else None

    async def set_mapping_sequence(self, subject: str, occurred_us: int) -> None:
        self._conn.execute("INSERT INTO mapping_sequence VALUES (?, ?) ON CONFLICT (subject) DO UPDATE SET "
                           "occurred = max(occurred, excluded.occurred)", (subject, occurred_us))
