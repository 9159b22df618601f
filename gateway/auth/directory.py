"""The operator's directory: which organisation is a kommunkod's municipality, which are primary care.

LUSEN's admission notice (name, personnummer, folkbokföringsadress) goes without consent to the
person's municipality and primary care. Who that is must come from something the operator
vouches for — never from a resource a client wrote, or any client could declare itself a
municipality and read the notices of everyone registered there. Entries come from

- client registration: ``gateway clients add --organization SE… --kommunkod 1380`` (or
  ``--primary-care``), or
- a directory file the operator loads: ``gateway directory load FILE`` (``FILE_SCHEMA``).

A kommunkod belongs to one municipality, known by its organisation number (the ten digits of
its HSA-ids): the municipality and its units (biståndsenheten, hemtjänst …) may each register
for it; an organisation with another organisation number is refused as a conflict, so a second
claim can never silently take the notices or route them to nobody.

The table lives in the gateway's database beside the registered clients; ``routes`` is asked on
every request that may read a notice, and sees another process's change at once (a counter row,
checked only when SQLite's ``data_version`` says the file changed).
"""
from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema

SCHEMA = """
CREATE TABLE IF NOT EXISTS org_directory (
    hsa TEXT PRIMARY KEY, name TEXT NOT NULL, kommunkod TEXT NOT NULL, primary_care INTEGER NOT NULL,
    source TEXT NOT NULL, updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS org_directory_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT OR IGNORE INTO org_directory_version VALUES (1, 0);
"""
HSA_ID = re.compile(r"^SE(\d{10})-[A-Za-z0-9]+$")
KOMMUNKOD = re.compile(r"^\d{4}$")
FILE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Samverkan Gateway organisation directory",
    "type": "object", "required": ["organizations"], "additionalProperties": False,
    "properties": {"organizations": {"type": "array", "items": {
        "type": "object", "required": ["hsa", "name"], "additionalProperties": False,
        "properties": {
            "hsa": {"type": "string", "pattern": HSA_ID.pattern, "description": "HSA-id"},
            "name": {"type": "string", "minLength": 1},
            "kommunkod": {"type": "string", "pattern": KOMMUNKOD.pattern,
                          "description": "SCB kommunkod: the municipality (or its unit) LUSEN notices go to"},
            "primaryCare": {"type": "boolean", "description": "a vårdcentral: receives the notices of persons listed there"},
        },
        "not": {"required": ["kommunkod", "primaryCare"], "properties": {"primaryCare": {"const": True}}},
    }}},
}


class DirectoryError(ValueError):
    """An entry the directory refuses (a conflict, or not well-formed); the message says why."""


@dataclass(frozen=True)
class Entry:
    hsa: str
    name: str
    kommunkod: str = ""  # '' none
    primary_care: bool = False
    source: str = ""  # "client <id>" or the file it was loaded from

    def routes(self) -> tuple[str, ...]:
        """The LUSEN notice routes this organisation reads (``gateway.access.notice``)."""
        return ((f"kommun:{self.kommunkod}",) if self.kommunkod else ()) + \
            ((f"vc:{self.hsa}",) if self.primary_care else ())

    def summary(self) -> dict:
        out: dict = {"hsa": self.hsa, "name": self.name}
        if self.kommunkod:
            out["kommunkod"] = self.kommunkod
        if self.primary_care:
            out["primaryCare"] = True
        out["source"] = self.source
        return out


class Directory:
    def __init__(self, db_path: str):
        self._conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._data_version = -1
        self._version = -1
        self._routes: dict[str, tuple[str, ...]] = {}

    def close(self) -> None:
        self._conn.close()

    # -- the operator's side ---------------------------------------------------------------
    def register(self, entries: list[Entry]) -> None:
        """Add or replace entries, all or none; raises DirectoryError naming the conflict."""
        for e in entries:
            if not HSA_ID.match(e.hsa):
                raise DirectoryError(f"{e.hsa!r} is not an HSA-id (SE + 10-digit organisation number + '-' + local part)")
            if e.kommunkod and not KOMMUNKOD.match(e.kommunkod):
                raise DirectoryError(f"kommunkod {e.kommunkod!r} of {e.hsa} is not a 4-digit SCB kommunkod")
            if e.kommunkod and e.primary_care:
                raise DirectoryError(f"{e.hsa} cannot be both a municipality's (kommunkod) and primary care")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            owners = {code: orgnr for code, orgnr in self._conn.execute(
                "SELECT kommunkod, substr(hsa, 3, 10) FROM org_directory WHERE kommunkod != ''")}
            for e in entries:
                orgnr = HSA_ID.match(e.hsa).group(1)
                current = self._entry(e.hsa)
                if current is not None and current.kommunkod != e.kommunkod and current.kommunkod:
                    raise DirectoryError(f"{e.hsa} is registered for kommunkod {current.kommunkod}; remove it first "
                                         f"(gateway directory remove {e.hsa}) to move it to {e.kommunkod or 'none'}")
                if e.kommunkod and owners.setdefault(e.kommunkod, orgnr) != orgnr:
                    raise DirectoryError(f"kommunkod {e.kommunkod} belongs to the municipality with organisation number "
                                         f"{owners[e.kommunkod]}; {e.hsa} (organisation number {orgnr}) cannot claim it")
                self._conn.execute("INSERT OR REPLACE INTO org_directory VALUES (?, ?, ?, ?, ?, ?)",
                                   (e.hsa, e.name, e.kommunkod, int(e.primary_care), e.source, int(time.time())))
            self._conn.execute("UPDATE org_directory_version SET version = version + 1")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self._data_version = -1  # this connection's own commits do not change data_version

    def load_file(self, path: Path) -> list[Entry]:
        """Register every organisation of a directory file (``FILE_SCHEMA``), all or none."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            jsonschema.validate(data, FILE_SCHEMA)
        except (OSError, ValueError) as exc:
            raise DirectoryError(f"{path}: {exc}") from None
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
            raise DirectoryError(f"{path}: at {where}: {exc.message}") from None
        entries = [Entry(o["hsa"], o["name"], o.get("kommunkod", ""), bool(o.get("primaryCare")), f"file {path.name}")
                   for o in data["organizations"]]
        self.register(entries)
        return entries

    def remove(self, hsa: str) -> bool:
        cur = self._conn.execute("DELETE FROM org_directory WHERE hsa = ?", (hsa,))
        self._conn.execute("UPDATE org_directory_version SET version = version + 1")
        self._data_version = -1
        return cur.rowcount == 1

    def list(self) -> list[Entry]:
        return [_entry(r) for r in self._conn.execute("SELECT * FROM org_directory ORDER BY kommunkod, hsa")]

    def _entry(self, hsa: str) -> Entry | None:
        row = self._conn.execute("SELECT * FROM org_directory WHERE hsa = ?", (hsa,)).fetchone()
        return _entry(row) if row else None

    # -- the gateway's side ---------------------------------------------------------------
    def routes(self, hsa: str) -> tuple[str, ...]:
        """The notice routes an organisation reads now (``()``: none)."""
        data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:  # someone committed to the file: maybe the directory
            self._data_version = data_version
            version = self._conn.execute("SELECT version FROM org_directory_version").fetchone()[0]
            if version != self._version:
                self._version = version
                self._routes = {e.hsa: e.routes() for e in self.list()}
        return self._routes.get(hsa, ())


def _entry(row: tuple) -> Entry:
    return Entry(row[0], row[1], row[2], bool(row[3]), row[4])
