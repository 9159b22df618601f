"""Embedded store: one SQLite file in WAL mode.

Two connections: a writer used only inside ``transaction()`` (group commit, serialised by an
asyncio lock and ``BEGIN IMMEDIATE``, so another process on the same file also waits its turn:
``sqlite_writes.py``) and a reader in autocommit mode that sees only committed data. Statements
run inline on the event loop: a primary-key read is tens of microseconds, cheaper than a hop to
a thread. Pages whose bodies are large together (a 10 MB resource takes 10-20 ms to read) are
read by a third connection on a thread of its own (``read_large``): SQLite lets go of the GIL
while it reads, so the loop goes on serving meanwhile. No connection waits on the loop for
another process's lock: the writer polls for it asynchronously, and the reader (which in WAL
mode meets a lock only while another process recovers the WAL after a crash, or holds the file
exclusively) waits at most ``READER_BUSY_MS``. Failures a client should hear about (full disk, busy file) are raised as
their ``FhirError`` by the connections themselves (``sqlite_errors.py``).
"""
from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from gateway.store.base import HistoryQuery, Store, Transaction, VersionConflict
from gateway.store.plan import SearchMatches, SearchPlan
from gateway.store.records import AuditRecord, IndexRows, StoredResource
from gateway.store.audit_writer import add_custodian, log_table
from gateway.store.sqlite_audit import AuditTable, append_audit
from gateway.store import sqlite_access as access_sql
from gateway.store.sqlite_access import ACCESS_CONDITION, access_args, notice_condition
from gateway.store.sqlsearch import from_where, order_by
from gateway.store.sqlite_errors import StoreConnection
from gateway.store.sqlite_pages import PageReads, fitting
from gateway.store.sqlite_writes import GroupCommit, in_thread
from gateway.store import sqlite_events as events
from gateway.store.sqlite_mapping import MAPPING_SCHEMA, TransactionMapping

READER_BUSY_MS = 20  # the most a read may hold up the event loop waiting for a lock (then 503)
LARGE_READ = 1024 * 1024  # bodies of pages this large together are read on the bulk thread
# A resource with more index rows than this writes each table's in one statement. executemany lets go
# of the GIL and takes it back for every row: with a thread running Python beside the loop (a large
# body being validated) each take waited up to the switch interval, and a Patient of 27,000 addresses
# (~100,000 rows) held the loop for 10 s.
MANY_INDEX_ROWS = 256
SCHEMA_VERSION = 5  # 2: res_access, access_grants (organisation access); 3: notice_access (LUSEN); 4: subscriptions;
# 5: access by person and custodian (res_access.person, grants per custodian, notice rows per route)


