"""The validator every write goes through: base R4 (structure, then its invariants), then the
profiles that apply.

Profiles that apply to a resource: those the gateway requires for its type
(``GATEWAY_REQUIRED_PROFILES``) plus those it claims in ``meta.profile``. A claimed profile
this server does not hold is reported as a warning, not refused: clients legitimately claim
other guides' profiles (HL7 Sweden base, national profiles). Every extension instance whose
url is one of our extension definitions is checked against that definition, wherever it
occurs, so a profile need not restate an extension's inner rules.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from fhir.resources.R4B import get_fhir_model_class

from gateway.errors import Issue
from gateway.validation.base import base_issues, raise_if_errors
from gateway.validation.invariants import BaseInvariants
from gateway.validation.profiles import Profile, load_profiles
from gateway.validation.terminology import Terminology


class Validator:
    def __init__(self, profiles: dict[str, Profile], terminology: Terminology,
                 required: dict[str, list[str]] | None = None, base_invariants: BaseInvariants | None = None):
        self.profiles = profiles
        self.base_invariants = base_invariants or BaseInvariants({})
        self.terminology = terminology
        self.required = required or {}
        self.extensions = {url: p for url, p in profiles.items() if p.rtype == "Extension"}
        unknown = [u for urls in self.required.values() for u in urls if u not in profiles]
        if unknown:
            raise ValueError(f"required profiles not found in profiles/: {', '.join(unknown)}")

    @classmethod
    def load(cls, profiles_dir: Path, required: dict[str, list[str]] | None = None) -> "Validator":
        invariants = profiles_dir / "base" / "r4-invariants.json"
        return cls(load_profiles(profiles_dir), Terminology.load(profiles_dir), required,
                   BaseInvariants.load(invariants) if invariants.exists() else None)

    def issues(self, resource: dict, rtype: str) -> list[Issue]:
        """Every issue (errors and warnings), base first; normalises identifiers in place."""
        issues = base_issues(resource, rtype)
        if any(i.severity in ("error", "fatal") for i in issues):
            return issues  # profile rules assume a structurally valid resource
        issues += self.base_invariants.issues(resource, rtype)
        claimed = (resource.get("meta") or {}).get("profile") or []
        for url in dict.fromkeys([*self.required.get(rtype, []), *claimed]):
            profile = self.profiles.get(url.split("|")[0]) if isinstance(url, str) else None
            if profile is None:
                issues.append(Issue("not-supported", f"{rtype}.meta.profile: {url} is not a profile this server "
                                    "holds; validated against the base resource only", severity="warning",
                                    expression=[f"{rtype}.meta.profile"]))
            elif profile.rtype != rtype:
                issues.append(Issue("invalid", f"{rtype}.meta.profile: {url} profiles {profile.rtype}, not {rtype}",
                                    expression=[f"{rtype}.meta.profile"]))
            else:
                issues += profile.validate(resource, self.terminology)
        # A profile restating an extension's rules and the extension's own definition find the
        # same fault: report it once, in the profile's wording.
        found = {(i.code, tuple(i.expression)) for i in issues}
        for path, extension in _extensions(resource, rtype):
            definition = self.extensions.get(extension.get("url"))
            if definition is None:
                continue
            holder = re.sub(r"\[\d+\]", "", path.rsplit(".", 1)[0])  # Encounter.extension[3] → Encounter
            if definition.contexts and holder not in definition.contexts and "Element" not in definition.contexts \
                    and datatype_at(holder) not in definition.contexts:
                issues.append(Issue("structure", f"{path}: extension {definition.url} may only be used on "
                                    f"{' or '.join(definition.contexts)}, not on {holder}", expression=[path]))
                continue
            issues += [i for i in definition.validate(resource, self.terminology, extension, path)
                       if (i.code, tuple(i.expression)) not in found]
        return issues

    def validate(self, resource: dict, rtype: str) -> None:
        """Raise ``InvalidResource`` (422) if any issue is an error."""
        raise_if_errors(self.issues(resource, rtype), rtype)


def _extensions(node: Any, path: str) -> Iterator[tuple[str, dict]]:
    """Every (concrete path, extension) in ``node``, nested ones included."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}"
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if key in ("extension", "modifierExtension") and isinstance(item, dict):
                        yield f"{child}[{i}]", item
                    yield from _extensions(item, f"{child}[{i}]")
            elif isinstance(value, dict):
                yield from _extensions(value, child)


@lru_cache(maxsize=1024)
def datatype_at(path: str) -> str | None:
    """The FHIR type of the element at ``Patient.contact.address`` ("Address"), from the
    fhir.resources models; None for a resource root or a path they do not know. An extension
    whose context is a datatype may be used on every element of that type."""
    rtype, *steps = path.split(".")
    name = None
    try:
        model = get_fhir_model_class(rtype)
        for i, step in enumerate(steps):
            field = model.model_fields.get(step)
            found = re.search(r"(\w+)Type\b", repr(field.annotation)) if field is not None else None
            if found is None:
                return None
            name = found.group(1)
            if i < len(steps) - 1:
                model = get_fhir_model_class(name)
    except (KeyError, ValueError):  # not a resource or backbone element the models know
        return None
    return name


def parse_required(text: str) -> dict[str, list[str]]:
    """``Task=url1 url2;CarePlan=url3`` → {"Task": [url1, url2], "CarePlan": [url3]}."""
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        rtype, _, urls = part.partition("=")
        out[rtype.strip()] = urls.split()
    return out
