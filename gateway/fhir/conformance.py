"""The conformance resources this server is defined by, readable over the API.

StructureDefinitions, SearchParameters, CodeSystems, ValueSets and ConceptMaps live as files in
profiles/ (they are the contract, versioned with the code), so they are served read-only from
memory: read by id and a small search (``_id``, ``url``, ``name``, ``status``, plus ``type`` for
StructureDefinition, ``base``/``code`` for SearchParameter, and the source and target code
systems and value sets of a ConceptMap). Writing them is a 405. ConceptMaps
(``profiles/conceptmaps/``) are checked as they load: a malformed one stops start-up naming its file.
"""
from __future__ import annotations

import json
from pathlib import Path

from gateway.errors import BadRequest, NotFound
from gateway.fhir.bundle_bytes import bundle, search_entry
from gateway.fhir.canonical import dumps
from gateway.fhir.context import RequestContext
from gateway.fhir.types import require_uint
from gateway.store.records import StoredResource
from gateway.terminology.conceptmaps import load_concept_maps

CONFORMANCE_TYPES = ("StructureDefinition", "SearchParameter", "CodeSystem", "ValueSet", "ConceptMap")
SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "StructureDefinition": ("_id", "url", "name", "status", "type"),
    "SearchParameter": ("_id", "url", "name", "status", "base", "code"),
    "CodeSystem": ("_id", "url", "name", "status"),
    "ValueSet": ("_id", "url", "name", "status"),
    "ConceptMap": ("_id", "url", "name", "status", "source-system", "target-system", "source-uri", "target-uri"),
}
_FIELD = {"_id": "id"}
_NESTED = {  # ConceptMap: values below the top level (R4's source-system, target-system, source-uri, target-uri)
    "source-system": lambda r: [g.get("source") for g in r.get("group") or []],
    "target-system": lambda r: [g.get("target") for g in r.get("group") or []],
    "source-uri": lambda r: [r.get("sourceUri"), r.get("sourceCanonical")],
    "target-uri": lambda r: [r.get("targetUri"), r.get("targetCanonical")],
}


class ConformanceLibrary:
    def __init__(self, resources: list[dict]):
        self._by_type: dict[str, dict[str, dict]] = {t: {} for t in CONFORMANCE_TYPES}
        self._bytes: dict[tuple[str, str], StoredResource] = {}
        for r in resources:
            rtype, rid = r.get("resourceType"), r.get("id")
            if rtype in self._by_type and rid:
                self._by_type[rtype][rid] = r
                self._bytes[(rtype, rid)] = StoredResource(rtype, rid, 1, 0, dumps(r))

    @classmethod
    def load(cls, profiles_dir: Path, search_parameters: list[dict]) -> "ConformanceLibrary":
        files = [*profiles_dir.glob("StructureDefinition-*.json"), *(profiles_dir / "terminology").glob("*.json")]
        return cls([*(json.loads(p.read_text(encoding="utf-8")) for p in sorted(files)), *search_parameters,
                    *load_concept_maps(profiles_dir / "conceptmaps")])

    def resources(self, rtype: str) -> list[dict]:
        """Every resource of a conformance type, as loaded (shared: never change them)."""
        return list(self._by_type[rtype].values())

    def read(self, rtype: str, rid: str) -> StoredResource:
        found = self._bytes.get((rtype, rid))
        if found is None:
            raise NotFound(f"{rtype}/{rid} is not one of this server's conformance resources.")
        return found

    def search(self, rtype: str, params: list[tuple[str, str]], ctx: RequestContext) -> bytes:
        allowed = SEARCH_PARAMS[rtype]
        matches = list(self._by_type[rtype].values())
        count, summary_count = None, False
        for name, value in params:
            base, _, modifier = name.partition(":")
            if base in ("_format", "_pretty", "_total"):
                continue
            if base == "_count":
                count = require_uint(value, "_count")
                summary_count = summary_count or count == 0
                continue
            if base == "_summary":
                if value not in ("count", "false"):
                    raise BadRequest(f"_summary={value} is not supported; use _summary=count.")
                summary_count = value == "count"
                continue
            if base not in allowed:
                if ctx.lenient:
                    continue
                raise BadRequest(f"{rtype} can be searched by {', '.join(allowed)}, _count and _summary; "
                                 f"not '{name}'.")
            if modifier == "missing":
                if value not in ("true", "false"):
                    raise BadRequest(f"{name} takes true or false.")
                matches = [r for r in matches if (not _of(r, base)) == (value == "true")]
            elif modifier in ("", "exact"):
                prefix = base == "name" and not modifier  # string search: case-insensitive prefix
                wanted = [v.casefold() if prefix else v for v in value.split(",")]
                matches = [r for r in matches if any(
                    (v.casefold().startswith(w) if prefix else v == w) for v in _of(r, base) for w in wanted)]
            else:
                raise BadRequest(f"Modifier ':{modifier}' is not supported on {rtype}.{base}.")
        total = len(matches)
        if summary_count:
            return bundle("searchset", [], total=total)
        shown = matches if count is None else matches[:count]
        entries = [search_entry(ctx.base_url, self._bytes[(rtype, r["id"])], "match") for r in shown]
        return bundle("searchset", entries, total=total)


def _of(resource: dict, param: str) -> list[str]:
    """The values a search parameter looks at in a resource."""
    if param in _NESTED:
        return _values(_NESTED[param](resource))
    return _values(resource.get(_FIELD.get(param, param)))


def _values(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [] if value is None else [str(value)]