class StoreSchemaError(RuntimeError):
    """The SQLite file was written with a different schema."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rtype TEXT NOT NULL, rid TEXT NOT NULL, vid INTEGER NOT NULL,
    last_updated INTEGER NOT NULL, body BLOB,
    UNIQUE (rtype, rid, vid)
);
CREATE INDEX IF NOT EXISTS versions_type ON versions (rtype, seq);
CREATE TABLE IF NOT EXISTS current (
    rkey INTEGER PRIMARY KEY,
    rtype TEXT NOT NULL, rid TEXT NOT NULL, vid INTEGER NOT NULL, seq INTEGER NOT NULL,
    last_updated INTEGER NOT NULL, deleted INTEGER NOT NULL,
    UNIQUE (rtype, rid)
);
CREATE INDEX IF NOT EXISTS current_type ON current (rtype, deleted, seq);
-- Index rows are WITHOUT ROWID tables keyed by (rkey, param, value): the key itself serves
-- the per-resource EXISTS probes and deletes, so each row costs two B-tree inserts, not three.
-- A missing token system or reference type is stored as '' (key columns cannot be NULL).
CREATE TABLE IF NOT EXISTS idx_token (rkey INTEGER NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT NOT NULL, code TEXT NOT NULL, PRIMARY KEY (rkey, param, code, system)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_token_value ON idx_token (rtype, param, code, system);
CREATE TABLE IF NOT EXISTS idx_ref (rkey INTEGER NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
    ttype TEXT NOT NULL, tid TEXT NOT NULL, PRIMARY KEY (rkey, param, tid, ttype)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_ref_value ON idx_ref (rtype, param, tid, ttype);
CREATE INDEX IF NOT EXISTS idx_ref_target ON idx_ref (ttype, tid);
CREATE TABLE IF NOT EXISTS idx_date (rkey INTEGER NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
    low INTEGER NOT NULL, high INTEGER NOT NULL, PRIMARY KEY (rkey, param, low, high)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_date_value ON idx_date (rtype, param, low);
CREATE TABLE IF NOT EXISTS idx_string (rkey INTEGER NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
    value TEXT NOT NULL, raw TEXT NOT NULL, PRIMARY KEY (rkey, param, value, raw)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_string_value ON idx_string (rtype, param, value);
-- Who created each resource (its custodian), which Patient it is about and which person that
-- Patient stands for; grants say which custodian discloses which person's data to which
-- organisation, and when (materialised from CareTeam and Consent, gateway.access).
CREATE TABLE IF NOT EXISTS res_access (rkey INTEGER PRIMARY KEY, author TEXT NOT NULL, patient TEXT NOT NULL,
    person TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS res_access_patient ON res_access (patient);
CREATE TABLE IF NOT EXISTS access_grants (custodian TEXT NOT NULL, org TEXT NOT NULL, person TEXT NOT NULL,
    valid_from INTEGER NOT NULL, valid_to INTEGER NOT NULL,
    PRIMARY KEY (org, custodian, person, valid_from)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_grants_person ON access_grants (person);
-- LUSEN: resources a notice route may read without consent (gateway.access.notice).
CREATE TABLE IF NOT EXISTS notice_access (route TEXT NOT NULL, rtype TEXT NOT NULL, rid TEXT NOT NULL,
    person TEXT NOT NULL, PRIMARY KEY (route, rtype, rid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notice_access_person ON notice_access (person);
-- Work the gateway must do once after an upgrade (e.g. 'access-rebuild': recompute the access rows).
CREATE TABLE IF NOT EXISTS maintenance (task TEXT PRIMARY KEY);
-- The access log (patientdatalagen): append-only; served as AuditEvent to administrators.
-- (audit_log: see audit_writer.log_table, appended below; read entries are in the access-log file)
DROP INDEX IF EXISTS audit_patient;
DROP INDEX IF EXISTS audit_org;
CREATE TABLE IF NOT EXISTS search_snapshots (
    id TEXT PRIMARY KEY, expires INTEGER NOT NULL, rtype TEXT NOT NULL, query TEXT NOT NULL,
    total INTEGER NOT NULL, seqs BLOB NOT NULL, owner TEXT NOT NULL DEFAULT ''
);
""" + log_table("audit_log") + events.EVENTS_SCHEMA + MAPPING_SCHEMA

_READ_CURRENT = (
    "SELECT v.vid, v.last_updated, v.body, v.seq, a.author, a.patient, a.person FROM current c "
    "JOIN versions v ON v.seq = c.seq LEFT JOIN res_access a ON a.rkey = c.rkey WHERE c.rtype = ? AND c.rid = ?"
)
# A version with its resource's access facts (rtype, rid, vid, last_updated, body, seq, author, patient).
_VERSION_COLUMNS = ("SELECT v.rtype, v.rid, v.vid, v.last_updated, v.body, v.seq, a.author, a.patient, a.person "
                    "FROM versions v LEFT JOIN current c ON c.rtype = v.rtype AND c.rid = v.rid "
                    "LEFT JOIN res_access a ON a.rkey = c.rkey")


# The current version and whether its custodian discloses its person's data to an organisation
# now: a read by another organisation in one statement instead of two.
_READ_CURRENT_GRANTED = (
    "SELECT v.vid, v.last_updated, v.body, v.seq, a.author, a.patient, a.person, EXISTS (SELECT 1 FROM "
    "access_grants g WHERE g.org = ? AND g.custodian = a.author AND g.person = a.person AND g.valid_from <= ? "
    "AND g.valid_to > ?) FROM current c "
    "JOIN versions v ON v.seq = c.seq LEFT JOIN res_access a ON a.rkey = c.rkey WHERE c.rtype = ? AND c.rid = ?"
)


def _read(conn: sqlite3.Connection, rtype: str, rid: str) -> StoredResource | None:
    row = conn.execute(_READ_CURRENT, (rtype, rid)).fetchone()
    return StoredResource(rtype, rid, row[0], row[1], row[2], row[3], row[4], row[5], row[6]) if row else None


def _search(conn: sqlite3.Connection, plan: SearchPlan) -> SearchMatches:
    source, args = from_where(plan)
    order, order_args = order_by(plan.sort)
    rows = conn.execute(
        f"SELECT c.seq {source} ORDER BY {order} LIMIT ?", [*args, *order_args, plan.limit + 1]
    ).fetchall()
    seqs = [r[0] for r in rows[: plan.limit]]
    total = len(rows)
    if total > plan.limit:
        total = conn.execute(f"SELECT COUNT(*) {source}", args).fetchone()[0]
    return SearchMatches(seqs, total)


