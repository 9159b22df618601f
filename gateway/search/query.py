"""Search query parsing: URL parameters → a typed SearchRequest (plan + result options).

Every parameter is checked against the registry: unknown ones are a 400 that names them,
unless the client sent ``Prefer: handling=lenient``, in which case they are dropped and the
self link shows only what was applied.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

from gateway.errors import BadRequest
from gateway.fhir.references import parse_reference
from gateway.fhir.types import SUPPORTED, require_uint
from gateway.search.dates import date_range
from gateway.search.extract import normalise
from gateway.search.registry import SPECIAL, SearchRegistry
from gateway.validation.identifiers import base_system, check_value
from gateway.store.plan import (
    Clause, DateClause, IdClause, MissingClause, ReferenceClause, SearchPlan, SortKey,
    StringClause, TokenClause,
)

RESULT_PARAMS = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements",
                           "_format", "_pretty", "_include:iterate", "_revinclude:iterate",
                           "_include:recurse", "_revinclude:recurse"})
_PREFIX = re.compile(r"^(eq|ne|lt|le|gt|ge|sa|eb)(?=\d)")
_TABLE_OF = {"token": "token", "uri": "token", "reference": "reference", "date": "date", "string": "string"}


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str | None  # None: every reference parameter (`*`)
    target_type: str | None
    iterate: bool = False


@dataclass
class SearchRequest:
    plan: SearchPlan
    count: int
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary_count: bool = False
    total: str = "accurate"
    elements: list[str] | None = None
    query: str = ""  # the normalised query that was applied


def encode_query(params: list[tuple[str, str]]) -> str:
    """A query string for links; ``| / : ,`` stay readable (``identifier=system|value``)."""
    return "&".join(f"{quote(k, safe=':')}={quote(v, safe='|/:,')}" for k, v in params)


def split_values(value: str) -> list[str]:
    """Split on unescaped commas; unescape ``\\,`` ``\\|`` ``\\$`` ``\\\\``."""
    if "\\" not in value:  # the common case, without the character walk
        return value.split(",")
    out, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append("\\" + value[i + 1])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _normal_token(system: str | None, code: str | None) -> tuple[str | None, str | None]:
    """Search with any alias of a Swedish identifier system (and a hyphenated personnummer)
    finds what was stored in the base form."""
    if system:
        system = base_system(system)
        if code is not None:
            code = check_value(system, code)[0] or code
    return system, code


def _split_token(value: str) -> tuple[str | None, str | None]:
    m = re.search(r"(?<!\\)\|", value)
    if not m:
        return None, _unescape(value) or None
    system, code = value[: m.start()], value[m.end():]
    return _unescape(system), (_unescape(code) or None)


class QueryParser:
    def __init__(self, registry: SearchRegistry, default_count: int, max_count: int, snapshot_limit: int,
                 local_base: str | None = None):
        self.registry = registry
        self.local_base = local_base
        self.default_count = default_count
        self.max_count = max_count
        self.snapshot_limit = snapshot_limit

    def parse(self, rtype: str, params: list[tuple[str, str]], lenient: bool = False,
              base_url: str | None = None) -> SearchRequest:
        """``base_url``: the base the client used; absolute references under it are local."""
        bases = (self.local_base, base_url)
        clauses: list[Clause] = []
        applied: list[tuple[str, str]] = []
        req = SearchRequest(SearchPlan(rtype), self.default_count)
        sort: tuple[SortKey, ...] = ()
        for name, value in params:
            base, _, modifier = name.partition(":")
            if name in RESULT_PARAMS or base in ("_include", "_revinclude"):
                if base in ("_format", "_pretty"):
                    continue
                if base == "_sort":
                    sort = self._sort(rtype, value)
                else:
                    self._result_param(req, rtype, base, modifier, value)
                applied.append((name, value))
                continue
            try:
                clauses.append(self._clause(rtype, base, modifier, value, bases))
            except _Unknown as exc:
                if lenient:
                    continue
                raise BadRequest(str(exc)) from None
            applied.append((name, value))
        req.plan = SearchPlan(rtype, tuple(clauses), sort, self.snapshot_limit)
        req.query = encode_query(applied)
        return req

    # -- result parameters -------------------------------------------------------------
    def _result_param(self, req: SearchRequest, rtype: str, base: str, modifier: str, value: str) -> None:
        if base == "_count":
            req.count = min(require_uint(value, "_count"), self.max_count)
            if req.count == 0:
                req.summary_count = True
        elif base == "_summary":
            if value == "count":
                req.summary_count = True
            elif value != "false":
                raise BadRequest(f"_summary={value} is not supported; use _summary=count or _elements.")
        elif base == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise BadRequest("_total must be none, estimate or accurate.")
            req.total = value
        elif base == "_elements":
            req.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif base == "_include":
            req.includes.append(self._include(value, modifier, reverse=False, rtype=rtype))
        elif base == "_revinclude":
            req.revincludes.append(self._include(value, modifier, reverse=True, rtype=rtype))

    def _include(self, value: str, modifier: str, reverse: bool, rtype: str) -> Include:
        if modifier not in ("", "iterate", "recurse"):
            raise BadRequest(f"Unknown modifier ':{modifier}' on _include/_revinclude; use :iterate.")
        iterate = modifier in ("iterate", "recurse")
        if value == "*":
            return Include(rtype, None, None, iterate)
        parts = value.split(":")
        if len(parts) not in (2, 3) or parts[0] not in SUPPORTED:
            raise BadRequest(f"'{value}' is not an include; write SourceType:searchParam[:TargetType].")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if not reverse and not iterate and source != rtype:
            raise BadRequest(f"_include={value} must start with the searched type {rtype} (or use _include:iterate).")
        if code == "*":
            return Include(source, None, target, iterate)
        param = self.registry.get(source, code)
        if param is None or param.type != "reference":
            raise BadRequest(f"'{code}' is not a reference search parameter of {source}.")
        if target is not None and target not in SUPPORTED:
            raise BadRequest(f"'{target}' is not a resource type this server stores.")
        return Include(source, code, target, iterate)

    def _sort(self, rtype: str, value: str) -> tuple[SortKey, ...]:
        keys = []
        for item in value.split(","):
            item = item.strip()
            desc = item.startswith("-")
            code = item.lstrip("-")
            if code == "_lastUpdated":
                keys.append(SortKey(code, "lastUpdated", desc))
            elif code == "_id":
                keys.append(SortKey(code, "id", desc))
            else:
                param = self.registry.get(rtype, code)
                if param is None or param.type not in ("date", "string"):
                    raise BadRequest(f"Cannot sort {rtype} by '{code}'; sort by _lastUpdated, _id, "
                                     "or a date or string search parameter.")
                keys.append(SortKey(code, param.type, desc))
        return tuple(keys)

    # -- search parameters -------------------------------------------------------------
    def _clause(self, rtype: str, code: str, modifier: str, value: str, bases: tuple) -> Clause:
        if "." in code:
            raise _Unknown(f"Chained search ('{code}') is not supported; search the referenced type first.")
        if code.startswith("_has"):
            raise _Unknown("Reverse chaining (_has) is not supported.")
        param = self.registry.get(rtype, code)
        if param is None:
            known = ", ".join(sorted(self.registry.params(rtype)))
            raise _Unknown(f"Unknown search parameter '{code}' for {rtype}. Known: {known}.")
        if modifier == "missing":
            if value not in ("true", "false"):
                raise BadRequest(f"{code}:missing takes true or false, not '{value}'.")
            if code in SPECIAL:  # every resource has an id and a lastUpdated: none / all match
                return IdClause((), negate=value == "false")
            return MissingClause(code, _TABLE_OF[param.type], value == "true")
        values = split_values(value)
        if any(v == "" for v in values):
            raise BadRequest(f"Search parameter '{code}' has an empty value.")
        if code == "_id":
            if modifier not in ("", "not"):
                raise BadRequest(f"Modifier ':{modifier}' is not supported on _id.")
            return IdClause(tuple(_unescape(v) for v in values), negate=modifier == "not")
        kind = param.type
        if kind in ("token", "uri"):
            if modifier not in ("", "not") or (kind == "uri" and modifier):
                raise BadRequest(f"Modifier ':{modifier}' is not supported on {kind} parameter '{code}'.")
            pairs = tuple(_normal_token(*_split_token(v)) if kind == "token" else (None, _unescape(v))
                          for v in values)
            return TokenClause(code, pairs, negate=modifier == "not")
        if kind == "reference":
            return ReferenceClause(code, tuple(self._reference(param, code, modifier, v, bases) for v in values))
        if kind == "date":
            if modifier:
                raise BadRequest(f"Modifier ':{modifier}' is not supported on date parameter '{code}'.")
            return DateClause(code, tuple(self._date(code, v) for v in values))
        if kind == "string":
            if modifier not in ("", "exact", "contains"):
                raise BadRequest(f"Modifier ':{modifier}' is not supported on string parameter '{code}'.")
            mode = modifier or "prefix"
            return StringClause(code, tuple((mode, _unescape(v) if mode == "exact" else normalise(_unescape(v)))
                                            for v in values))
        raise _Unknown(f"Search parameter '{code}' has type {kind}, which this server does not search.")

    @staticmethod
    def _reference(param, code: str, modifier: str, value: str, bases: tuple) -> tuple[str | None, str]:
        value = _unescape(value)
        if modifier and modifier not in (param.targets or SUPPORTED):
            raise BadRequest(f"Modifier ':{modifier}' is not supported on reference parameter '{code}'; "
                             "use :missing or :[ResourceType] with a type it can point to.")
        if "/" not in value:  # a bare id: typed by the modifier, or by the only possible target
            if modifier:
                return modifier, value
            return (param.targets[0] if len(param.targets) == 1 else None), value
        ref = parse_reference(value, bases)
        if ref is None:
            raise BadRequest(f"'{value}' is not a reference; write Type/id, an id, or an absolute URL.")
        if modifier and ref[0] not in (None, modifier):
            raise BadRequest(f"{code}:{modifier} cannot match a reference to {ref[0]}.")
        return ref

    @staticmethod
    def _date(code: str, value: str) -> tuple[str, int, int]:
        m = _PREFIX.match(value)
        prefix = m.group(1) if m else "eq"
        text = value[2:] if m else value
        try:
            low, high = date_range(text)
        except ValueError as exc:
            raise BadRequest(f"Search parameter '{code}': {exc}.") from None
        return prefix, low, high


class _Unknown(Exception):
    """A parameter this server cannot apply (ignored under Prefer: handling=lenient)."""
