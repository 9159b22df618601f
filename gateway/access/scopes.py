"""SMART system scopes: which resource types and interactions a token allows.

SMART v2 (``system/Task.cruds``, any ordered subset of c r u d s) and the v1 forms still in
the field (``system/Task.read``, ``.write``, ``.*``). What each letter covers follows the SMART
App Launch v2 table: c create; r read, vread and instance history; u update and patch;
d delete; s search and type/system history. Finer v2 scopes with query parameters
(``system/Observation.rs?category=…``) are refused rather than silently widened.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_V2 = re.compile(r"^system/(\*|[A-Z][A-Za-z]+)\.(c?r?u?d?s?)$")
_V1 = re.compile(r"^system/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)$")
_V1_LETTERS = {"read": "rs", "write": "cud", "*": "cruds"}
LETTERS = "cruds"


class ScopeError(ValueError):
    """A scope string this server does not understand."""


@dataclass(frozen=True)
class Scope:
    rtype: str  # a resource type or "*"
    letters: frozenset[str]

    def __str__(self) -> str:
        return f"system/{self.rtype}." + "".join(c for c in LETTERS if c in self.letters)

    def covers(self, other: "Scope") -> bool:
        return self.rtype in ("*", other.rtype) and other.letters <= self.letters


def parse_scope(text: str) -> Scope:
    if "?" in text:
        raise ScopeError(f"{text}: scopes with query parameters are not supported")
    m = _V2.match(text)
    if m and m.group(2):
        return Scope(m.group(1), frozenset(m.group(2)))
    m = _V1.match(text)
    if m:
        return Scope(m.group(1), frozenset(_V1_LETTERS[m.group(2)]))
    raise ScopeError(f"{text}: not a SMART system scope such as system/Task.cruds or system/*.rs")


@dataclass(frozen=True)
class ScopeSet:
    scopes: tuple[Scope, ...]

    @classmethod
    def parse(cls, text: str) -> "ScopeSet":
        """Space-separated scopes; raises ScopeError on the first it does not understand."""
        return cls(tuple(parse_scope(s) for s in text.split()))

    def allows(self, rtype: str, letter: str) -> bool:
        return _allows(self.scopes, rtype, letter)

    def within(self, allowed: "ScopeSet") -> "ScopeSet":
        """The intersection with ``allowed``, scope by scope: ``system/*.cruds`` requested by a
        client allowed ``system/Task.rs`` yields ``system/Task.rs``."""
        out: dict[str, set[str]] = {}
        for s in self.scopes:
            for a in allowed.scopes:
                rtype = s.rtype if a.rtype == "*" else a.rtype if s.rtype in ("*", a.rtype) else None
                letters = s.letters & a.letters
                if rtype and letters:
                    out.setdefault(rtype, set()).update(letters)
        return ScopeSet(tuple(Scope(t, frozenset(l)) for t, l in out.items()))

    def __str__(self) -> str:
        return " ".join(str(s) for s in self.scopes)


@lru_cache(maxsize=4096)
def _allows(scopes: tuple[Scope, ...], rtype: str, letter: str) -> bool:
    # Asked on every request; the scope sets are those of the registered clients, so few.
    return any(s.rtype in ("*", rtype) and letter in s.letters for s in scopes)


# Reading every type: for callers the gateway builds itself (a subscriber's organisation when its
# events are recorded), where the organisation, not a token, is what is judged.
READ_EVERY_TYPE = ScopeSet.parse("system/*.rs")
