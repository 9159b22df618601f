"""SearchParameter registry: FHIR ``SearchParameter`` resources from ``profiles/`` → per-type index plans.

Parameters are data, not code: the standard R4 ones (``profiles/search-parameters/r4-core.json``)
and our own live as FHIR JSON; this module compiles their FHIRPath expressions once at start.
``X.where(resolve() is T)`` cannot be evaluated without a resolver, so it is rewritten to
``X`` plus a filter on the reference's type, which is what it means for literal references.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fhirpathpy.models import models

from gateway import fhirpath

log = logging.getLogger(__name__)

SUPPORTED_PARAM_TYPES = frozenset({"token", "reference", "date", "string", "uri"})
# Parameters whose values come from the store's own columns, not from FHIRPath extraction.
SPECIAL = frozenset({"_id", "_lastUpdated"})
_RESOLVE_IS = re.compile(r"\.where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)")


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    url: str
    expression: str
    targets: tuple[str, ...] = ()
    description: str = ""


@dataclass
class Extractor:
    """One compiled expression part of one parameter for one resource type."""

    param: SearchParam
    evaluate: Callable[[dict], list[Any]]
    target_filter: str | None = None  # from `.where(resolve() is T)`
    first_element: str | None = None  # `Task.owner…` → "owner": skip evaluation when absent

    def may_apply(self, present: frozenset[str]) -> bool:
        """Cheap pre-check: a path can only yield values if its first element is present
        (``present`` comes from ``element_names``)."""
        return self.first_element is None or self.first_element in present


def element_names(resource: dict) -> frozenset[str]:
    """The resource's top-level element names, plus every camel-case stem of each, so that a
    choice element ``effective`` is present when ``effectiveDateTime`` or ``effectivePeriod`` is."""
    names = set(resource)
    for key in resource:
        for i in range(1, len(key)):
            if key[i].isupper():
                names.add(key[:i])
    return frozenset(names)


@dataclass
class TypeParams:
    params: dict[str, SearchParam] = field(default_factory=dict)
    extractors: list[Extractor] = field(default_factory=list)


def split_union(expression: str) -> list[str]:
    """Split on top-level ``|`` (not inside parentheses or quotes)."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


_MEMBER_PATH = re.compile(r"^[A-Z][A-Za-z]+(\.[a-z][A-Za-z]*)+$")


def member_path(part: str, rtype: str, model: dict) -> Callable[[dict], list[Any]] | None:
    """A fast evaluator for plain member paths (``Task.restriction.period``), or None.

    Most search expressions are such paths; walking dicts directly is ~10x cheaper than the
    general FHIRPath engine and gives the same result: lists flatten, choice elements
    (``Observation.effective``) expand to their typed keys (``effectiveDateTime`` …).
    """
    if not _MEMBER_PATH.match(part) or not part.startswith(f"{rtype}."):
        return None
    steps, path = [], rtype
    for name in part.split(".")[1:]:
        path = f"{path}.{name}"
        choices = model["choiceTypePaths"].get(path)
        steps.append(tuple(name + t[0].upper() + t[1:] for t in choices) if choices else (name,))

    def evaluate(resource: dict) -> list[Any]:
        nodes: list[Any] = [resource]
        for keys in steps:
            found: list[Any] = []
            for node in nodes:
                if isinstance(node, dict):
                    for key in keys:
                        value = node.get(key)
                        if isinstance(value, list):
                            found.extend(value)
                        elif value is not None:
                            found.append(value)
            if not found:
                return found
            nodes = found
        return nodes

    return evaluate


def _probe(evaluate: Callable[[dict], list[Any]], rtype: str, first: str | None) -> None:
    """Run a freshly compiled expression once on small probe resources.

    fhirpathpy compiles leniently: an unknown function or a wrong arity only fails when the
    expression is evaluated. Failing here keeps such a parameter out of the registry (and out
    of /metadata) instead of letting it match nothing at search time.
    """
    evaluate({"resourceType": rtype})
    if first:
        evaluate({"resourceType": rtype, first: "x"})
        evaluate({"resourceType": rtype, first: {"id": "x"}})


def _applies_to(part: str, rtype: str) -> bool:
    bare = part.lstrip("(").strip()
    return bare.startswith(f"{rtype}.") or bare.startswith("Resource.") or bare == rtype


class SearchRegistry:
    def __init__(self, definitions: list[dict], resource_types: tuple[str, ...]):
        self.definitions = definitions
        self._types: dict[str, TypeParams] = {t: TypeParams() for t in resource_types}
        model = models["r4"]
        for d in definitions:
            if d.get("type") not in SUPPORTED_PARAM_TYPES or (not d.get("expression") and d.get("code") not in SPECIAL):
                continue
            bases = d.get("base", [])
            for rtype in (resource_types if "Resource" in bases else [b for b in bases if b in self._types]):
                self._add(rtype, d, model)

    def _add(self, rtype: str, d: dict, model: Any) -> None:
        param = SearchParam(d["code"], d["type"], d.get("url", ""), d.get("expression", ""),
                            tuple(d.get("target", ())), d.get("description", ""))
        entry = self._types[rtype]
        if d["code"] in SPECIAL:
            entry.params[param.code] = param
            return
        compiled = []
        for part in split_union(param.expression):
            if not _applies_to(part, rtype):
                continue
            target = None
            match = _RESOLVE_IS.search(part)
            if match:
                target = match.group(1)
                part = _RESOLVE_IS.sub("", part)
            part = re.sub(r"(^|\()\s*Resource\.", lambda m: f"{m.group(1)}{rtype}.", part)
            first = re.match(rf"^\(*\s*{rtype}\.([A-Za-z]+)", part)
            try:
                evaluate = member_path(part, rtype, model) or fhirpath.compile(part, model)
                _probe(evaluate, rtype, first.group(1) if first else None)
                compiled.append(Extractor(param, evaluate, target, first.group(1) if first else None))
            except Exception as exc:  # a definition our engine cannot run: leave the parameter out
                log.warning("search parameter %s on %s not supported: %s", param.url, rtype, exc)
                return
        if compiled:
            entry.params[param.code] = param
            entry.extractors.extend(compiled)

    @classmethod
    def load(cls, profiles_dir: Path, resource_types: tuple[str, ...]) -> "SearchRegistry":
        definitions: list[dict] = []
        for path in sorted((profiles_dir / "search-parameters").glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("resourceType") == "Bundle":
                definitions += [e["resource"] for e in data.get("entry", [])
                                if e.get("resource", {}).get("resourceType") == "SearchParameter"]
            elif data.get("resourceType") == "SearchParameter":
                definitions.append(data)
        return cls(definitions, resource_types)

    def params(self, rtype: str) -> dict[str, SearchParam]:
        return self._types[rtype].params

    def get(self, rtype: str, code: str) -> SearchParam | None:
        return self._types[rtype].params.get(code)

    def extractors(self, rtype: str) -> list[Extractor]:
        return self._types[rtype].extractors
