"""The access tables of the embedded store (schema in ``sqlite.SCHEMA``).

``res_access``: per resource, the organisation that created it (its **custodian**), the Patient
it is about and the **person** that Patient stands for (a national id, so that each
organisation's own Patient resource for one person counts as the same person).

``access_grants``: custodian C discloses its data about person P to organisation O, in
[valid_from, valid_to) (materialised from CareTeam and Consent by ``gateway.access.recompute``).

``notice_access``: one row per (route, resource) readable under LUSEN's exception without
consent: the person's Patient and the inpatient Encounter(s) whose admission notice goes to a
route ("kommun:1380": the municipality the operator registered for that kommunkod; "vc:<HSA-id>":
a primary-care unit the operator registered). Rows name routes, not organisations, so that the
operator's directory decides at read time who the municipality is.
"""
from __future__ import annotations

import sqlite3
from gateway.store.records import StoredResource

# The caller's organisation authored the resource, or its author discloses the person's data to
# the caller now.
ACCESS_CONDITION = (
    "EXISTS (SELECT 1 FROM res_access a WHERE a.rkey = c.rkey AND (a.author = ? OR (a.person != '' AND "
    "EXISTS (SELECT 1 FROM access_grants g WHERE g.org = ? AND g.custodian = a.author AND g.person = a.person "
    "AND g.valid_from <= ? AND g.valid_to > ?))))")
_HAS_GRANT = ("SELECT 1 FROM access_grants WHERE org = ? AND custodian = ? AND person = ? AND valid_from <= ? "
              "AND valid_to > ? LIMIT 1")


def notice_condition(routes: tuple[str, ...], version: str | None = None) -> str:
    """A search or history row is also visible when one of the caller's routes holds a notice row
    for it. ``version``: the column of the version a history row shows; only the current one is
    part of the notice (it tells who is admitted now, not what the record said before)."""
    marks = ",".join("?" * len(routes))
    current = f"c.seq = {version} AND " if version else ""
    return (f"({current}EXISTS (SELECT 1 FROM notice_access n WHERE n.route IN ({marks}) "
            "AND n.rtype = c.rtype AND n.rid = c.rid))")


def access_args(access) -> list:
    return [access.organization, access.organization, access.now_us, access.now_us]


def replace_notice_access(conn: sqlite3.Connection, person: str, rows: list[tuple[str, str, str]]) -> None:
    conn.execute("DELETE FROM notice_access WHERE person = ?", (person,))
    conn.executemany("INSERT OR IGNORE INTO notice_access VALUES (?, ?, ?, ?)",
                     [(route, rtype, rid, person) for route, rtype, rid in rows])


def notice_persons(conn: sqlite3.Connection, routes: list[str]) -> set[str]:
    return _persons_with_rows(conn, "notice_access", "route", routes)


