"""CodeSystems and ValueSets from ``profiles/``: is this code in that value set?

Only what the project's profiles bind to needs answering, so value sets are expanded once at
start into sets of (system, code): ``compose.include`` with listed concepts, or a whole
CodeSystem that is loaded here. A value set that includes a system we do not hold, or hold
only a fragment of (our KSI/KVÅ/ICF subsets), is *open* for that system (any code passes)
rather than wrongly rejecting valid codes.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Expansion:
    codes: set[tuple[str, str]] = field(default_factory=set)
    open_systems: set[str] = field(default_factory=set)  # included whole, but not held here

    def contains(self, system: str | None, code: str) -> bool:
        if system is None:  # a bare `code` element: the binding names the system
            return any(c == code for _, c in self.codes) or bool(self.open_systems)
        return (system, code) in self.codes or system in self.open_systems


class Terminology:
    def __init__(self, resources: list[dict]):
        self.code_systems = {r["url"]: r for r in resources if r.get("resourceType") == "CodeSystem"}
        self.value_sets = {r["url"]: r for r in resources if r.get("resourceType") == "ValueSet"}
        self._expansions: dict[str, Expansion] = {}

    @classmethod
    def load(cls, profiles_dir: Path) -> "Terminology":
        resources = []
        for path in sorted((profiles_dir / "terminology").glob("*.json")):
            resources.append(json.loads(path.read_text(encoding="utf-8")))
        return cls(resources)

    def expansion(self, url: str) -> Expansion | None:
        url = url.split("|")[0]
        if url not in self._expansions:
            vs = self.value_sets.get(url)
            if vs is None:
                return None
            self._expansions[url] = self._expand(vs)
        return self._expansions[url]

    def _expand(self, vs: dict) -> Expansion:
        out = Expansion()
        for inc in vs.get("compose", {}).get("include", []):
            system = inc.get("system")
            if system is None:
                for nested in inc.get("valueSet", []):
                    sub = self.expansion(nested)
                    if sub:
                        out.codes |= sub.codes
                        out.open_systems |= sub.open_systems
                continue
            if inc.get("concept"):
                out.codes |= {(system, c["code"]) for c in inc["concept"]}
            elif system in self.code_systems:
                cs = self.code_systems[system]
                out.codes |= {(system, c) for c in _all_codes(cs.get("concept", []))}
                if cs.get("content") != "complete":  # a fragment of KSI/KVÅ/ICF: other codes exist
                    out.open_systems.add(system)
            else:
                out.open_systems.add(system)
        return out


def _walk(concepts: list[dict]) -> Any:
    for c in concepts:
        yield c
        yield from _walk(c.get("concept", []))


def _all_codes(concepts: list[dict]) -> list[str]:
    return [c["code"] for c in _walk(concepts)]