def _fetch_all(conn: sqlite3.Connection, sql: str, args: list) -> list[tuple]:
    return conn.execute(sql, args).fetchall()


def _read_seqs(conn: sqlite3.Connection, seqs: list[int]) -> list[StoredResource]:
    if not seqs:
        return []
    rows = conn.execute(f"{_VERSION_COLUMNS} WHERE v.seq IN ({','.join('?' * len(seqs))})", seqs).fetchall()
    by_seq = {r[5]: StoredResource(*r) for r in rows}
    return [by_seq[s] for s in seqs if s in by_seq]


def _read_version(conn: sqlite3.Connection, rtype: str, rid: str, vid: int) -> StoredResource | None:
    row = conn.execute(f"{_VERSION_COLUMNS} WHERE v.rtype = ? AND v.rid = ? AND v.vid = ?", (rtype, rid, vid)).fetchone()
    return StoredResource(*row) if row else None


class SqliteTransaction(access_sql.TransactionAccess, events.TransactionEvents, TransactionMapping, Transaction):
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self.committed: list = []  # on_commit callbacks, run by SqliteStore.transaction()

    async def read(self, rtype: str, rid: str) -> StoredResource | None:
        return _read(self._conn, rtype, rid)

    async def search(self, plan: SearchPlan) -> SearchMatches:
        return _search(self._conn, plan)

    async def read_seqs(self, seqs: list[int]) -> list[StoredResource]:
        return _read_seqs(self._conn, seqs)

    async def read_version(self, rtype: str, rid: str, vid: int) -> StoredResource | None:
        return _read_version(self._conn, rtype, rid, vid)

    async def append_audit(self, records: list[AuditRecord]) -> None:
        append_audit(self._conn, records)

    async def put(self, version: StoredResource, index: IndexRows | None,
                  access: tuple[str, str, str] | None = None) -> StoredResource:
        conn = self._conn
        row = conn.execute("SELECT rkey, vid FROM current WHERE rtype = ? AND rid = ?",
                           (version.rtype, version.rid)).fetchone()
        current_vid = row[1] if row else 0
        if version.vid != current_vid + 1:
            raise VersionConflict(f"{version.rtype}/{version.rid}: expected version {current_vid + 1}")
        seq = conn.execute(
            "INSERT INTO versions (rtype, rid, vid, last_updated, body) VALUES (?, ?, ?, ?, ?)",
            (version.rtype, version.rid, version.vid, version.last_updated_us, version.body),
        ).lastrowid
        deleted = 1 if version.body is None else 0
        if row:
            rkey = row[0]
            conn.execute("UPDATE current SET vid = ?, seq = ?, last_updated = ?, deleted = ? WHERE rkey = ?",
                         (version.vid, seq, version.last_updated_us, deleted, rkey))
            for table in ("idx_token", "idx_ref", "idx_date", "idx_string"):
                conn.execute(f"DELETE FROM {table} WHERE rkey = ?", (rkey,))
        else:
            rkey = conn.execute(
                "INSERT INTO current (rtype, rid, vid, seq, last_updated, deleted) VALUES (?, ?, ?, ?, ?, ?)",
                (version.rtype, version.rid, version.vid, seq, version.last_updated_us, deleted),
            ).lastrowid
        if index is not None and not deleted:
            if max(len(index.tokens), len(index.references), len(index.dates), len(index.strings)) > MANY_INDEX_ROWS:
                # thousands of rows take SQLite a second or more: on a thread, holding the write lock, not the loop
                await in_thread(self._write_index, rkey, version.rtype, index)
            else:
                self._write_index(rkey, version.rtype, index)
        if access is not None:  # the author is who created it: later versions keep it
            conn.execute("INSERT INTO res_access VALUES (?, ?, ?, ?) ON CONFLICT (rkey) DO UPDATE SET patient = "
                         "excluded.patient, person = excluded.person", (rkey, *access))
        found = conn.execute("SELECT author, patient, person FROM res_access WHERE rkey = ?", (rkey,)).fetchone()
        return StoredResource(version.rtype, version.rid, version.vid, version.last_updated_us, version.body, seq,
                              *(found or (None, None, None)))

    def _write_index(self, rkey: int, rtype: str, index: IndexRows) -> None:
        for table, rows in (("idx_token", [(p, s or "", c) for p, s, c in index.tokens]),
                            ("idx_ref", [(p, t or "", i) for p, t, i in index.references]),
                            ("idx_date", index.dates), ("idx_string", index.strings)):
            if len(rows) > MANY_INDEX_ROWS:  # one statement: the GIL is let go and taken back once, not per row
                self._conn.execute(f"INSERT OR IGNORE INTO {table} SELECT ?, ?, value ->> 0, value ->> 1, value ->> 2 "
                                   "FROM json_each(?)", (rkey, rtype, orjson.dumps(rows)))
            elif rows:
                self._conn.executemany(f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?, ?, ?)",
                                       [(rkey, rtype, *row) for row in rows])


