"""Swedish identifiers: accept every alias system, store the HL7 Sweden base form, check values.

| identifier | base system (stored and emitted) | aliases accepted |
|---|---|---|
| personnummer | http://electronichealth.se/identifier/personnummer | urn:oid:1.2.752.129.2.1.3.1, https://terminology.hl7.se/sid/se-personnummer |
| samordningsnummer | http://electronichealth.se/identifier/samordningsnummer | urn:oid:1.2.752.129.2.1.3.3 |
| HSA-id | urn:oid:1.2.752.29.4.19 | urn:oid:1.2.752.129.2.1.4.1 |
| organisationsnummer | urn:oid:2.5.4.97 | — |

Personnummer and samordningsnummer are 12 digits YYYYMMDDNNNC (a hyphen after the date is
accepted and removed); C is the Luhn check digit over the last ten digits; a samordningsnummer
has day + 60. An HSA-id is ``SE`` + a 10-digit organisation number + ``-`` + a local part.
"""
from __future__ import annotations

import calendar
import re
from typing import Any

from gateway.errors import Issue

PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"
HSA_ID = "urn:oid:1.2.752.29.4.19"
ORGANISATIONSNUMMER = "urn:oid:2.5.4.97"

ALIASES: dict[str, str] = {
    "urn:oid:1.2.752.129.2.1.3.1": PERSONNUMMER,
    "https://terminology.hl7.se/sid/se-personnummer": PERSONNUMMER,
    "urn:oid:1.2.752.129.2.1.3.3": SAMORDNINGSNUMMER,
    "urn:oid:1.2.752.129.2.1.4.1": HSA_ID,
}
_CHECKED = frozenset({PERSONNUMMER, SAMORDNINGSNUMMER, HSA_ID, ORGANISATIONSNUMMER})
_PERSON_RE = re.compile(r"^(\d{8})-?(\d{4})$")
_HSA_RE = re.compile(r"^SE(\d{10})-[A-Za-z0-9]+$")


def base_system(system: str) -> str:
    """The HL7 Sweden base form of an identifier system (unchanged if it is not an alias)."""
    return ALIASES.get(system, system)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _date_ok(yyyymmdd: str, day_offset: int) -> bool:
    year, month, day = int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]) - day_offset
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def check_person_number(value: str, samordning: bool) -> tuple[str | None, str | None]:
    """(normalised 12-digit value, None) or (None, what is wrong)."""
    kind = "samordningsnummer" if samordning else "personnummer"
    m = _PERSON_RE.match(value)
    if not m:
        return None, f"a {kind} is 12 digits, YYYYMMDDNNNC (e.g. 191212121212), not '{value}'"
    digits = m.group(1) + m.group(2)
    if not _date_ok(digits[:8], 60 if samordning else 0):
        hint = " (a samordningsnummer has day + 60)" if samordning else ""
        return None, f"'{value}' does not start with a valid date for a {kind}{hint}"
    if not luhn_ok(digits[2:]):
        return None, f"'{value}' has a wrong check digit (Luhn over the last ten digits)"
    return digits, None


def check_value(system: str, value: str) -> tuple[str | None, str | None]:
    if system == PERSONNUMMER:
        return check_person_number(value, samordning=False)
    if system == SAMORDNINGSNUMMER:
        return check_person_number(value, samordning=True)
    if system == HSA_ID:
        m = _HSA_RE.match(value)
        if not m:
            return None, f"an HSA-id is SE + 10-digit organisation number + '-' + local part, not '{value}'"
        return value, None
    if system == ORGANISATIONSNUMMER:
        digits = value.replace("-", "")
        if not re.fullmatch(r"\d{10}", digits) or not luhn_ok(digits):
            return None, f"an organisationsnummer is 10 digits with a Luhn check digit, not '{value}'"
        return digits, None
    return value, None


def normalise_identifiers(resource: dict, rtype: str) -> list[Issue]:
    """Rewrite alias systems to the base form and check Swedish identifier values, in place.

    Walks every object with ``system`` and ``value`` (Identifier, also inside Reference.identifier
    and contained resources); returns an issue for each value that is not a valid identifier.
    """
    issues: list[Issue] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            system = node.get("system")
            if isinstance(system, str) and "value" in node:
                system = node["system"] = base_system(system)
                value = node["value"]
                if system in _CHECKED and isinstance(value, str):
                    normal, problem = check_value(system, value)
                    if problem:
                        issues.append(Issue("value", f"{path}.value: {problem}.", expression=[f"{path}.value"]))
                    else:
                        node["value"] = normal
            for key, child in node.items():
                if isinstance(child, (dict, list)):
                    walk(child, f"{path}.{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}[{i}]")

    walk(resource, rtype)
    return issues
