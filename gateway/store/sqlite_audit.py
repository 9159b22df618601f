"""The access log's table in the embedded store (schema in ``sqlite.SCHEMA``).

Entries of changes are appended inside the store transaction (``append_audit`` on its
connection); batches of read entries by ``AuditTable.append_audit`` on a connection of their
own in a worker thread. ``SqliteStore`` provides ``_reader``, ``_audit_conn`` and ``_audit_lock``.
"""
from __future__ import annotations

import asyncio
import sqlite3
import threading

from gateway.store.base import AuditQuery
from gateway.store.records import AuditRecord


def append_audit(conn: sqlite3.Connection, records: list[AuditRecord]) -> None:
    # One executemany: the loop runs in C, and SQLite releases the GIL for each step.
    conn.executemany("INSERT INTO audit_log (recorded, action, interaction, outcome, client, organization, patient, "
                     "entities, query) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [r[:9] for r in records])


def audit_record(row: tuple) -> AuditRecord:
    return AuditRecord(*row[1:], seq=row[0])


class AuditTable:
    _reader: sqlite3.Connection | None
    _audit_conn: sqlite3.Connection | None
    _audit_lock: threading.Lock

    async def append_audit(self, records: list[AuditRecord]) -> None:
        """In a worker thread on its own connection, so a batch of log entries does not stall
        the event loop (WAL serialises it with the store's writer; busy_timeout waits its turn)."""
        if records:
            await asyncio.to_thread(self._append_audit_batch, records)

    def _append_audit_batch(self, records: list[AuditRecord]) -> None:
        with self._audit_lock:
            conn = self._audit_conn
            if conn is None:
                raise RuntimeError("the store is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                append_audit(conn, records)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    async def read_audit(self, seq: int) -> AuditRecord | None:
        row = self._reader.execute("SELECT * FROM audit_log WHERE seq = ?", (seq,)).fetchone()
        return audit_record(row) if row else None

    async def search_audit(self, query: AuditQuery) -> tuple[list[AuditRecord], int]:
        conds, args = [], []
        if query.patient is not None:
            conds.append("patient = ?")
            args.append(query.patient)
        if query.organization is not None:
            conds.append("organization = ?")
            args.append(query.organization)
        if query.since_us is not None:
            conds.append("recorded >= ?")
            args.append(query.since_us)
        if query.until_us is not None:
            conds.append("recorded < ?")
            args.append(query.until_us)
        where = " AND ".join(conds) or "1"
        total = self._reader.execute(f"SELECT COUNT(*) FROM audit_log WHERE {where}", args).fetchone()[0]
        if query.before_seq is not None:
            where += " AND seq < ?"
            args.append(query.before_seq)
        rows = self._reader.execute(f"SELECT * FROM audit_log WHERE {where} ORDER BY seq DESC LIMIT ?",
                                    [*args, query.limit]).fetchall()
        return [audit_record(row) for row in rows], total
