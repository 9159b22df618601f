"""ConceptMaps: one translation service for ``ConceptMap/$translate`` and the mapping modules.

A region's local codes (its wards, its task and activity codes) become ours through the
ConceptMaps in ``profiles/conceptmaps/``. ``$translate`` answers a person or a system asking,
and the ``region-fhir`` mapping normalises a message, with this one implementation: two copies
of the rules below would drift, and a map would then say one thing over the API and do another
to the data.

The rules are R4's ``$translate`` (http://hl7.org/fhir/R4/conceptmap-operation-translate.html):

- a group applies when its ``source`` is the code's system (and, when asked, its ``target`` the
  wanted target system; a ``sourceVersion`` must equal the code's version when both are given);
- every target of the group's element for the code is a match: its ``equivalence``, the target
  ``concept`` (a Coding in the group's target system) and the map it came from (``source``);
- ``unmatched`` and ``disjoint`` say that the code has *no* counterpart: they are matches that map
  to nothing, so the result is true only when some other match maps (an element without targets
  counts as unmatched);
- a code with no element in a group gets the group's ``unmapped`` rule — ``provided`` (the code
  itself, in the target system: equivalence ``equivalent``), ``fixed`` (that one code:
  ``inexact``, it is a catch-all) or ``other-map`` (that map's answer) — but never when an
  element says the code is unmatched (the spec: unmapped does not apply to unmatched codes);
- ``reverse``: the source codes that map to the code, equivalences turned around (a target
  *wider* than its source is a source *narrower* than its target).

``dependsOn`` (mappings that hold only in a context) is refused when a map is loaded: a
translation that silently ignored the context would be wrong. Maps are checked at start-up: a
malformed one stops the gateway with a message naming its file.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from gateway.fhir.types import is_valid_id
from gateway.validation.base import base_issues

EQUIVALENCES = frozenset({"relatedto", "equivalent", "equal", "wider", "subsumes", "narrower", "specializes",
                          "inexact", "unmatched", "disjoint"})  # R4 ConceptMapEquivalence (required binding)
NO_TARGET = frozenset({"unmatched", "disjoint"})  # equivalences that say there is no counterpart
INVERSE = {"wider": "narrower", "narrower": "wider", "subsumes": "specializes", "specializes": "subsumes"}


class ConceptMapError(ValueError):
    """A ConceptMap in profiles/ cannot be used; the message names the file and what to fix."""


@dataclass(frozen=True)
class Match:
    """One ``match`` of ``$translate``."""

    equivalence: str
    source: str  # the canonical URL of the map it comes from
    concept: dict | None = None  # a Coding; None when the map says there is no counterpart
    comment: str | None = None
    products: tuple[dict, ...] = ()  # the target's ``product`` (R4 OtherElement), as given

    @property
    def maps(self) -> bool:
        """True when the code has a counterpart through this match."""
        return self.equivalence not in NO_TARGET and self.concept is not None


@dataclass(frozen=True)
class ConceptTranslation:
    """What the maps say about one code: ``$translate``'s answer as data."""

    matches: tuple[Match, ...]
    message: str
    maps_used: tuple[str, ...] = field(default=())  # canonical URLs of the maps with a group for the system

    @property
    def result(self) -> bool:
        return any(m.maps for m in self.matches)

    def best(self) -> Match | None:
        """The first match that maps (the order of the maps and of their targets), else None."""
        return next((m for m in self.matches if m.maps), None)


