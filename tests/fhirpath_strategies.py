"""Hypothesis strategies for the differential tests of gateway.fhirpath against fhirpathpy.

Resources are JSON built from the vocabulary of the gateway's own expressions (their member
names, choice forms such as ``valueBoolean``, ``_x`` primitive extensions, their string
literals), so that random data actually reaches the paths, filters and comparisons the
expressions use; plus the shapes that trip engines (a second item from ``_status``, nulls in
lists, nested lists, floats, contained resources, strings containing "extension").
Expressions are random combinations of the compiled subset over the same vocabulary.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

MEMBERS = ["extension", "url", "value", "status", "code", "system", "coding", "identifier", "participant",
           "member", "reference", "role", "class", "type", "use", "start", "end", "period", "text", "name",
           "performer", "detail", "partOf", "category", "meta", "security", "owner", "purpose", "scope",
           "telecom", "patient", "onset", "deceased", "resource", "id"]
CHOICES = ["valueBoolean", "valueDateTime", "valueDate", "valueString", "valueInteger", "valueDecimal",
           "valueCode", "valueCoding", "valueCodeableConcept", "valueReference", "valuePeriod", "valueQuantity",
           "onsetDateTime", "onsetPeriod", "onsetString", "deceasedBoolean", "deceasedDateTime"]
PRIMITIVES = ["_status", "_url", "_valueDateTime", "_valueBoolean", "_code", "_system", "_reference", "_start"]
TYPES = ["Encounter", "Patient", "Task", "Consent", "CareTeam", "Organization", "CarePlan", "Observation",
         "Condition", "Extension", "Quantity", "Coding", ""]
URLS = ["https://samverkan.example.se/fhir/StructureDefinition/utskrivningsklar",
        "https://samverkan.example.se/fhir/StructureDefinition/may-need-services",
        "https://samverkan.example.se/fhir/StructureDefinition/planned-discharge-date",
        "https://samverkan.example.se/fhir/StructureDefinition/best-interest",
        "https://samverkan.example.se/fhir/StructureDefinition/folkbokforingskommun",
        "revoked", "time", "date", "recorded", "judged", "municipality", "primaryCare"]
WORDS = ["active", "in-progress", "finished", "IMP", "home", "sip", "patient", "kommun", "TREAT", "R", "V",
         "cancelled", "rejected", "on-hold", "failed", "email", "phone", "1380", "138", "extension", "",
         "http://electronichealth.se/identifier/personnummer", "urn:oid:1.2.752.29.4.19",
         "https://samverkan.example.se/fhir/CodeSystem/samverkan-careteam-role",
         "https://samverkan.example.se/fhir/CodeSystem/samverkan-plan-category",
         "Patient/1", "Organization/x/_history/2", "PractitionerRole/p", "RelatedPerson/r", "#c1",
         "2024-05-09", "2024-05-09T10:15:00+02:00", "2024-05-09T15:40:00+02:00", "2024-05-09T09:00:00Z",
         "2024", "2024-05", "10:15:00", "true"]
TYPE_NAMES = ["dateTime", "boolean", "string", "code", "uri", "date", "Extension", "Coding", "CodeableConcept",
              "Period", "Quantity", "Reference", "BackboneElement", "Element", "Resource", "DomainResource",
              "Encounter", "Patient", "System.String", "FHIR.dateTime", "String", "Boolean", "Integer", "Object"]
REGEXES = ["^[0-9]{4}$", "(^|/)(Patient|RelatedPerson)/[^/]+(/_history/[^/]+)?$", "active", "^$", "T"]

scalars = st.one_of(
    st.sampled_from(WORDS + URLS), st.booleans(), st.integers(-3, 3),
    st.sampled_from([Decimal("1.0"), Decimal("0"), Decimal("2.5"), 1.5, 0.0]), st.text(max_size=4))


def _objects(children: st.SearchStrategy) -> st.SearchStrategy:
    keys = st.sampled_from(MEMBERS * 3 + CHOICES + PRIMITIVES + ["resourceType"])
    return st.dictionaries(keys, children, max_size=4)


def _values(children: st.SearchStrategy) -> st.SearchStrategy:
    items = st.one_of(children, children, st.none(), st.lists(scalars, max_size=2))
    return st.one_of(_objects(children), st.lists(items, max_size=3))


json_values = st.recursive(scalars, _values, max_leaves=10)


@st.composite
def extensions(draw: Any, depth: int = 2) -> dict:
    """An extension as the LUSEN profiles use them: url, a value or nested extensions."""
    ext: dict = {"url": draw(st.sampled_from(URLS))}
    if depth and draw(st.booleans()):
        ext["extension"] = draw(st.lists(extensions(depth - 1), max_size=3))
    else:
        key = draw(st.sampled_from(CHOICES[:7]))
        ext[key] = draw(scalars)
        if draw(st.integers(0, 9)) == 0:
            ext["_" + key] = {"extension": [{"url": "x", "valueString": "y"}]}
    return ext


@st.composite
def resources(draw: Any) -> dict:
    """A resource-like object: a type (or none: an element as focus), random members, extensions."""
    out: dict = {}
    rtype = draw(st.sampled_from(TYPES + [None]))
    if rtype is not None:
        out["resourceType"] = rtype
    out.update(draw(_objects(json_values)))
    if draw(st.booleans()):
        out["extension"] = draw(st.lists(extensions(), max_size=5))
    return out


# -- expressions --------------------------------------------------------------------------------
def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


literals = st.one_of(st.sampled_from(WORDS + URLS).map(_string), st.sampled_from(["true", "false", "0", "1", "2.5", "{}"]))
paths = st.lists(st.sampled_from(MEMBERS * 2 + ["Encounter", "Extension", "`value`"]), min_size=1, max_size=3) \
    .map(".".join)
roots = st.one_of(paths, st.sampled_from(["%current", "%previous", "%resource", "%context", "$this"]).flatmap(
    lambda root: paths.map(lambda p: f"{root}.{p}") | st.just(root)))


def _extend(inner: st.SearchStrategy) -> st.SearchStrategy:
    type_name = st.sampled_from(TYPE_NAMES)
    calls = st.one_of(
        st.sampled_from([".exists()", ".empty()", ".count()", ".first()", ".not()", ".allFalse()", ".allTrue()",
                         ".anyTrue()", ".anyFalse()"]),
        inner.map(lambda e: f".where({e})"), inner.map(lambda e: f".exists({e})"),
        inner.map(lambda e: f".all({e})"), st.sampled_from(REGEXES).map(lambda r: f".matches({_string(r)})"),
        st.sampled_from(URLS).map(lambda u: f".extension({_string(u)})"),
        type_name.map(lambda t: f".as({t})"), type_name.map(lambda t: f".is({t})"),
        st.sampled_from(MEMBERS).map(lambda m: f".{m}"))
    binary = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "and", "or", "xor", "implies", "in", "contains",
                              "|", "+"])
    return st.one_of(
        st.tuples(inner, calls).map("".join),
        st.tuples(inner, binary, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(["is", "as"]), type_name).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, inner, st.none() | inner).map(
            lambda t: f"iif({t[0]}, {t[1]})" if t[2] is None else f"iif({t[0]}, {t[1]}, {t[2]})"))


expressions = st.recursive(st.one_of(roots, literals), _extend, max_leaves=5)
