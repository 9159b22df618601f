"""fhirpathpy's collection semantics on plain JSON, without its interpreter's overhead.

Compiled closures pass collections as Python lists. An item is either a *node*, the tuple
``(data, path)`` of a value reached by navigation (what fhirpathpy wraps in a ``ResourceNode``;
``path`` is its type path, e.g. ``"Extension"``, ``"dateTime"``, ``"Encounter.participant"``), or a
*raw* value (the evaluated resource itself, variables, literals, function results), exactly where
fhirpathpy has a ResourceNode or a raw value. The distinction is kept because fhirpathpy's results
depend on it in corners (``where`` keeps every node whatever its value, ``<`` drops a second
item holding ``extension``, ``|`` dedupes nodes by value but raw values by JSON text).

Every function here mirrors one fhirpathpy function, named in its docstring; what it does that
the FHIRPath specification would not is kept on purpose (the gateway's results must not change
with the engine) and listed in docs/fhirpath.md. Rare inputs (a ``Quantity`` node in ``=``, a
node in ``+``) are handed to fhirpathpy's own function instead of being re-implemented.
Inputs are JSON values (dict, list, str, int, float, Decimal, bool, None).
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Callable

from fhirpathpy.engine import nodes as fp_nodes
from fhirpathpy.engine.invocations import equality as fp_equality
from fhirpathpy.engine.invocations import math as fp_math

FP_Type = fp_nodes.FP_Type
UNSET: Any = object()  # ``$this`` before anything set it (fhirpathpy: no "$this" key in ctx)


class Unsupported(Exception):
    """Raised while compiling: the expression uses something not translated (the message says
    what); fhirpathpy evaluates it instead."""


class Env:
    """One evaluation's state: fhirpathpy's ``ctx`` (dataRoot, vars, the mutable ``$this``)."""

    __slots__ = ("root", "resource", "vars", "this")

    def __init__(self, resource: Any, variables: dict | None):
        self.resource = resource
        self.root = arraify(resource)
        self.vars = variables or {}
        self.this = UNSET


def arraify(x: Any) -> list:
    """``util.arraify``: a list stays itself, None becomes empty, anything else a singleton."""
    if isinstance(x, list):
        return x
    return [] if x is None else [x]


def data_of(item: Any) -> Any:
    return item[0] if type(item) is tuple else item


def get_data(item: Any) -> Any:
    """``util.get_data``: the value of a node; floats read as Decimal."""
    value = item[0] if type(item) is tuple else item
    return Decimal(str(value)) if isinstance(value, float) else value


def is_number(x: Any) -> bool:
    return isinstance(x, (int, Decimal, complex)) and not isinstance(x, bool)


def node(value: Any, path: Any) -> tuple:
    """``ResourceNode(value, path)``: a resource (contained, or in a Bundle) is typed by itself."""
    if type(value) is dict and "resourceType" in value:
        return (value, value["resourceType"])
    return (value, path)


def to_fhirpathpy(items: list) -> list:
    """Our items as fhirpathpy's, for the rare cases handed to its own functions."""
    return [fp_nodes.ResourceNode(i[0], i[1]) if type(i) is tuple else i for i in items]


def from_fhirpathpy(value: Any) -> Any:
    return (value.data, value.path) if isinstance(value, fp_nodes.ResourceNode) else value