class SqliteStore(access_sql.StoreAccess, AuditTable, events.StoreEvents, PageReads, Store):
    def __init__(self, path: str, synchronous: str = "FULL", busy_timeout: float = 5.0):
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout  # seconds a writer may wait for the file's write lock
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._writes: GroupCommit | None = None
        self._bulk: sqlite3.Connection | None = None  # used only on _bulk_thread
        self._bulk_thread: ThreadPoolExecutor | None = None
        self._audit_proc: asyncio.subprocess.Process | None = None  # started with the first batch
        self._audit_lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, factory=StoreConnection)
        conn.store_path = self._path
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")  # while opening; see open()
        # Reads served from mapped pages skip a read() syscall per B-tree page (measured ~15 → ~10 µs
        # per primary-key read on a 300 MB store); the page cache keeps hot index pages decoded.
        conn.execute("PRAGMA mmap_size = 1073741824")
        conn.execute("PRAGMA cache_size = -65536")
        return conn

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        self._migrate(self._writer)
        self._reader = self._connect()
        self._attach_access_log(self._reader)
        # Serving from here on: no statement may wait for another process's lock on the event loop.
        self._writer.execute("PRAGMA busy_timeout = 0")  # GroupCommit polls for the lock instead
        self._reader.execute(f"PRAGMA busy_timeout = {READER_BUSY_MS}")
        self._writes = GroupCommit(self._writer, self._busy_timeout)
        self._bulk = self._connect()
        self._bulk_thread = ThreadPoolExecutor(1, thread_name_prefix="store-bulk-read")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or refuse a file whose schema this code does not know."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'versions'").fetchone()[0]
        # 1 → 2 → 3 → 4 only add tables: existing resources get no author (visible to trusted
        # callers and through grants only) and no notice rows until they are written again.
        # 2-4 → 5 reshape the access rows; the gateway recomputes them at start (maintenance).
        if version not in (SCHEMA_VERSION, 1, 2, 3, 4) and (has_tables or version):
            conn.close()
            raise StoreSchemaError(f"The store {self._path} has schema version {version}; this gateway uses "
                                   f"{SCHEMA_VERSION}. Point GATEWAY_DB at a new file (no migration exists yet).")
        if version in (2, 3, 4):
            access_sql.reshape_before_5(conn)
        conn.executescript(SCHEMA)
        if version in (2, 3, 4):
            conn.execute("INSERT OR IGNORE INTO maintenance VALUES ('access-rebuild')")
        add_custodian(conn, "audit_log")
        events.add_missing_columns(conn)
        if version == 1:  # a paged search belongs to the organisation that ran it
            conn.execute("ALTER TABLE search_snapshots ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def close(self) -> None:
        async with self._audit_lock:  # a batch still with the writer process finishes first
            await self._stop_audit_writer()
        if self._writes is not None:
            await self._writes.idle()  # a commit on its thread finishes before its connection closes
        if self._bulk_thread is not None:
            self._bulk_thread.shutdown(wait=True)
        for conn in (self._reader, self._writer, self._bulk):
            if conn is not None:
                conn.close()
        self._reader = self._writer = self._bulk = None

    def transaction(self):
        """Group commit (``sqlite_writes.GroupCommit``): writers queued behind each other share
        one SQLite transaction, each in its own savepoint; nobody returns before it is durable."""
        return self._writes.transaction(SqliteTransaction)

    async def read(self, rtype: str, rid: str) -> StoredResource | None:
        return _read(self._reader, rtype, rid)

    async def read_granted(self, rtype: str, rid: str, organization: str,
                           now_us: int) -> tuple[StoredResource | None, bool]:
        row = self._reader.execute(_READ_CURRENT_GRANTED, (organization, now_us, now_us, rtype, rid)).fetchone()
        if row is None:
            return None, False
        return StoredResource(rtype, rid, row[0], row[1], row[2], row[3], row[4], row[5], row[6]), bool(row[7])

    async def search(self, plan: SearchPlan) -> SearchMatches:
        return _search(self._reader, plan)

    async def read_version(self, rtype: str, rid: str, vid: int) -> StoredResource | None:
        return _read_version(self._reader, rtype, rid, vid)

    async def read_seqs(self, seqs: list[int]) -> list[StoredResource]:
        return _read_seqs(self._reader, seqs)

    async def read_large(self, seqs: list[int]) -> list[StoredResource]:
        return await self._read_off_loop(_read_seqs, seqs)

    async def _read_off_loop(self, fn, *args):
        """``fn(bulk connection, *args)`` on the bulk thread."""
        return await asyncio.get_running_loop().run_in_executor(self._bulk_thread, fn, self._bulk, *args)

    async def read_many(self, keys: list[tuple[str, str]]) -> list[StoredResource]:
        found = [await self.read(t, i) for t, i in dict.fromkeys(keys)]
        return [r for r in found if r is not None and not r.deleted]

    async def references_from(self, rtype: str, rids: list[str], params: list[str] | None) -> list[tuple[str, str]]:
        if not rids:
            return []
        sql = (f"SELECT DISTINCT r.ttype, r.tid FROM idx_ref r JOIN current c ON c.rkey = r.rkey "
               f"WHERE c.rtype = ? AND c.rid IN ({','.join('?' * len(rids))}) AND r.ttype != ''")
        args: list = [rtype, *rids]
        if params is not None:
            sql += f" AND r.param IN ({','.join('?' * len(params))})"
            args += params
        return [(t, i) for t, i in self._reader.execute(sql, args).fetchall()]

    async def referencing(self, source_type: str, param: str | None, targets: list[tuple[str, str]]) -> list[int]:
        if not targets:
            return []
        pairs = " OR ".join("(r.ttype = ? AND r.tid = ?)" for _ in targets)
        sql = (f"SELECT DISTINCT c.seq FROM idx_ref r JOIN current c ON c.rkey = r.rkey "
               f"WHERE r.rtype = ? AND c.deleted = 0 AND ({pairs})")
        args: list = [source_type, *[v for pair in targets for v in pair]]
        if param is not None:
            sql += " AND r.param = ?"
            args.append(param)
        return [r[0] for r in self._reader.execute(sql + " ORDER BY c.seq", args).fetchall()]

    async def history(self, query: HistoryQuery) -> tuple[list[StoredResource], int, bool]:
        conds, args = [], []
        if query.rtype is not None:
            conds.append("v.rtype = ?")
            args.append(query.rtype)
        if query.rid is not None:
            conds.append("v.rid = ?")
            args.append(query.rid)
        if query.since_us is not None:
            conds.append("v.last_updated >= ?")
            args.append(query.since_us)
        if query.access is not None:
            open_types = sorted(query.access.open_types)
            routes = query.access.notice_routes
            notice = f" OR {notice_condition(routes, 'v.seq')}" if routes else ""
            conds.append(f"(v.rtype IN ({','.join('?' * len(open_types))}) OR {ACCESS_CONDITION}{notice})")
            args += [*open_types, *access_args(query.access), *routes]
        where = " AND ".join(conds) or "1"
        source = "versions v LEFT JOIN current c ON c.rtype = v.rtype AND c.rid = v.rid"
        total = self._reader.execute(f"SELECT COUNT(*) FROM {source} WHERE {where}", args).fetchone()[0]
        if query.before_seq is not None:
            where += " AND v.seq < ?"
            args.append(query.before_seq)
        limit, cut, large = query.limit, False, False
        if query.max_bytes is not None:  # the sizes first: bodies only of the versions that fit
            sizes = [r[0] or 0 for r in self._reader.execute(
                f"SELECT length(v.body) FROM {source} WHERE {where} ORDER BY v.seq DESC LIMIT ?", [*args, limit])]
            limit = fitting(sizes, query.max_bytes)
            cut, large = limit < len(sizes), sum(sizes[:limit]) >= LARGE_READ
        page = (f"{_VERSION_COLUMNS} WHERE {where} ORDER BY v.seq DESC LIMIT ?", [*args, limit])
        rows = await self._read_off_loop(_fetch_all, *page) if large else self._reader.execute(*page).fetchall()
        return [StoredResource(*r) for r in rows], total, cut or len(rows) == query.limit
