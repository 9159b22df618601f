"""Compile a SearchPlan into SQL over the index tables (SQLite dialect, ``?`` placeholders).

Query shape: the most selective positive clause drives (``rkey IN (subquery)`` over an index
that starts with (rtype, param, value)); every other clause is a correlated ``EXISTS`` probe
on (rkey, param). That keeps ``Task?patient=X&status=Y`` proportional to the patient's tasks,
not to all tasks with that status.
"""
from __future__ import annotations

from gateway.store.plan import (
    Clause, DateClause, IdClause, MissingClause, ReferenceClause, SearchPlan, SortKey,
    StringClause, TokenClause,
)
from gateway.store.sqlite_access import ACCESS_CONDITION, access_args, notice_condition

TABLES = {"token": "idx_token", "reference": "idx_ref", "date": "idx_date", "string": "idx_string"}
MAX_CHAR = "\U0010ffff"


def _token_value(system: str | None, code: str | None, args: list) -> str:
    parts = []
    if code is not None:
        parts.append("t.code = ?")
        args.append(code)
    if system == "":
        parts.append("t.system = ''")
    elif system is not None:
        parts.append("t.system = ?")
        args.append(system)
    return "(" + " AND ".join(parts or ["1"]) + ")"


def _date_value(prefix: str, low: int, high: int, lo_col: str, hi_col: str, args: list) -> str:
    if prefix == "eq":
        args += [low, high]
        return f"({lo_col} >= ? AND {hi_col} <= ?)"
    if prefix == "ne":
        args += [low, high]
        return f"NOT ({lo_col} >= ? AND {hi_col} <= ?)"
    col, op, value = {
        "lt": (lo_col, "<", low), "le": (lo_col, "<=", high),
        "gt": (hi_col, ">", high), "ge": (hi_col, ">=", low),
        "sa": (lo_col, ">", high), "eb": (hi_col, "<", low),
    }[prefix]
    args.append(value)
    return f"({col} {op} ?)"


def _string_value(mode: str, value: str, args: list) -> str:
    if mode == "exact":
        args.append(value)
        return "(t.raw = ?)"
    if mode == "contains":
        args.append(value)
        return "(instr(t.value, ?) > 0)"
    args += [value, value + MAX_CHAR]
    return "(t.value >= ? AND t.value < ?)"


def _index_condition(clause: Clause, args: list) -> tuple[str, str]:
    """(table, condition on alias t) for clauses that live in an index table."""
    if isinstance(clause, TokenClause):
        return "idx_token", " OR ".join(_token_value(s, c, args) for s, c in clause.values)
    if isinstance(clause, ReferenceClause):
        parts = []
        for rtype, target in clause.values:
            if rtype is None:
                parts.append("(t.tid = ?)")
                args.append(target)
            else:
                parts.append("(t.tid = ? AND t.ttype = ?)")
                args += [target, rtype]
        return "idx_ref", " OR ".join(parts)
    if isinstance(clause, DateClause):
        return "idx_date", " OR ".join(
            _date_value(p, lo, hi, "t.low", "t.high", args) for p, lo, hi in clause.values)
    if isinstance(clause, StringClause):
        return "idx_string", " OR ".join(_string_value(m, v, args) for m, v in clause.values)
    raise TypeError(clause)


def _selectivity(clause: Clause) -> int:
    """Lower drives better: ids and references pick few rows, dates and negations many."""
    if isinstance(clause, IdClause):
        return 0 if not clause.negate else 99
    if isinstance(clause, ReferenceClause):
        return 1
    if isinstance(clause, TokenClause):
        return 99 if clause.negate else 2
    if isinstance(clause, StringClause):
        return 3
    if isinstance(clause, DateClause):
        return 4 if clause.param != "_lastUpdated" else 99
    return 99


