"""fhirpathpy's parse tree → Python closures, for the FHIRPath the gateway's data uses.

The tree is the one ``fhirpathpy.parser.parse`` builds (ANTLR, the official grammar), so both
engines read an expression identically: precedence, escapes, whatever ANTLR's error recovery
makes of a malformed expression. Each node becomes a closure ``(collection, env) → collection``
mirroring fhirpathpy's evaluator for that node, including where it writes ``$this``. A node
outside the subset raises ``Unsupported`` and the whole expression is left to fhirpathpy.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from fhirpathpy.engine.evaluators import boolean_literal, number_literal, string_literal

from gateway.fhirpath import functions
from gateway.fhirpath.runtime import (UNSET, Env, Member, Unsupported, arraify, compare, contains, equal,
                                      plus, to_boolean_param, type_filter, union)
from gateway.fhirpath.types import TypeSpec, TypeTest, as_type, is_type

Fn = Callable[[list, Env], list]


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda x, y: x < y, ">": lambda x, y: x > y, "<=": lambda x, y: x <= y, ">=": lambda x, y: x >= y}


def _logic_or(a: Any, b: Any) -> list:
    """``logic.or_op`` (a, b each True, False or empty)."""
    if a is True or b is True:
        return [True]
    return [] if a == [] or b == [] else [False]


def _logic_and(a: Any, b: Any) -> list:
    if a is False or b is False:
        return [False]
    return [] if a == [] or b == [] else [True]


def _logic_xor(a: Any, b: Any) -> list:
    return [] if a == [] or b == [] else [a is not b]


def _logic_implies(a: Any, b: Any) -> list:
    if a is False or b is True:
        return [True]
    return [] if a == [] or b == [] else [b]


_LOGIC = {"and": _logic_and, "or": _logic_or, "xor": _logic_xor, "implies": _logic_implies}


def identifier(node: dict) -> str:
    """``evaluators.identifier``: the identifier's text without enclosing double quotes."""
    if node.get("type") != "Identifier":
        raise Unsupported(f"expected an identifier, found {node.get('type')}")
    return re.sub(r"(^\"|\"$)", "", node["text"])


