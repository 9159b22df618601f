"""The FHIRPath functions compiled natively, each mirroring its fhirpathpy invocation.

A call with another name, another number of arguments than fhirpathpy accepts, or an argument
that must be a literal and is not, raises ``Unsupported``: fhirpathpy then evaluates the whole
expression and fails or succeeds exactly as it did before.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Iterator

from fhirpathpy.engine.evaluators import string_literal

from gateway.fhirpath.runtime import UNSET, Env, Unsupported, arraify, get_data, is_true, node, truthy
from gateway.fhirpath.types import TypeSpec, TypeTest, as_type, is_type

if TYPE_CHECKING:
    from gateway.fhirpath.compiler import Compiler, Fn


def compile_function(compiler: "Compiler", name: str, params: list[dict]) -> "Fn":
    factory = _FUNCTIONS.get(name)
    if factory is None:
        raise Unsupported(f"function {name}()")
    arity, build = factory
    if len(params) not in arity:
        raise Unsupported(f"{name}() with {len(params)} argument(s)")
    return build(compiler, params)


# -- arguments -------------------------------------------------------------------------------
def _lambda(compiler: "Compiler", param: dict) -> Callable[[Any, Env], list]:
    """An ``Expr`` argument (``engine.make_param``): evaluated per item with ``$this`` = [item]."""
    body = compiler.expression(param)
    if not compiler.tracks_this:
        def run(item: Any, env: Env) -> list:
            return body([item] if type(item) is tuple else arraify(item), env)
        return run

    def run_tracked(item: Any, env: Env) -> list:
        this = env.this = [item] if type(item) is tuple else arraify(item)
        return body(this, env)
    return run_tracked


def _string_literal(param: dict) -> str:
    """A ``String`` argument, accepted natively only as a string literal (no evaluation context)."""
    node_ = param
    while node_.get("type") in ("TermExpression", "LiteralTerm") and len(node_.get("children") or []) == 1:
        node_ = node_["children"][0]
    if node_.get("type") != "StringLiteral":
        raise Unsupported("a non-literal string argument")
    return string_literal(None, None, node_)[0]


def _typed_param_sets_this(compiler: "Compiler") -> Callable[[Env], None]:
    """Evaluating a typed argument sets ``$this`` to ``$this``, or to the root when unset."""
    if not compiler.tracks_this:
        return lambda env: None

    def settle(env: Env) -> None:
        if env.this is UNSET:
            env.this = env.root
    return settle


# -- filtering and existence -----------------------------------------------------------------
def _where(compiler: "Compiler", params: list[dict]) -> "Fn":
    test = _lambda(compiler, params[0])

    def where(data: list, env: Env) -> list:
        """``filtering.where_macro``: keeps the items whose first result is truthy."""
        out: list = []
        for item in data:
            result = test(item, env)
            if result and truthy(result[0]):
                if type(item) is list:
                    out.extend(item)
                else:
                    out.append(item)
        return out
    return where


def _exists(compiler: "Compiler", params: list[dict]) -> "Fn":
    if not params:
        return lambda data, env: [bool(data)]
    where = _where(compiler, params)
    return lambda data, env: [bool(where(data, env))]


def _all(compiler: "Compiler", params: list[dict]) -> "Fn":
    test = _lambda(compiler, params[0])

    def all_(data: list, env: Env) -> list:
        """``existence.all_macro``: stops at the first item whose result is not true."""
        for item in data:
            if not is_true(test(item, env)):
                return [False]
        return [True]
    return all_


def _empty(compiler: "Compiler", params: list[dict]) -> "Fn":
    return lambda data, env: [not data]


def _count(compiler: "Compiler", params: list[dict]) -> "Fn":
    return lambda data, env: [len(data)]


def _not(compiler: "Compiler", params: list[dict]) -> "Fn":
    def not_(data: list, env: Env) -> list:
        """``existence.not_fn``: one item; a non-boolean single item counts as true."""
        if len(data) != 1:
            return []
        value = get_data(data[0])
        return [not value] if isinstance(value, bool) else [False]
    return not_


def _first(compiler: "Compiler", params: list[dict]) -> "Fn":
    return lambda data, env: ([data[0]] if type(data[0]) is tuple else arraify(data[0])) if data else []


def _booleans(data: list) -> Iterator[bool]:
    """``existence.extract_boolean_value`` per item, lazily (as fhirpathpy's generator)."""
    for item in data:
        value = get_data(item)
        if type(value) is not bool:
            raise TypeError(f"Found type {type(value).__name__} but was expecting bool")
        yield value


def _all_true(compiler: "Compiler", params: list[dict]) -> "Fn":
    return lambda data, env: [all(_booleans(data))]


def _any_true(compiler: "Compiler", params: list[dict]) -> "Fn":
    return lambda data, env: [any(_booleans(data))]


def _all_false(compiler: "Compiler", params: list[dict]) -> "Fn":
    return lambda data, env: [all(not v for v in _booleans(data))]


def _any_false(compiler: "Compiler", params: list[dict]) -> "Fn":
    return lambda data, env: [any(not v for v in _booleans(data))]


def _iif(compiler: "Compiler", params: list[dict]) -> "Fn":
    cond, then = compiler.expression(params[0]), compiler.expression(params[1])
    otherwise = compiler.expression(params[2]) if len(params) == 3 else None
    tracks = compiler.tracks_this

    def iif(data: list, env: Env) -> list:
        """``misc.iif_macro``: criterion and branch see the input collection as ``$this``."""
        if tracks:
            env.this = data
        if is_true(cond(data, env)):
            if tracks:
                env.this = data
            return then(data, env)
        if otherwise is None:
            return []
        if tracks:
            env.this = data
        return otherwise(data, env)
    return iif


# -- strings, extensions, types --------------------------------------------------------------
def _matches(compiler: "Compiler", params: list[dict]) -> "Fn":
    text = _string_literal(params[0])
    if not text:
        raise Unsupported("matches('')")
    try:
        pattern = re.compile(text, re.DOTALL)
    except re.error as exc:
        raise Unsupported(f"matches() with a pattern Python cannot compile: {exc}") from None
    settle = _typed_param_sets_this(compiler)

    def matches(data: list, env: Env) -> list:
        """``strings.matches``: a search anywhere in one string (Python ``re``, DOTALL)."""
        if not data:
            return []
        settle(env)
        if len(data) != 1:
            raise ValueError("Expected string, but got a collection")
        value = get_data(data[0])
        if not isinstance(value, str):
            raise ValueError(f"Expected string, but got {type(value).__name__}")
        return [pattern.search(value) is not None]
    return matches


def _extension(compiler: "Compiler", params: list[dict]) -> "Fn":
    url = _string_literal(params[0])
    settle = _typed_param_sets_this(compiler)

    def extension(data: list, env: Env) -> list:
        """``filtering.extension``: the first extension with that url, of each item."""
        settle(env)
        out = []
        for item in data:
            element = get_data(item)
            if isinstance(element, dict):
                found = [e for e in element.get("extension", []) if e["url"] == url]
                if found:
                    out.append(node(found[0], "Extension"))
        return out
    return extension


def _type_function(check: Callable[[list, TypeTest], list]) -> Callable[["Compiler", list[dict]], "Fn"]:
    def build(compiler: "Compiler", params: list[dict]) -> "Fn":
        if "text" not in params[0]:
            raise Unsupported("a type argument that is not a name")
        try:
            test = TypeTest(TypeSpec(params[0]["text"]), compiler.model)
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
        return lambda data, env: check(data, test)
    return build


_FUNCTIONS: dict[str, tuple[tuple[int, ...], Callable[["Compiler", list[dict]], "Fn"]]] = {
    "where": ((1,), _where),
    "exists": ((0, 1), _exists),
    "all": ((1,), _all),
    "empty": ((0,), _empty),
    "count": ((0,), _count),
    "not": ((0,), _not),
    "first": ((0,), _first),
    "allTrue": ((0,), _all_true),
    "anyTrue": ((0,), _any_true),
    "allFalse": ((0,), _all_false),
    "anyFalse": ((0,), _any_false),
    "iif": ((2, 3), _iif),
    "matches": ((1,), _matches),
    "extension": ((1,), _extension),
    "is": ((1,), _type_function(is_type)),
    "as": ((1,), _type_function(as_type)),
}
