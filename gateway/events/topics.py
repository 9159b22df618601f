"""Subscription topics: which changes are events, and what a subscriber may filter them by.

Topics are data, published as R5-style ``SubscriptionTopic`` JSON in profiles/subscription-topics/
(R4 has no SubscriptionTopic resource; the Backport IG lets an R4 server name topics by their
canonical URL, listed in the CapabilityStatement). A topic fires for a change when one of its
``resourceTrigger``s names the resource type and interaction and its ``fhirPathCriteria`` (over
``%previous`` and ``%current``; either is empty on create / delete) is true.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gateway import fhirpath

_SD = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True)
class Trigger:
    rtype: str
    interactions: frozenset[str]  # create / update / delete
    criteria: Callable | None  # compiled fhirPathCriteria, None: every such interaction
    expression: str | None


@dataclass(frozen=True)
class Topic:
    url: str
    id: str
    title: str
    triggers: tuple[Trigger, ...]
    filters: dict[str, frozenset[str]]  # resource type → filter parameter names (canFilterBy)
    resource: dict  # the SubscriptionTopic as published

    def fires(self, rtype: str, interaction: str, previous: dict | None, current: dict | None) -> bool:
        for trigger in self.triggers:
            if trigger.rtype != rtype or interaction not in trigger.interactions:
                continue
            if trigger.criteria is None:
                return True
            focus = current if current is not None else previous
            env = {"previous": previous if previous is not None else [],
                   "current": current if current is not None else []}
            if trigger.criteria(focus, env) == [True]:
                return True
        return False


class TopicError(ValueError):
    """A topic file that cannot be used (the gateway refuses to start with it)."""


def _type_of(url: str, where: str) -> str:
    if not isinstance(url, str) or not url.startswith(_SD):
        raise TopicError(f"{where}: resource must be a core StructureDefinition URL ({_SD}[type]), not {url!r}.")
    return url[len(_SD):]


def parse_topic(resource: dict) -> Topic:
    url = resource.get("url")
    if not isinstance(url, str) or not url:
        raise TopicError(f"SubscriptionTopic/{resource.get('id')} has no url.")
    triggers = []
    for i, t in enumerate(resource.get("resourceTrigger") or []):
        expression = t.get("fhirPathCriteria")
        rtype = _type_of(t.get("resource"), f"{url} resourceTrigger[{i}]")
        try:  # fhirpathpy compiles lazily: a dry run on an empty change surfaces most errors at start
            compiled = fhirpath.compile(expression, None) if expression else None
            if compiled is not None:
                compiled({"resourceType": rtype}, {"previous": [], "current": {"resourceType": rtype}})
        except Exception as exc:  # fhirpathpy raises plain Exceptions (and KeyErrors) on bad expressions
            raise TopicError(f"{url} resourceTrigger[{i}]: fhirPathCriteria does not parse: {exc}") from None
        triggers.append(Trigger(rtype, frozenset(t.get("supportedInteraction") or ("create", "update", "delete")),
                                compiled, expression))
    if not triggers:
        raise TopicError(f"{url} has no resourceTrigger.")
    filters: dict[str, set[str]] = {}
    for i, f in enumerate(resource.get("canFilterBy") or []):
        filters.setdefault(_type_of(f.get("resource"), f"{url} canFilterBy[{i}]"), set()).add(f["filterParameter"])
    return Topic(url, resource.get("id", ""), resource.get("title", ""), tuple(triggers),
                 {k: frozenset(v) for k, v in filters.items()}, resource)


class TopicCatalog:
    def __init__(self, topics: list[Topic]):
        self.by_url = {t.url: t for t in topics}
        self._by_type: dict[str, list[Topic]] = {}
        for t in topics:
            for rtype in {tr.rtype for tr in t.triggers}:
                self._by_type.setdefault(rtype, []).append(t)

    @classmethod
    def load(cls, directory: Path) -> "TopicCatalog":
        files = sorted(directory.glob("SubscriptionTopic-*.json")) if directory.is_dir() else []
        return cls([parse_topic(json.loads(p.read_text(encoding="utf-8"))) for p in files])

    def for_type(self, rtype: str) -> list[Topic]:
        return self._by_type.get(rtype, [])

    def fired(self, rtype: str, interaction: str, previous: dict | None, current: dict | None) -> list[Topic]:
        """Topics this change is an event of (topics are few; each test is tens of microseconds)."""
        return [t for t in self.for_type(rtype) if t.fires(rtype, interaction, previous, current)]
