"""Profile validation: a resource against the differential of a StructureDefinition.

The base resource is already checked by fhir.resources, so a profile only adds what its
differential says: cardinality (also of slices), fixed and pattern values, required
bindings to our ValueSets, allowed reference targets, and FHIRPath invariants (gateway.fhirpath).
Each differential element becomes one compiled rule; a resource is checked by walking each
rule's path through the JSON, remembering concrete paths (``CarePlan.activity[1].detail``)
so every issue names the exact element.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from fhirpathpy.models import models

from gateway import fhirpath
from gateway.errors import Issue
from gateway.fhir.references import parse_reference
from gateway.validation.terminology import Terminology

log = logging.getLogger(__name__)
_MODEL = models["r4"]


@dataclass
class Invariant:
    key: str
    severity: str
    human: str
    expression: str
    evaluate: Callable[[Any], list[Any]]


@dataclass
class Rule:
    element_id: str  # e.g. "Patient.identifier:personnummer.system"
    steps: list[str]  # member names below the resource, "value[x]" kept as is
    selector: dict | None = None  # a slice's discriminating pattern, e.g. {"system": "…"}; None: not a slice
    filters: dict[int, dict] = field(default_factory=dict)  # step index → selector of an enclosing slice
    min: int = 0
    max: str = "*"
    fixed: Any = None
    pattern: Any = None
    binding: tuple[str, str] | None = None  # (strength, value set url)
    targets: list[str] = field(default_factory=list)  # allowed Reference target types
    invariants: list[Invariant] = field(default_factory=list)
    choice_types: list[str] = field(default_factory=list)  # value[x] restricted to these type codes
    closed: bool = False  # slicing rules "closed": every member must match one of the slices
    slice_selectors: list[dict] = field(default_factory=list)  # of the slices, when closed


@dataclass
class Profile:
    url: str
    rtype: str
    rules: list[Rule]
    contexts: list[str] = field(default_factory=list)  # an extension's element contexts, e.g. "Encounter"

    def validate(self, resource: dict, terminology: Terminology, node: Any = None,
                 path: str | None = None) -> list[Issue]:
        """Issues of ``node`` (default: the resource itself) at concrete ``path``; an extension
        profile is applied to each extension instance inside ``resource`` this way."""
        issues: list[Issue] = []
        node = resource if node is None else node
        for rule in self.rules:
            issues += _check(rule, node, path or self.rtype, resource, terminology)
        for issue in issues:
            issue.diagnostics = f"{issue.diagnostics} (profile {self.url})"
        return issues


# -- compiling a StructureDefinition ---------------------------------------------------
def compile_profile(sd: dict) -> Profile:
    rtype = sd["type"]
    rules: dict[str, Rule] = {}
    for el in sd.get("differential", {}).get("element", []):
        element_id = el.get("id") or el["path"]
        _refuse_unsupported(sd["url"], element_id, el)
        rule = Rule(element_id, _steps(el["path"], rtype))
        parent_slice = _enclosing_slice(element_id, rules)
        if el.get("sliceName"):
            rule.selector = {}
            if rule.steps and rule.steps[-1] in ("extension", "modifierExtension"):
                # extension slices are discriminated by url = the extension's profile
                profiles = [p for t in el.get("type", []) for p in t.get("profile", [])]
                if profiles:
                    rule.selector["url"] = profiles[0]
        segments = element_id.split(".")
        for i, segment in enumerate(segments[1:], start=1):
            if ":" in segment and i < len(segments) - 1:  # inside slice `segments[:i+1]`
                rule.filters[i - 1] = rules[".".join(segments[: i + 1])].selector
        if "min" in el:
            rule.min = el["min"]
        if "max" in el:
            rule.max = el["max"]
        for key, value in el.items():
            if key.startswith("fixed"):
                rule.fixed = value
            elif key.startswith("pattern"):
                rule.pattern = value
        if parent_slice is not None and (rule.fixed is not None or rule.pattern is not None):
            # `identifier:personnummer.system` fixed → the slice selects identifiers with that system
            parent_slice.selector[rule.steps[-1]] = rule.fixed if rule.fixed is not None else rule.pattern
        if "binding" in el and el["binding"].get("valueSet"):
            rule.binding = (el["binding"]["strength"], el["binding"]["valueSet"])
        for t in el.get("type", []):
            rule.targets += [p.rsplit("/", 1)[-1] for p in t.get("targetProfile", [])]
        if el["path"].endswith("[x]") and el.get("type"):
            rule.choice_types = [t["code"] for t in el["type"]]
        if (el.get("slicing") or {}).get("rules") == "closed":
            rule.closed = True
        for c in el.get("constraint", []):
            rule.invariants.append(Invariant(c["key"], c.get("severity", "error"), c.get("human", ""),
                                             c["expression"], fhirpath.compile(c["expression"], _MODEL)))
        rules[element_id] = rule
    for sliced in (r for r in rules.values() if r.closed):
        prefix = f"{sliced.element_id}:"
        sliced.slice_selectors = [r.selector for r in rules.values() if r.element_id.startswith(prefix)
                                  and "." not in r.element_id[len(prefix):] and r.selector is not None]
    contexts = [c["expression"] for c in sd.get("context", []) if c.get("type") == "element"]
    return Profile(sd["url"], rtype, list(rules.values()), contexts)


def _refuse_unsupported(url: str, element_id: str, el: dict) -> None:
    """Slicing this engine would get wrong stops the start instead of validating loosely."""
    for d in (el.get("slicing") or {}).get("discriminator", []):
        if d.get("type") not in ("value", "pattern") or not d.get("path") or "." in d["path"] \
                or d["path"] == "$this" or "(" in d["path"]:
            raise ValueError(f"{url} {element_id}: discriminator {d} is not supported (only type value/pattern "
                             "on one child element, e.g. path 'system')")
    if el.get("sliceName") and any(k.startswith(("pattern", "fixed")) for k in el):
        raise ValueError(f"{url} {element_id}: a pattern or fixed value on the slice itself is not supported; "
                         f"put it on the discriminating child element (e.g. {element_id}.system)")


def _steps(path: str, rtype: str) -> list[str]:
    parts = path.split(".")
    if parts[0] != rtype:
        raise ValueError(f"element path {path} is not on {rtype}")
    return parts[1:]


def _enclosing_slice(element_id: str, rules: dict[str, Rule]) -> Rule | None:
    """For `Patient.identifier:pnr.system`, the rule of slice `Patient.identifier:pnr`."""
    head, _, _ = element_id.rpartition(".")
    rule = rules.get(head)
    return rule if rule is not None and rule.selector is not None else None


# -- checking --------------------------------------------------------------------------
def _children(node: Any, name: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        stem = name[:-3]
        value = next((v for k, v in node.items() if k.startswith(stem) and k[len(stem):][:1].isupper()), None)
    else:
        value = node.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _name_of(node: dict, name: str) -> str:
    if name.endswith("[x]"):
        stem = name[:-3]
        return next((k for k in node if k.startswith(stem) and k[len(stem):][:1].isupper()), stem)
    return name


def _instances(node: Any, steps: list[str], path: str, filters: dict[int, dict] | None = None,
               depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every (concrete path, value) at ``steps`` below ``node``; at a step index in ``filters``
    only values matching that slice's selector are followed."""
    if len(steps) == depth:
        yield path, node
        return
    values = _children(node, steps[depth])
    key = _name_of(node, steps[depth]) if isinstance(node, dict) else steps[depth]
    many = isinstance(node, dict) and isinstance(node.get(key), list)
    selector = (filters or {}).get(depth)
    for i, value in enumerate(values):
        if selector is not None and not _matches(value, selector):
            continue
        yield from _instances(value, steps, f"{path}.{key}[{i}]" if many else f"{path}.{key}", filters, depth + 1)