def from_where(plan: SearchPlan) -> tuple[str, list]:
    """``FROM … WHERE …`` over ``current c`` (alias c) and its arguments.

    The driving clause is a ``CROSS JOIN`` from its index rows to ``current``: SQLite never
    reorders a CROSS JOIN, and left to itself it preferred walking every row of the type in
    ``seq`` order (to avoid a sort) and probing the clause — 75,000 probes for one patient's tasks.
    """
    source, driver_args = "current c", []
    conds = ["c.rtype = ?", "c.deleted = 0"]
    args: list = [plan.rtype]
    clauses = sorted(plan.clauses, key=_selectivity)
    for n, clause in enumerate(clauses):
        if isinstance(clause, IdClause):
            marks = ",".join("?" * len(clause.ids))
            conds.append(f"c.rid {'NOT ' if clause.negate else ''}IN ({marks})")
            args += clause.ids
        elif isinstance(clause, DateClause) and clause.param == "_lastUpdated":
            conds.append("(" + " OR ".join(
                _date_value(p, lo, hi, "c.last_updated", "c.last_updated", args)
                for p, lo, hi in clause.values) + ")")
        elif isinstance(clause, MissingClause):
            conds.append(f"{'NOT ' if clause.missing else ''}EXISTS (SELECT 1 FROM {TABLES[clause.table]} t "
                         "WHERE t.rkey = c.rkey AND t.param = ?)")
            args.append(clause.param)
        elif isinstance(clause, TokenClause) and clause.negate:
            sub: list = [clause.param]
            cond = _index_condition(TokenClause(clause.param, clause.values), sub)[1]
            conds.append(f"NOT EXISTS (SELECT 1 FROM idx_token t WHERE t.rkey = c.rkey AND t.param = ? AND ({cond}))")
            args += sub
        elif n == 0 and _selectivity(clause) < 99:
            driver_args = [plan.rtype, clause.param]
            table, cond = _index_condition(clause, driver_args)
            source = (f"(SELECT DISTINCT t.rkey FROM {table} t WHERE t.rtype = ? AND t.param = ? AND ({cond})) d "
                      "CROSS JOIN current c ON c.rkey = d.rkey")
        else:
            sub = [clause.param]
            table, cond = _index_condition(clause, sub)
            conds.append(f"EXISTS (SELECT 1 FROM {table} t WHERE t.rkey = c.rkey AND t.param = ? AND ({cond}))")
            args += sub
    if plan.access is not None and plan.rtype not in plan.access.open_types:
        if plan.access.notice_routes:
            conds.append(f"({ACCESS_CONDITION} OR {notice_condition(plan.access.notice_routes)})")
            args += [*access_args(plan.access), *plan.access.notice_routes]
        else:
            conds.append(ACCESS_CONDITION)
            args += access_args(plan.access)
    if plan.access is not None and plan.access.protected_labels is not None:
        system, codes = plan.access.protected_labels
        conds.append("(EXISTS (SELECT 1 FROM res_access a WHERE a.rkey = c.rkey AND a.author = ?) OR NOT EXISTS "
                     "(SELECT 1 FROM idx_token t WHERE t.rkey = c.rkey AND t.param = '_security' AND t.system = ? "
                     f"AND t.code IN ({','.join('?' * len(codes))})))")
        args += [plan.access.organization, system, *codes]
    return f"FROM {source} WHERE " + " AND ".join(conds), driver_args + args


def order_by(sort: tuple[SortKey, ...]) -> tuple[str, list]:
    parts, args = [], []
    for key in sort:
        direction = "DESC" if key.descending else "ASC"
        if key.kind == "lastUpdated":
            parts.append(f"c.last_updated {direction}")
        elif key.kind == "id":
            parts.append(f"c.rid {direction}")
        elif key.kind == "date":
            agg, col = ("MAX", "high") if key.descending else ("MIN", "low")
            parts.append(f"(SELECT {agg}(d.{col}) FROM idx_date d WHERE d.rkey = c.rkey AND d.param = ?) "
                         f"{direction} NULLS LAST")
            args.append(key.param)
        elif key.kind == "string":
            agg = "MAX" if key.descending else "MIN"
            parts.append(f"(SELECT {agg}(s.value) FROM idx_string s WHERE s.rkey = c.rkey AND s.param = ?) "
                         f"{direction} NULLS LAST")
            args.append(key.param)
    parts.append("c.seq ASC")  # a total order, so equal keys never swap between pages
    return ", ".join(parts), args