class ConceptMaps:
    """The ConceptMaps this gateway holds (from ``profiles/conceptmaps/``), indexed by source system."""

    def __init__(self, maps: list[dict]):
        self._maps = list(maps)
        self._by_id = {m["id"]: m for m in self._maps if m.get("id")}

    def all(self) -> list[dict]:
        return list(self._maps)

    def by_id(self, rid: str) -> dict | None:
        return self._by_id.get(rid)

    def get(self, url: str, version: str | None = None) -> dict | None:
        """The map with this canonical URL (``url|version`` or ``version`` picks one version;
        without a version, the highest held)."""
        base, _, in_url = url.partition("|")
        wanted = version or in_url or None
        found = [m for m in self._maps if m.get("url") == base and (wanted is None or m.get("version") == wanted)]
        return max(found, key=lambda m: str(m.get("version") or "")) if found else None

    def select(self, source: str | None = None, target: str | None = None) -> list[dict]:
        """Maps by their scope: ``source``/``target`` are value set canonicals (``sourceUri`` or
        ``sourceCanonical``, ``targetUri`` or ``targetCanonical``)."""
        return [m for m in self._maps
                if (source is None or source in (m.get("sourceUri"), m.get("sourceCanonical")))
                and (target is None or target in (m.get("targetUri"), m.get("targetCanonical")))]

    def covers(self, system: str, target_system: str) -> bool:
        """Whether some map translates codes of ``system`` into ``target_system``."""
        return any(g.get("source") == system and g.get("target") == target_system
                   for m in self._maps for g in m.get("group") or [])

    def translate(self, system: str, code: str, *, target_system: str | None = None, version: str | None = None,
                  maps: list[dict] | None = None, reverse: bool = False) -> ConceptTranslation:
        """``system|code`` through ``maps`` (default: every map held), as the module docstring says."""
        candidates = self._maps if maps is None else maps
        matches: list[Match] = []
        used: list[str] = []
        for cm in candidates:
            applies, found = (_reverse(cm, system, code, target_system) if reverse
                              else self._forward(cm, system, code, target_system, version, frozenset()))
            if applies:
                used.append(cm["url"])
                matches += found
        return ConceptTranslation(tuple(matches), _message(system, code, target_system, matches, used, reverse),
                                  tuple(used))

    def _forward(self, cm: dict, system: str, code: str, target_system: str | None, version: str | None,
                 seen: frozenset[str]) -> tuple[bool, list[Match]]:
        groups = [g for g in cm.get("group") or [] if g.get("source") == system
                  and (target_system is None or g.get("target") == target_system)
                  and (version is None or g.get("sourceVersion") in (None, version))]
        matches: list[Match] = []
        for g in groups:
            elements = [e for e in g.get("element") or [] if e.get("code") == code]
            for e in elements:
                matches += [_match(cm, g, t) for t in e.get("target") or [{"equivalence": "unmatched"}]]
            if not elements:
                matches += self._unmapped(cm, g, system, code, target_system, version, seen | {cm["url"]})
        return bool(groups), matches

    def _unmapped(self, cm: dict, g: dict, system: str, code: str, target_system: str | None,
                  version: str | None, seen: frozenset[str]) -> list[Match]:
        rule = g.get("unmapped") or {}
        mode = rule.get("mode")
        if mode == "provided":
            return [Match("equivalent", cm["url"], _coding(g, code, None))]
        if mode == "fixed":
            return [Match("inexact", cm["url"], _coding(g, rule["code"], rule.get("display")),
                          "unmapped code: the group's fixed code")]
        if mode == "other-map":
            other = self.get(rule["url"])
            if other is None or other["url"] in seen:  # a cycle of other-maps ends here
                return []
            return self._forward(other, system, code, target_system, version, seen)[1]
        return []


def _reverse(cm: dict, system: str, code: str, target_system: str | None) -> tuple[bool, list[Match]]:
    groups = [g for g in cm.get("group") or [] if g.get("target") == system
              and (target_system is None or g.get("source") == target_system)]
    matches = []
    for g in groups:
        for e in g.get("element") or []:
            for t in e.get("target") or []:
                if t.get("code") == code and t.get("equivalence") not in NO_TARGET:
                    source = {k: v for k, v in (("system", g.get("source")), ("version", g.get("sourceVersion")),
                                                ("code", e.get("code")), ("display", e.get("display"))) if v}
                    matches.append(Match(INVERSE.get(t["equivalence"], t["equivalence"]), cm["url"], source,
                                         t.get("comment")))
    return bool(groups), matches


def _match(cm: dict, g: dict, target: dict) -> Match:
    equivalence = target.get("equivalence", "unmatched")
    concept = _coding(g, target["code"], target.get("display")) if target.get("code") else None
    return Match(equivalence, cm["url"], None if equivalence in NO_TARGET else concept, target.get("comment"),
                 tuple(target.get("product") or ()))


def _coding(g: dict, code: str, display: str | None) -> dict:
    return {k: v for k, v in (("system", g.get("target")), ("version", g.get("targetVersion")), ("code", code),
                              ("display", display)) if v}


def _message(system: str, code: str, target_system: str | None, matches: list[Match], used: list[str],
             reverse: bool) -> str:
    what = f"{system}|{code}"
    into = f" into {target_system}" if target_system else ""
    if not used:
        return f"No ConceptMap here translates {'to' if reverse else 'codes of'} {system}{into}."
    mapped = [m for m in matches if m.maps]
    if mapped:
        return f"{what}: " + "; ".join(f"{m.equivalence} {m.concept['system']}|{m.concept['code']}"
                                       for m in mapped if m.concept) + f" ({', '.join(dict.fromkeys(used))})."
    said = [m for m in matches if m.equivalence in NO_TARGET]
    if said:
        reasons = "; ".join(m.comment for m in said if m.comment)
        return f"{what} has no counterpart{into} ({', '.join(dict.fromkeys(used))})" + (f": {reasons}" if reasons
                                                                                      else ".")
    return f"{what} is not mapped{into} by {', '.join(dict.fromkeys(used))}."