def _matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x]: every element of the pattern is present in the value (arrays: each
    pattern item matches some value item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return value == pattern


def _check(rule: Rule, node: Any, root_path: str, resource: dict, terminology: Terminology) -> list[Issue]:
    issues: list[Issue] = []
    filters = dict(rule.filters)
    if rule.selector is not None:  # a slice: its cardinality and values concern matching members only
        filters[len(rule.steps) - 1] = rule.selector
    if rule.steps:
        last = rule.steps[-1]
        for parent_path, parent in _instances(node, rule.steps[:-1], root_path, filters):
            members = _children(parent, last)
            if rule.selector is not None:
                members = [m for m in members if _matches(m, rule.selector)]
            name = _name_of(parent, last) if isinstance(parent, dict) else last
            issues += _cardinality(rule, len(members), f"{parent_path}.{name}")
            if members and rule.choice_types:
                issues += _choice_type(rule, name, f"{parent_path}.{name}")
            if rule.closed:
                issues += _closed(rule, members, isinstance(parent.get(name), list), f"{parent_path}.{name}")
    instances = _instances(node, rule.steps, root_path, filters) if rule.steps else [(root_path, node)]
    for path, value in instances:
        issues += _check_value(rule, path, value, resource, terminology)
    return issues


def _choice_type(rule: Rule, name: str, path: str) -> list[Issue]:
    stem = rule.steps[-1][:-3]
    allowed = [stem + t[:1].upper() + t[1:] for t in rule.choice_types]
    if name in allowed:
        return []
    return [Issue("structure", f"{path}: {rule.element_id} must be of type {' or '.join(rule.choice_types)} "
                               f"({' or '.join(allowed)}), not {name}", expression=[path])]


def _closed(rule: Rule, members: list[Any], many: bool, path: str) -> list[Issue]:
    """Slicing rules "closed": a member that no slice describes is not allowed."""
    issues = []
    for i, member in enumerate(members):
        if not any(_matches(member, s) for s in rule.slice_selectors):
            at = f"{path}[{i}]" if many else path
            shown = f" (url {member['url']})" if isinstance(member, dict) and "url" in member else ""
            issues.append(Issue("structure", f"{at}: {rule.element_id} is closed; this member{shown} matches "
                                             "none of its slices", expression=[at]))
    return issues


def _cardinality(rule: Rule, count: int, path: str) -> list[Issue]:
    label = rule.element_id
    if count < rule.min:
        return [Issue("required", f"{path}: {label} needs at least {rule.min} value(s), found {count}",
                      expression=[path])]
    if rule.max != "*" and count > int(rule.max):
        return [Issue("structure", f"{path}: {label} allows at most {rule.max} value(s), found {count}",
                      expression=[path])]
    return []


def _check_value(rule: Rule, path: str, value: Any, resource: dict, terminology: Terminology) -> list[Issue]:
    issues = []
    if rule.fixed is not None and value != rule.fixed:
        issues.append(Issue("value", f"{path}: must be exactly {json.dumps(rule.fixed, ensure_ascii=False)}",
                            expression=[path]))
    if rule.pattern is not None and not _matches(value, rule.pattern):
        issues.append(Issue("value", f"{path}: must match {json.dumps(rule.pattern, ensure_ascii=False)}",
                            expression=[path]))
    if rule.binding and rule.binding[0] == "required":
        issues += _check_binding(rule.binding[1], path, value, terminology)
    if rule.targets and isinstance(value, dict) and isinstance(value.get("reference"), str):
        parsed = parse_reference(value)  # Type/id, Type/id/_history/n or an absolute URL
        target = parsed[0] if parsed else None
        if target is not None and target not in rule.targets:
            issues.append(Issue("value", f"{path}: must reference {' or '.join(rule.targets)}, not {target}",
                                expression=[path]))
    for inv in rule.invariants:
        try:
            ok = inv.evaluate(value, {"resource": resource, "rootResource": resource})
        except Exception as exc:
            # A rule that cannot be evaluated must not let the resource through unchecked.
            log.warning("invariant %s could not be evaluated: %s", inv.key, type(exc).__name__)
            issues.append(Issue("invariant", f"{path}: {inv.key} could not be evaluated on this value "
                                             f"({inv.human})", expression=[path]))
            continue
        if ok != [True]:
            issues.append(Issue("invariant", f"{path}: {inv.key}: {inv.human}", severity=inv.severity,
                                expression=[path]))
    return issues


def _codings(value: Any) -> list[tuple[str | None, str]]:
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, dict) and "coding" in value:
        return [(c.get("system"), c.get("code")) for c in value["coding"] if c.get("code")]
    if isinstance(value, dict) and "code" in value:
        return [(value.get("system"), value["code"])]
    return []


def _check_binding(url: str, path: str, value: Any, terminology: Terminology) -> list[Issue]:
    expansion = terminology.expansion(url)
    if expansion is None:
        return [Issue("not-supported", f"{path}: value set {url} is not known to this server", expression=[path])]
    codings = _codings(value)
    if codings and any(expansion.contains(s, c) for s, c in codings):
        return []
    shown = ", ".join(f"{s}|{c}" if s else c for s, c in codings) or "no code"
    return [Issue("code-invalid", f"{path}: {shown} is not in the required value set {url}", expression=[path])]


def load_profiles(profiles_dir: Path) -> dict[str, Profile]:
    out = {}
    for path in sorted(profiles_dir.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text(encoding="utf-8"))
        out[sd["url"]] = compile_profile(sd)
    return out