# -- member navigation ----------------------------------------------------------------------
class Member:
    """``.key`` (``evaluators.create_reduce_member_invocation``): with the R4 model a choice
    element ``value`` is whichever ``valueX`` the data has, first in the model's order; a
    primitive's ``_key`` sibling is a second item. The child's type path is worked out once per
    parent path and cached: a string for a plain element, ``((key, _key, path), …)`` for a
    choice."""

    __slots__ = ("key", "ukey", "model", "cache")

    def __init__(self, key: str, model: dict | None):
        self.key, self.ukey, self.model = key, "_" + key, model
        self.cache: dict[Any, str | tuple] = {}

    def info(self, path: Any) -> str | tuple:
        key, model = self.key, self.model
        base = f"{path}.{key}" if path else f"_.{key}"
        choices = None
        if isinstance(model, dict):
            base = model["pathsDefinedElsewhere"].get(base, base)
            choices = model["choiceTypePaths"].get(base)
        p2t = model.get("path2Type", {}) if isinstance(model, dict) else {}
        if choices:
            return tuple((key + t, "_" + key + t, p2t.get(base + t, base + t)) for t in choices)
        child = "Extension" if key == "extension" else base
        return p2t.get(child, child)

    def __call__(self, items: list) -> list:
        out: list = []
        append = out.append
        cache, key, ukey = self.cache, self.key, self.ukey
        for item in items:
            if type(item) is tuple:
                d, path = item
                if type(d) is not dict:
                    continue
            elif type(item) is dict:
                d, path = item, item.get("resourceType")
            else:
                continue
            try:
                spec = cache[path]
            except KeyError:
                spec = cache[path] = self.info(path)
            except TypeError:  # an unhashable resourceType: not cached
                spec = self.info(path)
            if type(spec) is str:
                child_path, v, v_ = spec, d.get(key), d.get(ukey)
            else:
                for choice_key, choice_ukey, child_path in spec:
                    v, v_ = d.get(choice_key), d.get(choice_ukey)
                    if v is not None or v_ is not None:
                        break
                else:
                    continue
            if v is not None:
                if type(v) is list:
                    for e in v:
                        append((e, e["resourceType"]) if type(e) is dict and "resourceType" in e else (e, child_path))
                else:
                    append((v, v["resourceType"]) if type(v) is dict and "resourceType" in v else (v, child_path))
            if v_ is not None:
                if type(v_) is list:
                    for e in v_:
                        append((e, e["resourceType"]) if type(e) is dict and "resourceType" in e else (e, child_path))
                else:
                    append((v_, v_["resourceType"]) if type(v_) is dict and "resourceType" in v_ else (v_, child_path))
        return out


def type_filter(items: list, key: str) -> list | None:
    """A capitalised member (``Patient.x``) first selects resources of that type
    (``evaluators.member_invocation``); None when fhirpathpy's test fails with TypeError and
    it navigates instead. A dict without resourceType raises KeyError there too."""
    try:
        return [(x, x["resourceType"]) for x in items if x["resourceType"] == key]
    except TypeError:
        return None


# -- equality and comparison ----------------------------------------------------------------
def _special(item: Any) -> bool:
    """Items fhirpathpy's equality treats by type: Quantity nodes, FHIRPath date/time/quantity
    values, nodes whose type path is not text."""
    if type(item) is tuple:
        path = item[1]
        return path is not None and (type(path) is not str or path == "Quantity" or path == "System.Quantity")
    return isinstance(item, FP_Type)


def equal(a: list, b: list) -> bool | None:
    """``equality.equality`` for two non-empty collections: only the first items are compared
    (when the sizes agree)."""
    if _special(a[0]) or _special(b[0]):
        return fp_equality.equality(None, to_fhirpathpy(a), to_fhirpathpy(b))
    if len(a) != len(b):
        return False
    return data_of(a[0]) == data_of(b[0])


def _drop_extension_twin(items: list) -> list:
    """``equality.remove_duplicate_extension``: ``[value, node holding 'extension']`` → ``[value]``
    (``in`` on the node's data, so a string containing "extension" counts too)."""
    if len(items) == 2 and type(items[1]) is tuple and "extension" in items[1][0]:
        return items[:1]
    return items


_FP_COMPARE = {"<": fp_equality.lt, ">": fp_equality.gt, "<=": fp_equality.lte, ">=": fp_equality.gte}


def compare(op: str, a: list, b: list, test: Callable[[Any, Any], bool]) -> list:
    """``equality.lt/gt/lte/gte`` (after the empty-operand check): singletons of one class, or
    numbers; text compares as text (dateTimes too — fhirpathpy converts only literals)."""
    if a[0] is None or b[0] is None:
        return []
    a, b = _drop_extension_twin(a), _drop_extension_twin(b)
    if len(a) > 1 or len(b) > 1:
        raise ValueError(f"Was expecting no more than one element; {op} needs singletons")
    x, y = get_data(a[0]), get_data(b[0])
    if isinstance(x, FP_Type) or isinstance(y, FP_Type):
        return arraify(_FP_COMPARE[op](None, to_fhirpathpy(a), to_fhirpathpy(b)))
    if x.__class__ is not y.__class__ and not (is_number(x) and is_number(y)):
        raise TypeError(f"Type of {type(x).__name__} did not match type of {type(y).__name__} in {op}")
    return [test(x, y)]


