"""The access tables of the embedded store (schema in ``sqlite.SCHEMA``).

``access_grants``: which organisation may see which patient's data, when (materialised from
CareTeam and Consent by ``gateway.access.policy``). ``notice_access``: one row per (organisation, resource) that organisation may read under LUSEN's exception
without consent: the person's Patient and the inpatient Encounter(s) whose notice it receives
(computed by ``gateway.access.notice``). Rows name resources, not patients, because the
exception covers those resources only.
"""
from __future__ import annotations

import sqlite3

# The caller's organisation authored the resource, or holds a grant for its patient now.
ACCESS_CONDITION = (
    "EXISTS (SELECT 1 FROM res_access a WHERE a.rkey = c.rkey AND (a.author = ? OR (a.patient != '' AND "
    "EXISTS (SELECT 1 FROM access_grants g WHERE g.org = ? AND g.patient = a.patient "
    "AND g.valid_from <= ? AND g.valid_to > ?))))")
_HAS_GRANT = ("SELECT 1 FROM access_grants WHERE org = ? AND patient = ? AND valid_from <= ? AND valid_to > ? "
              "LIMIT 1")

# A search or history row is also visible when the organisation holds a notice row for it.
NOTICE_CONDITION = "EXISTS (SELECT 1 FROM notice_access n WHERE n.org = ? AND n.rtype = c.rtype AND n.rid = c.rid)"


def replace_notice_access(conn: sqlite3.Connection, patient: str, rows: list[tuple[str, str, str]]) -> None:
    conn.execute("DELETE FROM notice_access WHERE patient = ?", (patient,))
    conn.executemany("INSERT OR IGNORE INTO notice_access VALUES (?, ?, ?, ?)",
                     [(org, rtype, rid, patient) for org, rtype, rid in rows])


def notice_patients(conn: sqlite3.Connection, organizations: list[str]) -> set[str]:
    return _patients_with_rows(conn, "notice_access", organizations)


def notice_visible(conn: sqlite3.Connection, organization: str, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    found = set()
    for rtype, rid in dict.fromkeys(keys):  # primary-key probes; a read asks for one
        if conn.execute("SELECT 1 FROM notice_access WHERE org = ? AND rtype = ? AND rid = ?",
                        (organization, rtype, rid)).fetchone():
            found.add((rtype, rid))
    return found


def access_args(access) -> list:
    return [access.organization, access.organization, access.now_us, access.now_us]


def grant_patients(conn: sqlite3.Connection, organizations: list[str]) -> set[str]:
    return _patients_with_rows(conn, "access_grants", organizations)


def _patients_with_rows(conn: sqlite3.Connection, table: str, organizations: list[str]) -> set[str]:
    """Patients any of these organisations holds a row for in ``table`` (any time)."""
    if not organizations:
        return set()
    rows = conn.execute(f"SELECT DISTINCT patient FROM {table} WHERE org IN "
                        f"({','.join('?' * len(organizations))})", organizations).fetchall()
    return {r[0] for r in rows}


def replace_grants(conn: sqlite3.Connection, patient: str, grants: list[tuple[str, int, int]]) -> None:
    conn.execute("DELETE FROM access_grants WHERE patient = ?", (patient,))
    conn.executemany("INSERT OR REPLACE INTO access_grants VALUES (?, ?, ?, ?)",
                     [(org, patient, lo, hi) for org, lo, hi in grants])


def has_grant(conn: sqlite3.Connection, organization: str, patients: list[str], now_us: int) -> set[str]:
    if not patients:
        return set()
    if len(patients) == 1:  # a read: one primary-key probe
        row = conn.execute(_HAS_GRANT, (organization, patients[0], now_us, now_us)).fetchone()
        return {patients[0]} if row else set()
    rows = conn.execute(
        f"SELECT DISTINCT patient FROM access_grants WHERE org = ? AND patient IN ({','.join('?' * len(patients))}) "
        "AND valid_from <= ? AND valid_to > ?", [organization, *patients, now_us, now_us]).fetchall()
    return {r[0] for r in rows}