class Compiler:
    """One expression, one model. ``tracks_this``: the expression reads ``$this``, so every
    write fhirpathpy makes to it is made here too (otherwise they are unobservable and skipped)."""

    def __init__(self, model: dict | None, tracks_this: bool):
        self.model = model
        self.tracks_this = tracks_this

    def expression(self, node: dict) -> Fn:
        kind = node.get("type")
        method = getattr(self, f"_{kind}", None)
        if method is None:
            raise Unsupported(f"{kind} is not compiled natively")
        return method(node)

    def child(self, node: dict, index: int = 0) -> Fn:
        children = node.get("children") or []
        if len(children) <= index:
            raise Unsupported(f"{node.get('type')} without operand")
        return self.expression(children[index])

    def operands(self, node: dict) -> tuple[Fn, Fn]:
        if len(node.get("children") or []) != 2:
            raise Unsupported(f"{node.get('type')} without two operands")
        return self.child(node, 0), self.child(node, 1)

    # -- terms ---------------------------------------------------------------------------
    def _TermExpression(self, node: dict) -> Fn:
        return self.child(node)

    _InvocationTerm = _ParenthesizedTerm = _TermExpression

    def _LiteralTerm(self, node: dict) -> Fn:
        return self.child(node)

    def _literal(self, node: dict) -> Fn:
        evaluate = {"StringLiteral": string_literal, "NumberLiteral": number_literal,
                    "BooleanLiteral": boolean_literal}[node["type"]]
        value = evaluate(None, None, node)  # the literal as fhirpathpy reads it (escapes, int vs Decimal)
        return _constant(value)

    _StringLiteral = _NumberLiteral = _BooleanLiteral = _literal

    def _NullLiteral(self, node: dict) -> Fn:
        return _constant([])

    def _ExternalConstantTerm(self, node: dict) -> Fn:
        constant = (node.get("children") or [{}])[0]
        name = identifier((constant.get("children") or [{}])[0]).replace("`", "")

        def variable(data: list, env: Env) -> list:
            """``evaluators.external_constant_term``: %context is the focus, %ucum the UCUM system."""
            variables = env.vars
            if name in variables:
                value = variables[name]
            elif name == "context":
                value = env.resource
            elif name == "ucum":
                value = "http://unitsofmeasure.org"
            else:
                raise ValueError(f"Attempting to access an undefined environment variable: {name}")
            return arraify(value)
        return variable

    def _InvocationExpression(self, node: dict) -> Fn:
        left, right = self.operands(node)
        member = getattr(right, "member", None)
        if member is not None:  # the common `a.b`: one call less
            return lambda data, env: member(left(data, env))
        return lambda data, env: right(left(data, env), env)

    def _MemberInvocation(self, node: dict) -> Fn:
        key = identifier((node.get("children") or [{}])[0]).replace("`", "")
        if not key or key == "length":  # "" fails in fhirpathpy; .length reads a string's length
            raise Unsupported(f"member {key!r}")
        member = Member(key, self.model)
        if key[0] == key[0].upper():  # fhirpathpy's is_capitalized: a type name selects resources
            def typed(data: list, env: Env) -> list:
                selected = type_filter(data, key)
                return member(data) if selected is None else selected
            return typed

        def navigate(data: list, env: Env) -> list:
            return member(data)
        navigate.member = member  # type: ignore[attr-defined]
        return navigate

    def _ThisInvocation(self, node: dict) -> Fn:
        def this(data: list, env: Env) -> list:
            if env.this is UNSET:
                raise KeyError("$this")
            return arraify(env.this)
        return this

    def _FunctionInvocation(self, node: dict) -> Fn:
        functn = (node.get("children") or [{}])[0]
        parts = functn.get("children") or []
        if functn.get("type") != "Functn" or not parts:
            raise Unsupported("malformed function call")
        name = identifier(parts[0])
        if len(parts) > 1 and parts[1].get("type") != "ParamList":
            raise Unsupported("malformed argument list")
        params = (parts[1].get("children") or []) if len(parts) > 1 else []
        return functions.compile_function(self, name, params)

    # -- operators -------------------------------------------------------------------------
    def infix(self, node: dict, combine: Callable[[list, list], list]) -> Fn:
        """``engine.infix_invoke``: both operands are evaluated on the expression's input,
        ``$this`` set to that input before each."""
        left, right = self.operands(node)
        if self.tracks_this:
            def evaluate(data: list, env: Env) -> list:
                env.this = data
                a = left(data, env)
                env.this = data
                return combine(a, right(data, env))
            return evaluate
        constant = getattr(right, "constant", None)
        if constant is not None:  # `url = 'x'`: the literal needs no evaluation
            return lambda data, env: combine(left(data, env), constant)
        return lambda data, env: combine(left(data, env), right(data, env))

    def _EqualityExpression(self, node: dict) -> Fn:
        op = node["terminalNodeText"][0]
        if op not in ("=", "!="):
            raise Unsupported(f"operator {op}")
        negate = op == "!="

        def equality(a: list, b: list) -> list:
            if not a or not b:
                return []
            result = equal(a, b)
            if result is None:
                return []
            return [not result] if negate else [result]
        return self.infix(node, equality)

    def _InequalityExpression(self, node: dict) -> Fn:
        op = node["terminalNodeText"][0]
        test = _COMPARISONS[op]
        return self.infix(node, lambda a, b: compare(op, a, b, test) if a and b else [])

    def _logic(self, node: dict) -> Fn:
        combine = _LOGIC[node["terminalNodeText"][0]]
        left, right = self.operands(node)
        if self.tracks_this:
            def logic_tracked(data: list, env: Env) -> list:
                env.this = data
                a = to_boolean_param(left(data, env))
                env.this = data
                return combine(a, to_boolean_param(right(data, env)))
            return logic_tracked

        def logic(data: list, env: Env) -> list:
            """Both operands are always evaluated; each must be empty or one boolean."""
            return combine(to_boolean_param(left(data, env)), to_boolean_param(right(data, env)))
        return logic

    _AndExpression = _OrExpression = _ImpliesExpression = _logic

    def _MembershipExpression(self, node: dict) -> Fn:
        op = node["terminalNodeText"][0]

        def membership(a: list, b: list) -> list:
            """``collections.inn`` / ``collections.contains``."""
            item, collection = (a, b) if op == "in" else (b, a)
            if not item:
                return []
            if not collection:
                return [False]
            if len(item) > 1:
                raise ValueError(f"Expected singleton for {op}")
            return [contains(collection, item[0])]
        return self.infix(node, membership)

    def _UnionExpression(self, node: dict) -> Fn:
        left, right = self.operands(node)
        a, b = getattr(left, "constant", None), getattr(right, "constant", None)
        if a is not None and b is not None:  # ('rejected' | 'cancelled' | …): deduped once, here
            value = union(a + b)
            if not self.tracks_this:
                return _constant(value)

            def folded(data: list, env: Env) -> list:
                env.this = data
                return value
            return folded
        return self.infix(node, lambda a, b: union(a + b))

    def _AdditiveExpression(self, node: dict) -> Fn:
        if node["terminalNodeText"][0] != "+":
            raise Unsupported(f"operator {node['terminalNodeText'][0]}")
        return self.infix(node, lambda a, b: plus(a, b) if a and b else [])

    def _TypeExpression(self, node: dict) -> Fn:
        children = node.get("children") or []
        if len(children) != 2 or children[1].get("type") != "TypeSpecifier":
            raise Unsupported("malformed type expression")
        try:
            test = TypeTest(TypeSpec(children[1]["text"]), self.model)
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
        check = is_type if node["terminalNodeText"][0] == "is" else as_type
        operand = self.child(node, 0)
        if self.tracks_this:
            def typed(data: list, env: Env) -> list:
                env.this = data
                return check(operand(data, env), test)
            return typed
        return lambda data, env: check(operand(data, env), test)


def _constant(value: list) -> Fn:
    """A literal: one list serves every call (collections are never mutated)."""
    def literal(data: list, env: Env) -> list:
        return value
    literal.constant = value  # type: ignore[attr-defined]
    return literal


def uses_this(node: dict) -> bool:
    return node.get("type") == "ThisInvocation" or any(uses_this(c) for c in node.get("children") or [])


def compile_tree(tree: dict, model: dict | None) -> Fn:
    """The closure for fhirpathpy's parse tree (only its first child is evaluated, as there)."""
    children = tree.get("children") or []
    if not children:
        raise Unsupported("empty expression")
    return Compiler(model, uses_this(children[0])).expression(children[0])