def plus(a: list, b: list) -> list:
    """``math.plus``: numbers add, strings concatenate; nodes (which fhirpathpy converts by
    type first: dates, UCUM quantities) go to fhirpathpy."""
    a, b = _drop_extension_twin(a), _drop_extension_twin(b)
    if len(a) != 1 or len(b) != 1:
        raise ValueError("+ needs singletons")
    x, y = a[0], b[0]
    if type(x) is tuple or type(y) is tuple or isinstance(x, FP_Type) or isinstance(y, FP_Type):
        return arraify(from_fhirpathpy(fp_math.plus(None, to_fhirpathpy(a), to_fhirpathpy(b))))
    x, y = get_data(x), get_data(y)
    if (isinstance(x, str) and isinstance(y, str)) or (is_number(x) and is_number(y)):
        return [x + y]
    raise TypeError(f"Cannot add {type(x).__name__} and {type(y).__name__}")


def contains(collection: list, item: Any) -> bool:
    """``collections.contains_impl``: Python equality of the values."""
    value = data_of(item)
    return any(data_of(x) == value for x in collection)


def to_boolean_param(items: list) -> Any:
    """An operand of and/or/xor/implies (``make_param`` with ``["Boolean"]``): empty stays
    empty, one boolean is itself, anything else raises."""
    if not items:
        return items
    if len(items) > 1:
        raise ValueError("Unexpected collection; expected singleton of type Boolean")
    value = get_data(items[0])
    if value is True or value is False:
        return value
    raise ValueError(f"Expected boolean, got {type(value).__name__}")


def is_true(items: list) -> bool:
    """``util.is_true`` on a collection: exactly one item equal to True (1 counts)."""
    return len(items) == 1 and data_of(items[0]) == True  # noqa: E712 -- Python equality, as fhirpathpy


def truthy(item: Any) -> bool:
    """How ``where`` reads the first result item: a node is always true (a ResourceNode object),
    a raw value by Python truth."""
    return True if type(item) is tuple else bool(item)


# -- union ------------------------------------------------------------------------------------
def union(items: list) -> list:
    """``existence.distinct_fn``: all nodes → deduped by their JSON, re-made untyped; otherwise
    ``util.uniq`` (raw values by JSON text; a node among them is only equal to itself)."""
    if all(type(x) is tuple for x in items):
        return [node(v, None) for v in _uniq([x[0] for x in items], lambda v: None)]
    return _uniq(items, lambda v: ("node", id(v)) if type(v) is tuple else None)


def _uniq(values: list, special: Callable[[Any], Any]) -> list:
    seen: dict[Any, Any] = {}
    for v in values:
        key = special(v)
        if key is None:
            try:
                key = json.dumps(v, sort_keys=True)
            except TypeError:
                key = str(v)
        seen[key] = v  # first position, last value: OrderedDict assignment
    return list(seen.values())


# -- the result -------------------------------------------------------------------------------
def output(result: list) -> list:
    """``apply_parsed_path``'s ``visit``: values, floats as Decimal, and primitive-extension
    holders (``{"extension": [...]}`` alone) dropped from every list. Values that need no change
    are returned as they are (equal to fhirpathpy's copies, not copies)."""
    out = []
    for item in result:
        if type(item) is tuple:
            value = item[0]
            if isinstance(value, float):
                value = Decimal(str(value))
            elif type(value) is dict:
                value = _clean_dict(value)
        else:
            value = _clean(item)
        if type(value) is dict and len(value) == 1 and "extension" in value:
            continue
        out.append(value)
    return out


def _clean(value: Any) -> Any:
    t = type(value)
    if t is dict:
        return _clean_dict(value)
    if t is list:
        if not _needs_cleaning(value):
            return value
        return [_clean(v) for v in value if not (type(v) is dict and len(v) == 1 and "extension" in v)]
    if t is float:
        return Decimal(str(value))
    return value


def _clean_dict(value: dict) -> dict:
    if not _needs_cleaning(value):
        return value
    return {k: _clean(v) for k, v in value.items()}


def _needs_cleaning(value: Any) -> bool:
    t = type(value)
    if t is dict:
        return any(_needs_cleaning(v) for v in value.values())
    if t is list:
        return any((type(v) is dict and len(v) == 1 and "extension" in v) or _needs_cleaning(v) for v in value)
    return t is float
