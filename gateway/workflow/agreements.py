"""Agreements: the numbers of the discharge process, per region × municipalities, as data.

LUSEN's deadlines and payment rule are the law's defaults, but a region and its municipalities
may agree other values (Stockholm 2020 counts day 0 and uses an average model; other counties
count working days with a 12:00 cut-off). Each agreement is a JSON file in
``profiles/agreements/``, checked against ``agreement.schema.json`` with ``jsonschema`` at
start-up: a bad file stops start-up with a message naming it. A new agreement needs no code.

Which agreement governs a stay: among those whose parties include the region (its organisation
number) and the person's municipality (kommunkod) and that are valid on the day, the most
specific (named municipalities before ``*``, a named region before ``*``), then the latest
``validFrom``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_FILE = "agreement.schema.json"


class AgreementError(RuntimeError):
    """An agreement file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Agreement:
    id: str
    version: str
    valid_from: date
    valid_to: date | None
    regions: frozenset[str]
    municipalities: frozenset[str]
    data: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.id} {self.version}"

    def covers(self, region: str, kommunkod: str | None, on: date) -> bool:
        return (self.valid_from <= on and (self.valid_to is None or on <= self.valid_to)
                and ("*" in self.regions or region in self.regions)
                and ("*" in self.municipalities or (kommunkod or "") in self.municipalities))

    def specificity(self) -> tuple[int, int]:
        return int("*" not in self.municipalities), int("*" not in self.regions)


class Agreements:
    def __init__(self, agreements: list[Agreement]):
        self.all = agreements

    @classmethod
    def load(cls, directory: Path) -> "Agreements":
        schema_path = directory / SCHEMA_FILE
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AgreementError(f"{schema_path}: the agreement schema cannot be read: {exc}") from None
        validator = jsonschema.Draft202012Validator(schema)
        found, ids = [], {}
        for path in sorted(directory.glob("*.json")):
            if path.name == SCHEMA_FILE:
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise AgreementError(f"{path}: not JSON: {exc}") from None
            errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
            if errors:
                where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
                raise AgreementError(f"{path}: at {where}: {errors[0].message}")
            key = (data["id"], data["version"])
            if key in ids:
                raise AgreementError(f"{path}: agreement {data['id']} version {data['version']} is also in {ids[key]}")
            ids[key] = path.name
            found.append(Agreement(data["id"], data["version"], date.fromisoformat(data["validFrom"]),
                                   date.fromisoformat(data["validTo"]) if data.get("validTo") else None,
                                   frozenset(data["parties"]["regions"]), frozenset(data["parties"]["municipalities"]),
                                   data))
        if not any(a.regions == {"*"} and a.municipalities == {"*"} for a in found):
            raise AgreementError(f"{directory}: no agreement for every region and municipality (the law's defaults)")
        return cls(found)

    def governing(self, region: str, kommunkod: str | None, on: date) -> Agreement:
        """The agreement for a stay in ``region``'s care of a person registered in ``kommunkod``."""
        candidates = [a for a in self.all if a.covers(region, kommunkod, on)]
        if not candidates:
            raise AgreementError(f"no agreement covers region {region} and municipality {kommunkod} on {on}")
        return max(candidates, key=lambda a: (a.specificity(), a.valid_from, a.version))

    def by_id(self, agreement_id: str, version: str | None = None) -> Agreement | None:
        matching = [a for a in self.all if a.id == agreement_id and (version is None or a.version == version)]
        return max(matching, key=lambda a: a.valid_from) if matching else None
