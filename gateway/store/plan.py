"""The store's query language: a search as typed clauses, built by the search layer.

Each clause is an OR over its values; a plan is the AND of its clauses. A backend compiles
this to its own query (SQL for SQLite and, later, PostgreSQL).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gateway.store.records import AccessFilter


@dataclass(frozen=True)
class TokenClause:
    param: str
    values: tuple[tuple[str | None, str | None], ...]  # (system or None = any, code or None = any)
    negate: bool = False  # :not — none of the resource's values match


@dataclass(frozen=True)
class ReferenceClause:
    param: str
    values: tuple[tuple[str | None, str], ...]  # (type or None = any, id or absolute url)


@dataclass(frozen=True)
class DateClause:
    param: str  # "_lastUpdated" compares the version's own timestamp
    values: tuple[tuple[str, int, int], ...]  # (prefix eq|ne|lt|le|gt|ge, low_us, high_us)


@dataclass(frozen=True)
class StringClause:
    param: str
    values: tuple[tuple[str, str], ...]  # (mode prefix|exact|contains, normalised or exact value)


@dataclass(frozen=True)
class MissingClause:
    param: str
    table: str  # "token" | "reference" | "date" | "string"
    missing: bool


@dataclass(frozen=True)
class IdClause:
    ids: tuple[str, ...]
    negate: bool = False


Clause = TokenClause | ReferenceClause | DateClause | StringClause | MissingClause | IdClause


@dataclass(frozen=True)
class SortKey:
    param: str  # "_lastUpdated", "_id" or a date/string search parameter code
    kind: str  # "lastUpdated" | "id" | "date" | "string"
    descending: bool = False


@dataclass(frozen=True)
class SearchPlan:
    rtype: str
    clauses: tuple[Clause, ...] = ()
    sort: tuple[SortKey, ...] = ()
    limit: int = 10_000  # most matches to return (keys), beyond it only the count is known
    access: AccessFilter | None = None  # None: no access restriction (trusted caller)


@dataclass
class SearchMatches:
    seqs: list[int] = field(default_factory=list)  # version seqs of the matches, in sort order
    total: int = 0
