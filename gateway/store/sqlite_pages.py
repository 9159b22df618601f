"""Paging support of the embedded store: sizes of bodies, read without the bodies, and the
snapshots that paged searches page through (``search_snapshots``).

A page is fitted to its byte bound (``gateway.budget``) from the sizes SQLite keeps in each
record's header — ``length()`` of a BLOB does not read the BLOB — before any body is read.

``SqliteStore`` provides ``_reader``, ``_writer`` and ``transaction()``.
"""
from __future__ import annotations

import sqlite3
import time
from array import array

from gateway.store.base import Snapshot


def fitting(sizes: list[int], max_bytes: int) -> int:
    """How many of these sizes fit in ``max_bytes`` together (one at least)."""
    used = 0
    for i, size in enumerate(sizes):
        used += size
        if used > max_bytes and i:
            return i
    return len(sizes)


class PageReads:
    _reader: sqlite3.Connection
    _writer: sqlite3.Connection

    async def body_sizes(self, seqs: list[int]) -> dict[int, int]:
        if not seqs:
            return {}
        return dict(self._reader.execute(f"SELECT seq, ifnull(length(body), 0) FROM versions WHERE seq IN "
                                         f"({','.join('?' * len(seqs))})", seqs).fetchall())

    async def current_sizes(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        found = {}
        for rtype, rid in dict.fromkeys(keys):
            row = self._reader.execute("SELECT ifnull(length(v.body), 0) FROM current c JOIN versions v ON "
                                       "v.seq = c.seq WHERE c.rtype = ? AND c.rid = ?", (rtype, rid)).fetchone()
            if row is not None:
                found[(rtype, rid)] = row[0]
        return found

    async def save_snapshot(self, snapshot: Snapshot, ttl_seconds: int) -> None:
        now = int(time.time())
        async with self.transaction():
            self._writer.execute("DELETE FROM search_snapshots WHERE expires < ?", (now,))
            self._writer.execute(
                "INSERT INTO search_snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                (snapshot.snapshot_id, now + ttl_seconds, snapshot.rtype, snapshot.query, snapshot.total,
                 array("q", snapshot.seqs).tobytes(), snapshot.owner))

    async def load_snapshot(self, snapshot_id: str) -> Snapshot | None:
        row = self._reader.execute(
            "SELECT rtype, query, total, seqs, owner FROM search_snapshots WHERE id = ? AND expires >= ?",
            (snapshot_id, int(time.time()))).fetchone()
        if row is None:
            return None
        seqs = array("q")
        seqs.frombytes(row[3])
        return Snapshot(snapshot_id, row[0], row[1], row[2], seqs.tolist(), row[4])
