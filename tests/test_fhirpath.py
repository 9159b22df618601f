"""gateway.fhirpath: FHIRPath compiled to closures must give exactly what fhirpathpy gives.

Differential tests: every expression the gateway evaluates (recorded while the Validator,
SearchRegistry and TopicCatalog load, tests/fhirpath_inventory.py) on every fixture resource and
on generated resources, and random expressions of the compiled subset on generated data. An
outcome is the result list compared with its Python types (``True`` is not ``1``, ``Decimal('1.0')``
is not ``Decimal('1')``), or "raised" when fhirpathpy raises; any disagreement fails. The rule
tests below pin down fhirpathpy behaviours the engine keeps on purpose (docs/fhirpath.md).
"""
from __future__ import annotations

import ast
import asyncio
import functools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import fhirpathpy
import pytest
from fhirpathpy.models import models
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from fhirpath_inventory import GatewayExpression, declared, gateway_expressions
from fhirpath_strategies import expressions, json_values, resources
from gateway import fhirpath
from hl7v2_corpus import corpus

R4 = models["r4"]
ROOT = Path(__file__).resolve().parent.parent
GATEWAY = gateway_expressions()
FUZZ = hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


def typed(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", tuple((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(typed(v) for v in value))
    return (type(value).__name__, repr(value))


def outcome(evaluate: Any, focus: Any, variables: dict | None) -> Any:
    try:
        return typed(evaluate(focus, variables))
    except Exception:  # noqa: BLE001 -- which exception fhirpathpy raises is not part of the contract
        return "raised"


@functools.lru_cache(maxsize=None)
def _fhirpathpy(expression: str, with_model: bool) -> Any:
    return fhirpathpy.compile(expression, R4 if with_model else None)


def assert_same(expression: str, model: Any, focus: Any, variables: dict | None = None) -> Any:
    assert model is R4 or model is None
    expected = outcome(_fhirpathpy(expression, model is R4), focus, variables)
    native = fhirpath.compile(expression, model)
    assert outcome(native, focus, variables) == expected, (expression, focus, variables)
    return expected


def nodes(value: Any, key: str | None = None) -> Iterator[Any]:
    """The value and every object inside it, and the strings of ``value`` members (identifier
    values): the foci constraints are evaluated on (elements, extensions, sam-org-5's value)."""
    if isinstance(value, dict):
        yield value
        for k, child in value.items():
            yield from nodes(child, k)
    elif isinstance(value, list):
        for child in value:
            yield from nodes(child, key)
    elif key in (None, "value"):
        yield value


EXAMPLES = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "fixtures" / "profiles").glob("*.json"))]


def fixture_resources() -> list[dict]:
    """The profile examples, and the Patients, Encounters and Provenances the HL7 v2 ADT mapping
    makes of the public corpus (the feed the gateway must take at 400 messages/s)."""
    out = list(EXAMPLES)
    from mappings.hl7v2_adt import Hl7v2AdtMapping

    class NoMatches:
        organization = "SE2321000016-DEV1"

        async def search(self, rtype: str, query: str) -> list[dict]:
            return []

    async def translate() -> None:
        for _, message in corpus():
            try:
                translation = await Hl7v2AdtMapping().translate(message, NoMatches())
            except Exception:  # noqa: BLE001 -- the corpus holds malformed messages on purpose
                continue
            out.extend(e["resource"] for e in (translation.bundle or {}).get("entry", []))
    asyncio.run(translate())
    return out


def variables_for(use: str, resource: dict, previous: Any = None) -> dict:
    if use == "trigger":
        return {"previous": previous if previous is not None else [], "current": resource}
    return {"resource": resource, "rootResource": resource}


# -- coverage ------------------------------------------------------------------------------------
def test_every_expression_the_gateway_evaluates_is_compiled_natively():
    by_use: dict[str, int] = {}
    for e in GATEWAY:
        compiled = fhirpath.compile(e.expression, e.model)
        assert compiled.native, f"{e.use} {e.expression!r} falls back to fhirpathpy: {compiled.reason}"
        by_use[e.use] = by_use.get(e.use, 0) + 1
    assert set(by_use) == {"constraint", "invariant", "search", "trigger"}, by_use


