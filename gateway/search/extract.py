"""Index extraction: evaluate a type's SearchParameter expressions on a resource → IndexRows.

Runs once per write (never on the read path). Values are flattened by search parameter type:
token → (system, code); reference → (type, id) or absolute URL; date → [low, high];
string → case- and accent-folded text (plus the raw text for ``:exact``).
"""
from __future__ import annotations

import unicodedata
from typing import Any, Iterator

from gateway.fhir.references import parse_reference
from gateway.search.dates import MAX_US, MIN_US, date_range
from gateway.search.registry import SearchRegistry, element_names
from gateway.store.records import IndexRows

_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def normalise(text: str) -> str:
    """Case- and accent-insensitive form (FHIR string search); ``å`` matches ``a``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).strip()


def _tokens(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, (str, int)):
        yield None, str(value)
    elif isinstance(value, dict):
        if "coding" in value or "text" in value and "system" not in value and "value" not in value:
            for coding in value.get("coding", []):
                yield from _tokens(coding)
        elif "code" in value:  # Coding
            yield value.get("system"), str(value["code"])
        elif "value" in value:  # Identifier, ContactPoint
            yield value.get("system"), str(value["value"])
    elif value is not None:
        yield None, str(value)


def _dates(value: Any) -> Iterator[tuple[int, int]]:
    if isinstance(value, dict):
        if "start" in value or "end" in value:  # Period: an open end is unbounded
            low = date_range(value["start"])[0] if "start" in value else MIN_US
            high = date_range(value["end"])[1] if "end" in value else MAX_US
            yield low, high
        elif "event" in value:  # Timing
            for event in value["event"]:
                yield date_range(str(event))
    elif value is not None:
        yield date_range(str(value))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
        for key in parts:
            part = value.get(key)
            if isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))
            elif isinstance(part, str):
                yield part


def index_resource(registry: SearchRegistry, rtype: str, resource: dict, local_base: str | None = None) -> IndexRows:
    rows = IndexRows()
    present = element_names(resource)
    for ext in registry.extractors(rtype):
        param = ext.param
        if not ext.may_apply(present):
            continue
        try:
            values = ext.evaluate(resource)
        except Exception:  # an expression that does not fit this instance indexes nothing
            continue
        for value in values:
            if param.type in ("token", "uri"):
                rows.tokens.extend((param.code, s, c) for s, c in _tokens(value))
            elif param.type == "reference":
                ref = parse_reference(value, (local_base,))
                if ref is None or (ext.target_filter and ref[0] != ext.target_filter):
                    continue
                rows.references.append((param.code, ref[0], ref[1]))
            elif param.type == "date":
                try:
                    rows.dates.extend((param.code, lo, hi) for lo, hi in _dates(value))
                except ValueError:
                    continue
            elif param.type == "string":
                rows.strings.extend((param.code, normalise(s), s) for s in _strings(value))
    return rows
