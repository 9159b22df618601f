"""The FHIR R4 base invariants of our resource types (``profiles/base/r4-invariants.json``).

fhir.resources checks structure and cardinality but no invariant, so a CarePlan activity
with both a reference and a detail, or a Period that ends before it starts, would be stored.
The invariants fhirpathpy evaluates correctly run through fhirpathpy, verbatim. Three it
cannot evaluate get a native check with the same meaning, each said why below:

- per-1 (Period start <= end) and inv-1 (Task lastModified >= authoredOn): fhirpathpy has no
  ``hasValue()`` and compares dateTimes as text, so ``10:00:00+02:00`` would be later than
  ``09:00:00Z``. The native check compares the time spans the values name, and reports only
  an order that holds under every reading (different precision, no time zone), as FHIRPath
  gives empty, not false, when the comparison is undecided.
- ctm-1 (onBehalfOf only for a Practitioner member): fhirpathpy has no ``resolve()``; the
  member's type is read from its literal reference (or the contained resource it points to),
  and a member of unknown type passes, as ``resolve().iif(empty(), true, …)`` does.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from fhirpathpy.models import models

from gateway import fhirpath
from gateway.errors import Issue
from gateway.fhir.references import parse_reference
from gateway.search.dates import date_range
from gateway.validation.bindings import values_at

log = logging.getLogger(__name__)
_MODEL = models["r4"]
# Member names whose value is a Period in R4 (resource elements, datatypes and choice forms).
PERIOD_KEYS = frozenset({"period", "executionPeriod", "dataPeriod", "during", "scheduledPeriod",
                         "valuePeriod", "boundsPeriod"})
# The widest offset a time without a zone may have (UTC-12 … UTC+14), in µs.
_UNKNOWN_ZONE_US = 14 * 3600 * 1_000_000
_ZONE = re.compile(r"[+-]\d{2}:\d{2}$")


@dataclass(frozen=True)
class BaseInvariant:
    key: str
    human: str
    steps: tuple[str, ...]  # below the resource: "CarePlan.activity" → ("activity",)
    holds: Callable[[Any, dict], bool]


class BaseInvariants:
    """Per resource type, the R4 invariants to check on each write."""

    def __init__(self, by_type: dict[str, list[BaseInvariant]]):
        self.by_type = by_type

    @classmethod
    def load(cls, path: Path) -> "BaseInvariants":
        data = json.loads(path.read_text(encoding="utf-8"))
        by_type: dict[str, list[BaseInvariant]] = {}
        for inv in data["invariants"]:
            rtype, *steps = inv["path"].split(".")
            holds = _NATIVE.get(inv["key"])
            if holds is None:
                if "fhirpathpy" in inv:
                    raise ValueError(f"{inv['key']} does not evaluate with fhirpathpy and has no native check")
                holds = _fhirpath(inv["expression"])
            by_type.setdefault(rtype, []).append(BaseInvariant(inv["key"], inv["human"], tuple(steps), holds))
        return cls(by_type)

    def issues(self, resource: dict, rtype: str) -> list[Issue]:
        issues = []
        for inv in self.by_type.get(rtype, ()):
            for path, node in values_at(resource, inv.steps, rtype):
                if not inv.holds(node, resource):
                    issues.append(Issue("invariant", f"{path}: {inv.key}: {inv.human}", expression=[path]))
        for path, period in _periods(resource, rtype):
            start, end = period.get("start"), period.get("end")
            if isinstance(start, str) and isinstance(end, str) and surely_before(end, start):
                issues.append(Issue("invariant", f"{path}: per-1: the period ends ({end}) before it starts "
                                    f"({start}); start must not be later than end", expression=[path]))
        return issues


def _fhirpath(expression: str) -> Callable[[Any, dict], bool]:
    """The invariant as a predicate. fhirpathpy evaluates both sides of ``or``; we evaluate the
    top-level alternatives one by one and stop at the first true one (``A or B`` is true exactly
    when one of them is), which makes ppc-2..5 and cpl-3 several times cheaper."""
    alternatives = [fhirpath.compile(part, _MODEL) for part in top_level_alternatives(expression)]

    def holds(node: Any, resource: dict) -> bool:
        env = {"resource": resource, "rootResource": resource}
        try:
            return any(alternative(node, env) == [True] for alternative in alternatives)
        except Exception as exc:  # an unevaluable rule must not let the resource through
            log.warning("base invariant could not be evaluated: %s", type(exc).__name__)
            return False
    return holds


def top_level_alternatives(expression: str) -> list[str]:
    """``a or (b or c)`` → ["a", "(b or c)"]; the whole expression when it has a top-level
    ``xor`` or ``implies`` (which bind as loosely as, or more loosely than, ``or``)."""
    parts, depth, start = [], 0, 0
    words = re.finditer(r"'(?:[^'\\]|\\.)*'|`[^`]*`|[()\[\]{}]|\b(?:or|xor|implies)\b", expression)
    for m in words:
        token = m.group()
        if token[0] in "'`":
            continue
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth -= 1
        elif depth == 0 and token in ("xor", "implies"):
            return [expression]
        elif depth == 0 and token == "or":
            parts.append(expression[start:m.start()].strip())
            start = m.end()
    parts.append(expression[start:].strip())
    return parts


def _periods(node: Any, path: str) -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in PERIOD_KEYS and isinstance(value, dict):
                yield f"{path}.{key}", value
            elif isinstance(value, (dict, list)):
                yield from _periods(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _periods(item, f"{path}[{i}]")


# -- comparing FHIR date/dateTime/instant values --------------------------------------------
def surely_before(a: str, b: str) -> bool:
    """True if the time span ``a`` names ends before the one ``b`` names starts under every
    reading of both; False when undecided or unparseable. Spans come from ``date_range``
    (a value covers its whole precision); a value without a zone is read as UTC there, so it
    is widened by the widest offset when the other value has one."""
    try:
        a_high, b_low = date_range(a)[1], date_range(b)[0]
    except ValueError:
        return False
    a_zone, b_zone = _has_zone(a), _has_zone(b)
    if a_zone != b_zone:
        a_high += 0 if a_zone else _UNKNOWN_ZONE_US
        b_low -= 0 if b_zone else _UNKNOWN_ZONE_US
    return a_high < b_low


def _has_zone(value: str) -> bool:
    return "T" in value and (value.endswith("Z") or _ZONE.search(value) is not None)


# -- native checks for what fhirpathpy cannot evaluate ----------------------------------------
def _task_modified_after_authored(task: Any, _resource: dict) -> bool:
    modified, authored = task.get("lastModified"), task.get("authoredOn")
    if not (isinstance(modified, str) and isinstance(authored, str)):
        return True
    return not surely_before(modified, authored)


def _on_behalf_of_only_for_practitioner(participant: Any, resource: dict) -> bool:
    if not isinstance(participant, dict) or "onBehalfOf" not in participant:
        return True
    member = participant.get("member")
    if not isinstance(member, dict):
        return True
    reference = member.get("reference")
    if isinstance(reference, str) and reference.startswith("#"):
        contained = [c for c in resource.get("contained") or [] if isinstance(c, dict) and c.get("id") == reference[1:]]
        kind = contained[0].get("resourceType") if contained else None
    else:
        parsed = parse_reference(member) if isinstance(reference, str) else None
        kind = parsed[0] if parsed else None  # identifier-only: resolve() is empty, so it passes
    return kind in (None, "Practitioner")


_NATIVE: dict[str, Callable[[Any, dict], bool]] = {
    "inv-1": _task_modified_after_authored,
    "ctm-1": _on_behalf_of_only_for_practitioner,
}