def test_declared_expressions_fall_back_only_for_functions_fhirpathpy_cannot_evaluate_either():
    """ctm-1 (resolve()) and per-1 (hasValue()) raise in fhirpathpy on every evaluation; the
    gateway checks them natively in gateway/validation/invariants.py, not as FHIRPath."""
    fallbacks = {source: fhirpath.compile(expression, R4).reason for source, expression in declared()
                 if not fhirpath.is_native(expression, R4)}
    assert fallbacks == {"r4-invariants ctm-1": "function resolve()", "r4-invariants per-1": "function hasValue()"}


def test_the_engine_imports_nothing_from_the_layers_above_it():
    """validation, search and events use gateway.fhirpath, so it must not use them (or fhir)."""
    for path in (ROOT / "gateway" / "fhirpath").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module] + \
                   [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert all(not m.startswith("gateway") or m.startswith("gateway.fhirpath") for m in imported), path.name


# -- differential: the gateway's expressions ----------------------------------------------------
def _cases(e: GatewayExpression, resource: dict) -> Iterator[tuple[Any, dict]]:
    if e.use == "search":
        yield resource, {}
    elif e.use == "trigger":
        changed = {**resource, "status": "cancelled" if resource.get("status") != "cancelled" else "active"}
        for previous in (None, resource, changed):
            yield resource, variables_for("trigger", resource, previous)
        yield resource, {"previous": resource, "current": []}
    else:
        for focus in nodes(resource):
            yield focus, variables_for(e.use, resource)


def test_native_equals_fhirpathpy_for_every_gateway_expression_on_every_fixture():
    compared = 0
    for resource in fixture_resources():
        for e in GATEWAY:
            for focus, variables in _cases(e, resource):
                assert_same(e.expression, e.model, focus, variables)
                compared += 1
    assert compared > 20_000


@hypothesis_settings(FUZZ, max_examples=150)
@given(resource=resources(), focus_index=st.integers(0, 50))
def test_native_equals_fhirpathpy_for_every_gateway_expression_on_generated_resources(resource, focus_index):
    inner = list(nodes(resource))
    for e in GATEWAY:
        for focus, variables in _cases(e, resource) if e.use in ("search", "trigger") else \
                [(resource, variables_for(e.use, resource)), (inner[focus_index % len(inner)], variables_for(e.use, resource))]:
            assert_same(e.expression, e.model, focus, variables)


@hypothesis_settings(FUZZ, max_examples=1200)
@given(expression=expressions, focus=st.one_of(resources(), resources(), json_values),
       current=st.sampled_from([None, *EXAMPLES]), previous=st.sampled_from([None, *EXAMPLES]),
       model=st.sampled_from([R4, None]))
def test_native_equals_fhirpathpy_for_generated_expressions(expression, focus, current, previous, model):
    try:
        fhirpathpy.compile(expression, model)
    except Exception:  # noqa: BLE001 -- not an expression fhirpathpy parses; compile must raise too
        with pytest.raises(Exception):
            fhirpath.compile(expression, model)
        return
    variables = {"resource": focus, "current": current if current is not None else [],
                 "previous": previous if previous is not None else []}
    for root in (focus, current, previous):  # parsing dominates: each expression is evaluated thrice
        assert_same(expression, model, root, variables)


# -- rules kept from fhirpathpy (each also holds in the differential tests) ------------------------
ENCOUNTER = json.loads((ROOT / "fixtures" / "profiles" / "lusen-encounter-example.json").read_text(encoding="utf-8"))
UTSKRIVNINGSKLAR = ENCOUNTER["extension"][3]


def test_choice_element_value_resolves_to_the_typed_key_only_with_the_model():
    expression = "extension.where(url = 'time').value"
    assert assert_same(expression, R4, UTSKRIVNINGSKLAR) == typed(["2024-05-09T10:15:00+02:00"])
    assert assert_same(expression, None, UTSKRIVNINGSKLAR) == typed([])


def test_is_dateTime_holds_for_valueDateTime_and_not_for_valueString():
    ext = {"url": "x", "extension": [{"url": "time", "valueDateTime": "2024-05-09"},
                                     {"url": "revoked", "valueString": "2024-05-09"}]}
    assert assert_same("extension.where(url = 'time').value.all($this is dateTime)", R4, ext) == typed([True])
    assert assert_same("extension.where(url = 'revoked').value.all($this is dateTime)", R4, ext) == typed([False])


def test_dateTimes_from_data_compare_as_text_as_in_fhirpathpy():
    """sam-enc-5 compares revoked < time as strings: 15:40+02:00 (13:40Z) is not before 14:00Z
    as text, though it is in time. Kept: the gateway's verdicts must not change with the engine."""
    ext = {"url": "u", "extension": [{"url": "revoked", "valueDateTime": "2024-05-09T15:40:00+02:00"},
                                     {"url": "time", "valueDateTime": "2024-05-09T14:00:00Z"}]}
    expression = "(extension.where(url = 'revoked').value < extension.where(url = 'time').value)"
    assert assert_same(expression, R4, ext) == typed([False])


def test_a_primitive_extension_is_a_second_item_so_equality_with_one_value_is_false():
    task = {"resourceType": "Task", "status": "active", "_status": {"extension": [{"url": "x", "valueString": "y"}]}}
    assert assert_same("status.count()", R4, task) == typed([2])
    assert assert_same("status = 'active'", R4, task) == typed([False])
    assert assert_same("status", R4, task) == typed(["active"])  # the holder is dropped from results


def test_equality_compares_the_first_items_of_equally_long_collections():
    value = {"a": ["x", "y"], "b": ["x", "z"]}
    assert assert_same("a = b", None, value) == typed([True])


def test_where_keeps_an_element_whose_criterion_is_a_false_element():
    value = {"item": [{"flag": False}, {"flag": True}, {}]}
    assert assert_same("item.where(flag).count()", None, value) == typed([2])


def test_union_removes_duplicate_values():
    assert assert_same("('a' | 'b' | 'a').count()", None, {}) == typed([2])
    assert assert_same("(coding | coding).count()", None, {"coding": [{"code": "1"}, {"code": "1"}]}) == typed([1])


def test_logical_operands_must_be_single_booleans_or_empty():
    assert assert_same("url.exists() and extension", R4, UTSKRIVNINGSKLAR) == "raised"
    assert assert_same("missing.exists() or {}", R4, UTSKRIVNINGSKLAR) == typed([])


def test_matches_on_more_than_one_string_raises_like_fhirpathpy():
    assert assert_same("extension.url.matches('t')", R4, UTSKRIVNINGSKLAR) == "raised"


def test_floats_come_out_as_decimals():
    assert assert_same("value", None, {"value": 1.5}) == typed([Decimal("1.5")])


def test_an_expression_outside_the_subset_falls_back_to_fhirpathpy_whole():
    compiled = fhirpath.compile("extension.where(url = 'time').select(value)", R4)
    assert not compiled.native and compiled.reason == "function select()"
    assert_same("extension.where(url = 'time').select(value)", R4, UTSKRIVNINGSKLAR)
    assert not fhirpath.is_native("period.start + 1 day", R4)
    assert not fhirpath.is_native("member.resolve()", R4)


def test_what_fhirpathpy_refuses_to_parse_is_refused_at_compile_time():
    with pytest.raises(Exception):
        fhirpathpy.compile("status #", None)
    with pytest.raises(Exception):
        fhirpath.compile("status #", None)


def test_what_fhirpathpy_parses_despite_errors_evaluates_alike():
    """ANTLR recovers from some syntax errors (its error listener is silent in fhirpathpy); both
    engines read the same recovered tree, or the native one declines it."""
    value = {"a": {"b": 1}, "status": "x"}
    for expression in ("a..b", "(a", "a)", "status = 'unterminated", "a.b(", ""):
        assert_same(expression, None, value)


def test_compiled_expressions_are_shared_per_model():
    assert fhirpath.compile("status", R4) is fhirpath.compile("status", R4)
    assert fhirpath.compile("status", R4) is not fhirpath.compile("status", None)
