"""Who may change what of a resource another organisation created: the write rule, per type and element.

Seeing a person's data is not the right to change another organisation's record of it. The
author (the custodian) changes its own resources, every element. Besides the author:

| type | who | what |
|---|---|---|
| Task | its owner (``Task.owner`` of the current version) | the progress: ``status``, ``statusReason``, ``businessStatus``, ``output``, ``note``, ``executionPeriod``, ``lastModified`` |
| CarePlan | a party to the plan (one it is shared with) | adds ``activity`` entries pointing at its own resources, and ``note`` entries (append only) |
| anything else | nobody | — |

Security labels (``meta.security``) and every other ``meta`` element but the server's
``versionId`` / ``lastUpdated`` are the author's alone. Only types whose every element the
other party may read have a rule (a Patient or Encounter can be shown reduced: redacted or as
a LUSEN notice), so a refusal naming an element never tells of an element the caller cannot see.

This module is pure: ``gateway.access.policy`` resolves the owner and checks what the appended
activities point at.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OWNER, PARTY = "owner", "party"
SERVER_META = frozenset({"versionId", "lastUpdated"})


@dataclass(frozen=True)
class Rule:
    role: str  # OWNER: the organisation Task.owner names; PARTY: any organisation the resource is shared with
    change: frozenset[str] = frozenset()  # elements the role may set to anything
    append: frozenset[str] = frozenset()  # list elements the role may only add entries to, at the end
    who: str = ""  # how the role is named in messages

    def allowed(self) -> str:
        parts = [*sorted(self.change), *(f"{e} (add only)" for e in sorted(self.append))]
        return ", ".join(parts)


RULES: dict[str, Rule] = {
    "Task": Rule(OWNER, change=frozenset({"status", "statusReason", "businessStatus", "output", "note",
                                          "executionPeriod", "lastModified"}), who="the Task's owner"),
    "CarePlan": Rule(PARTY, append=frozenset({"activity", "note"}), who="a party to the plan"),
}


def rule_for(rtype: str) -> Rule | None:
    return RULES.get(rtype)


def _element(key: str) -> str:
    return key[1:] if key.startswith("_") else key  # a primitive's extensions belong to it


def changed(old: dict, new: dict) -> list[str]:
    """The elements (``meta.x`` for meta) whose value differs between two versions, in order."""
    out: list[str] = []
    for key in dict.fromkeys([*old, *new]):
        if key in ("resourceType", "id"):
            continue
        if key == "meta":
            before, after = old.get("meta") or {}, new.get("meta") or {}
            for part in dict.fromkeys([*before, *after]):
                if part not in SERVER_META and before.get(part) != after.get(part):
                    out.append(f"meta.{part}")
        elif old.get(key) != new.get(key) and _element(key) not in out:
            out.append(_element(key))
    return out


def appended(old: Any, new: Any) -> list | None:
    """The entries ``new`` adds at the end of the list ``old``; None if it changes or drops any."""
    old = old if isinstance(old, list) else [] if old is None else None
    if old is None or not isinstance(new, list) or new[: len(old)] != old:
        return None
    return new[len(old):]


def refused_element(rule: Rule, old: dict, new: dict) -> str | None:
    """The first element the rule does not let its role change this way (None: all allowed)."""
    for element in changed(old, new):
        if element in rule.change:
            continue
        if element in rule.append and f"_{element}" not in old and f"_{element}" not in new \
                and appended(old.get(element), new.get(element)) is not None:
            continue
        return element
    return None


def additions(rule: Rule, old: dict, new: dict, element: str) -> list:
    """The entries the change appends to ``element`` (after ``refused_element`` allowed it)."""
    if element not in rule.append:
        return []
    return appended(old.get(element), new.get(element)) or []
