"""The access log of the embedded store: two tables, served as one.

Entries of changes go into ``audit_log`` in the store file, inside the change's transaction
(``append_audit`` on its connection). Batches of read entries go into ``read_log`` in the
access-log file beside the store (``<store>.access-log.sqlite``), through the writer process
(``audit_writer.py``: why a file and a process of their own); ``AuditTable.append_audit``
returns once that process has committed them. The reader connection attaches the access-log
file, so reads and searches see both. An entry's id is ``2 × seq`` in ``audit_log`` and
``2 × seq + 1`` in ``read_log``; entries are ordered newest first by (recorded, id).

``SqliteStore`` provides ``_path``, ``_synchronous``, ``_reader``, ``_audit_proc`` and
``_audit_lock``.
"""
from __future__ import annotations

import asyncio
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import orjson

from gateway.store.audit_writer import COLUMNS, INSERT_AUDIT, WIDTH, add_custodian, log_table
from gateway.store.base import AuditQuery
from gateway.store.records import AuditRecord

WRITER = Path(__file__).with_name("audit_writer.py")
_TABLES = (("main.audit_log", 0), ("accesslog.read_log", 1))  # (table, id parity)


def access_log_path(store_path: str) -> str:
    path = Path(store_path)
    return str(path.with_name(f"{path.stem}.access-log.sqlite"))


def append_audit(conn: sqlite3.Connection, records: list[AuditRecord]) -> None:
    conn.executemany(INSERT_AUDIT, [r[:WIDTH] for r in records])


def audit_record(row: tuple) -> AuditRecord:
    return AuditRecord(*row[1:], seq=row[0])  # row[0]: the entry's id


class AuditTable:
    _path: str
    _synchronous: str
    _reader: sqlite3.Connection | None
    _audit_proc: asyncio.subprocess.Process | None
    _audit_lock: asyncio.Lock

    def _attach_access_log(self, conn: sqlite3.Connection) -> None:
        """Create the access-log file if needed and attach it for reading as ``accesslog``."""
        path = access_log_path(self._path)
        with closing(sqlite3.connect(path, isolation_level=None)) as setup:
            setup.execute("PRAGMA journal_mode = WAL")
            setup.executescript(log_table("read_log"))
            add_custodian(setup, "read_log")
        conn.execute("ATTACH DATABASE ? AS accesslog", (path,))

    async def append_audit(self, records: list[AuditRecord]) -> None:
        """Committed by the writer process when this returns; raises (and the caller keeps the
        entries) if it failed, and the next batch starts a new writer."""
        if not records:
            return
        async with self._audit_lock:  # one batch in flight, so each "ok" answers its own batch
            proc = self._audit_proc
            if proc is None or proc.returncode is not None:
                proc = self._audit_proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-S", str(WRITER), access_log_path(self._path), self._synchronous,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            try:
                proc.stdin.write(orjson.dumps([r[:WIDTH] for r in records]) + b"\n")
                await proc.stdin.drain()
                answer = await proc.stdout.readline()
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
            if answer != b"ok\n":
                await self._stop_audit_writer(kill=True)
                raise RuntimeError("the access-log writer process stopped before committing a batch")

    async def _stop_audit_writer(self, kill: bool = False) -> None:
        proc, self._audit_proc = self._audit_proc, None
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.stdin.close()  # it commits what it has read and exits at end of input
        await proc.wait()

    async def read_audit(self, seq: int) -> AuditRecord | None:
        table, parity = _TABLES[seq % 2]
        row = self._reader.execute(f"SELECT seq * 2 + {parity}, {COLUMNS} FROM {table} WHERE seq = ?",
                                   (seq // 2,)).fetchone()
        return audit_record(row) if row else None

    async def search_audit(self, query: AuditQuery) -> tuple[list[AuditRecord], int]:
        conds, args = [], []
        if query.patient is not None:
            conds.append("patient = ?")
            args.append(query.patient)
        if query.organization is not None:
            conds.append("organization = ?")
            args.append(query.organization)
        if query.visible_to is not None:  # an organisation's admin: its own users, or its own records
            conds.append("(organization = ? OR custodian = ?)")
            args += [query.visible_to, query.visible_to]
        if query.since_us is not None:
            conds.append("recorded >= ?")
            args.append(query.since_us)
        if query.until_us is not None:
            conds.append("recorded < ?")
            args.append(query.until_us)
        where = " AND ".join(conds) or "1"
        total = sum(self._reader.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0]
                    for table, _ in _TABLES)
        page_args = list(args)
        if query.before is not None:  # the (recorded, id) of the last entry of the previous page
            where += " AND (recorded < ? OR (recorded = ? AND seq * 2 + {parity} < ?))"
            page_args += [query.before[0], query.before[0], query.before[1]]
        parts = [f"SELECT seq * 2 + {parity} AS id, {COLUMNS} FROM {table} WHERE {where.format(parity=parity)}"
                 for table, parity in _TABLES]
        rows = self._reader.execute(f"{parts[0]} UNION ALL {parts[1]} ORDER BY recorded DESC, id DESC LIMIT ?",
                                    [*page_args, *page_args, query.limit]).fetchall()
        return [audit_record(row) for row in rows], total