# -- loading and checking -------------------------------------------------------------------------
def check_concept_map(data: object) -> list[str]:
    """What is wrong with a ConceptMap for this gateway (empty: usable): the base R4 resource, the
    R4 invariants cmd-1..3, and what translation needs (id, url, each group's source and target)."""
    if not isinstance(data, dict) or data.get("resourceType") != "ConceptMap":
        return ["not a ConceptMap (resourceType must be ConceptMap)"]
    problems = [i.diagnostics for i in base_issues(copy.deepcopy(data), "ConceptMap")
                if i.severity in ("error", "fatal")]
    if problems:
        return problems
    if not isinstance(data.get("id"), str) or not is_valid_id(data["id"]):
        problems.append("ConceptMap.id is required: the map is read as ConceptMap/[id]")
    if not data.get("url"):
        problems.append("ConceptMap.url is required: maps are found by their canonical URL")
    for gi, g in enumerate(data.get("group") or []):
        where = f"ConceptMap.group[{gi}]"
        if not g.get("source") or not g.get("target"):
            problems.append(f"{where}: source and target (the code systems) are required: a code is translated "
                            "by its system")
        rule = g.get("unmapped") or {}
        if rule and rule.get("mode") not in ("provided", "fixed", "other-map"):
            problems.append(f"{where}.unmapped.mode: '{rule.get('mode')}' is not provided, fixed or other-map")
        if rule.get("mode") == "fixed" and not rule.get("code"):
            problems.append(f"{where}.unmapped: mode fixed needs a code (cmd-2)")
        if rule.get("mode") == "other-map" and not rule.get("url"):
            problems.append(f"{where}.unmapped: mode other-map needs a url (cmd-3)")
        for ei, e in enumerate(g.get("element") or []):
            if not e.get("code"):
                problems.append(f"{where}.element[{ei}].code is required: an element maps one source code")
            for ti, t in enumerate(e.get("target") or []):
                at = f"{where}.element[{ei}].target[{ti}]"
                if t.get("equivalence") not in EQUIVALENCES:
                    problems.append(f"{at}.equivalence: '{t.get('equivalence')}' is not an R4 equivalence "
                                    f"({', '.join(sorted(EQUIVALENCES))})")
                if t.get("equivalence") not in NO_TARGET and not t.get("code"):
                    problems.append(f"{at}.code is required unless the equivalence is unmatched or disjoint")
                if t.get("equivalence") in ("narrower", "inexact") and not t.get("comment"):
                    problems.append(f"{at}.comment is required for a narrower or inexact map (cmd-1)")
                if t.get("dependsOn"):
                    problems.append(f"{at}.dependsOn is not supported by this gateway: a mapping that holds only "
                                    "in a context would be applied without it")
    return problems


def load_concept_maps(directory: Path) -> list[dict]:
    """Every ``*.json`` in ``directory``, checked; ``ConceptMapError`` names the file of the first
    map that is malformed, a second map with an id or url|version already taken, or an
    ``other-map`` that names a map not held."""
    maps: list[tuple[Path, dict]] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConceptMapError(f"{path}: not a JSON ConceptMap: {exc}") from None
        problems = check_concept_map(data)
        if problems:
            raise ConceptMapError(f"{path}: ConceptMap is not usable: " + "; ".join(problems[:5]))
        maps.append((path, data))
    seen: dict[str, Path] = {}
    for path, data in maps:
        for key in (f"id {data['id']}", f"url {data['url']}|{data.get('version', '')}"):
            if key in seen:
                raise ConceptMapError(f"{path}: ConceptMap {key} is already held by {seen[key]}")
            seen[key] = path
    urls = {data["url"] for _, data in maps}
    for path, data in maps:
        for g in data.get("group") or []:
            other = (g.get("unmapped") or {}).get("url")
            if (g.get("unmapped") or {}).get("mode") == "other-map" and other.split("|")[0] not in urls:
                raise ConceptMapError(f"{path}: unmapped other-map {other} is not a ConceptMap held here")
    return [data for _, data in maps]