def notice_visible(conn: sqlite3.Connection, routes: tuple[str, ...],
                   keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    found = set()
    if not routes:
        return found
    marks = ",".join("?" * len(routes))
    for rtype, rid in dict.fromkeys(keys):  # primary-key probes; a read asks for one
        if conn.execute(f"SELECT 1 FROM notice_access WHERE route IN ({marks}) AND rtype = ? AND rid = ?",
                        (*routes, rtype, rid)).fetchone():
            found.add((rtype, rid))
    return found


def grant_persons(conn: sqlite3.Connection, organizations: list[str]) -> set[str]:
    return _persons_with_rows(conn, "access_grants", "org", organizations)


def _persons_with_rows(conn: sqlite3.Connection, table: str, column: str, values: list[str]) -> set[str]:
    """Persons any of these organisations (routes) holds a row for in ``table`` (any time)."""
    if not values:
        return set()
    rows = conn.execute(f"SELECT DISTINCT person FROM {table} WHERE {column} IN "
                        f"({','.join('?' * len(values))})", values).fetchall()
    return {r[0] for r in rows}


def replace_grants(conn: sqlite3.Connection, person: str, grants: list[tuple[str, str, int, int]]) -> None:
    """``grants``: (custodian, recipient, from_us, to_us)."""
    conn.execute("DELETE FROM access_grants WHERE person = ?", (person,))
    conn.executemany("INSERT OR REPLACE INTO access_grants VALUES (?, ?, ?, ?, ?)",
                     [(custodian, org, person, lo, hi) for custodian, org, lo, hi in grants])


def has_grant(conn: sqlite3.Connection, organization: str, pairs: list[tuple[str, str]],
              now_us: int) -> set[tuple[str, str]]:
    """Those (custodian, person) pairs whose custodian discloses the person's data to ``organization`` now."""
    found = set()
    for custodian, person in dict.fromkeys(pairs):  # primary-key probes
        if conn.execute(_HAS_GRANT, (organization, custodian, person, now_us, now_us)).fetchone():
            found.add((custodian, person))
    return found


def about_person(conn: sqlite3.Connection, rtype: str, person: str) -> list[int]:
    """Seqs of the current, not deleted resources of ``rtype`` about ``person`` (any of its Patients)."""
    rows = conn.execute("SELECT c.seq FROM res_access a JOIN current c ON c.rkey = a.rkey WHERE a.person = ? "
                        "AND c.rtype = ? AND c.deleted = 0 ORDER BY c.seq", (person, rtype)).fetchall()
    return [r[0] for r in rows]


def rekey_person(conn: sqlite3.Connection, patient: str, person: str) -> set[str]:
    """A Patient now stands for ``person``: so do the resources about it. Returns the persons
    they stood for before (their grants and notices must be recomputed too)."""
    before = {r[0] for r in conn.execute("SELECT DISTINCT person FROM res_access WHERE patient = ? AND person != ?",
                                         (patient, person))}
    if before:
        conn.execute("UPDATE res_access SET person = ? WHERE patient = ?", (person, patient))
    return before


def reshape_before_5(conn: sqlite3.Connection) -> None:
    """Schema 2-4 → 5: access rows keyed by person and custodian. The old grant and notice rows
    are dropped (the gateway recomputes them at start: ``maintenance`` 'access-rebuild')."""
    conn.execute("DROP TABLE IF EXISTS access_grants")
    conn.execute("DROP TABLE IF EXISTS notice_access")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(res_access)")}
    if columns and "person" not in columns:
        conn.execute("ALTER TABLE res_access ADD COLUMN person TEXT NOT NULL DEFAULT ''")


class TransactionAccess:
    """The access rows as a write transaction sees and changes them (``SqliteTransaction``)."""

    _conn: sqlite3.Connection

    async def grant_persons(self, organizations: list[str]) -> set[str]:
        return grant_persons(self._conn, organizations)

    async def replace_grants(self, person: str, grants: list[tuple[str, str, int, int]]) -> None:
        replace_grants(self._conn, person, grants)

    async def replace_notice_access(self, person: str, rows: list[tuple[str, str, str]]) -> None:
        replace_notice_access(self._conn, person, rows)

    async def notice_persons(self, routes: list[str]) -> set[str]:
        return notice_persons(self._conn, routes)

    async def has_grant(self, organization: str, pairs: list[tuple[str, str]], now_us: int) -> set[tuple[str, str]]:
        return has_grant(self._conn, organization, pairs, now_us)

    async def notice_visible(self, routes: tuple[str, ...], keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return notice_visible(self._conn, routes, keys)

    async def about_person(self, rtype: str, person: str) -> list[StoredResource]:
        return await self.read_seqs(about_person(self._conn, rtype, person))

    async def rekey_person(self, patient: str, person: str) -> set[str]:
        return rekey_person(self._conn, patient, person)

    async def maintenance(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT task FROM maintenance")}

    async def maintenance_done(self, task: str) -> None:
        self._conn.execute("DELETE FROM maintenance WHERE task = ?", (task,))

    async def persons(self) -> list[tuple[str, str]]:
        """(Patient id, person) of every resource's access row that names a Patient."""
        return self._conn.execute("SELECT DISTINCT patient, person FROM res_access WHERE patient != ''").fetchall()


class StoreAccess:
    """Access checks on the reader connection (``SqliteStore``)."""

    _reader: sqlite3.Connection | None

    async def has_grant(self, organization: str, pairs: list[tuple[str, str]], now_us: int) -> set[tuple[str, str]]:
        return has_grant(self._reader, organization, pairs, now_us)

    async def notice_visible(self, routes: tuple[str, ...], keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return notice_visible(self._reader, routes, keys)
