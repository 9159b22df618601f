"""Every FHIRPath expression the gateway evaluates, as the gateway itself compiles them.

The Validator, the SearchRegistry and the TopicCatalog are loaded from profiles/ exactly as
the server loads them, with ``gateway.fhirpath.compile`` recorded: so the list holds the
expressions after the registry's own rewriting (``|`` split, ``Resource.`` → the type,
``.where(resolve() is T)`` dropped) and the invariants after their split on top-level ``or``,
each with the model it is compiled with and the module that compiles it. ``declared()`` adds
what the profile files declare but the gateway does not run through FHIRPath (snapshot copies of
constraints, invariants with a native check), for the coverage count.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from fhirpathpy.models import models

import gateway.fhirpath
from gateway.events.topics import TopicCatalog
from gateway.fhir.types import SUPPORTED_TYPES
from gateway.search.registry import SearchRegistry
from gateway.settings import REPO_PROFILES
from gateway.validation.validator import Validator

R4 = models["r4"]
USES = {"gateway.validation.profiles": "constraint", "gateway.validation.invariants": "invariant",
        "gateway.search.registry": "search", "gateway.events.topics": "trigger"}


@dataclass(frozen=True)
class GatewayExpression:
    expression: str
    model: Any  # fhirpathpy's models["r4"] or None
    use: str  # constraint, invariant, search, trigger

    @property
    def model_name(self) -> str:
        return "r4" if self.model is R4 else "none"


def gateway_expressions(profiles_dir: Path = REPO_PROFILES) -> list[GatewayExpression]:
    """Distinct (expression, model, use), in the order the gateway compiles them."""
    seen: dict[tuple[str, int, str], GatewayExpression] = {}
    real_compile = gateway.fhirpath.compile

    def recording(expression: str, model: Any = None) -> Any:
        use = USES.get(sys._getframe(1).f_globals.get("__name__", ""), "other")
        seen.setdefault((expression, id(model), use), GatewayExpression(expression, model, use))
        return real_compile(expression, model)

    with mock.patch.object(gateway.fhirpath, "compile", recording):
        Validator.load(profiles_dir)
        SearchRegistry.load(profiles_dir, SUPPORTED_TYPES)
        TopicCatalog.load(profiles_dir / "subscription-topics")
    return list(seen.values())


def declared(profiles_dir: Path = REPO_PROFILES) -> list[tuple[str, str]]:
    """(source, expression) of every constraint in the StructureDefinitions (differential and
    snapshot) and every R4 base invariant, whether or not the gateway evaluates it as FHIRPath."""
    out: list[tuple[str, str]] = []
    for path in sorted(profiles_dir.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text(encoding="utf-8"))
        for part in ("differential", "snapshot"):
            for element in sd.get(part, {}).get("element", []):
                out += [(f"{path.name} {part} {c['key']}", c["expression"]) for c in element.get("constraint", [])]
    invariants = json.loads((profiles_dir / "base" / "r4-invariants.json").read_text(encoding="utf-8"))
    out += [(f"r4-invariants {i['key']}", i["expression"]) for i in invariants["invariants"]]
    out.append(("r4-invariants per-1", invariants["per-1"]["expression"]))
    return out
