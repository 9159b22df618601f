"""The LUSEN admission-notice access table in the embedded store (schema in ``sqlite.SCHEMA``).

One row per (organisation, resource) that organisation may read under LUSEN's exception
without consent: the person's Patient and the inpatient Encounter(s) whose notice it receives
(computed by ``gateway.access.notice``). Rows name resources, not patients, because the
exception covers those resources only.
"""
from __future__ import annotations

import sqlite3

# A search or history row is also visible when the organisation holds a notice row for it.
NOTICE_CONDITION = "EXISTS (SELECT 1 FROM notice_access n WHERE n.org = ? AND n.rtype = c.rtype AND n.rid = c.rid)"


def replace_notice_access(conn: sqlite3.Connection, patient: str, rows: list[tuple[str, str, str]]) -> None:
    conn.execute("DELETE FROM notice_access WHERE patient = ?", (patient,))
    conn.executemany("INSERT OR IGNORE INTO notice_access VALUES (?, ?, ?, ?)",
                     [(org, rtype, rid, patient) for org, rtype, rid in rows])


def notice_patients(conn: sqlite3.Connection, organizations: list[str]) -> set[str]:
    if not organizations:
        return set()
    rows = conn.execute(f"SELECT DISTINCT patient FROM notice_access WHERE org IN "
                        f"({','.join('?' * len(organizations))})", organizations).fetchall()
    return {r[0] for r in rows}


def notice_visible(conn: sqlite3.Connection, organization: str, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    found = set()
    for rtype, rid in dict.fromkeys(keys):  # primary-key probes; a read asks for one
        if conn.execute("SELECT 1 FROM notice_access WHERE org = ? AND rtype = ? AND rid = ?",
                        (organization, rtype, rid)).fetchone():
            found.add((rtype, rid))
    return found
