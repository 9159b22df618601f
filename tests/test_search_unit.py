"""Unit tests of the search building blocks: date precision ranges (gateway/search/dates.py),
query parsing (gateway/search/query.py), the SearchParameter registry
(gateway/search/registry.py) and index extraction (gateway/search/extract.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gateway.errors import BadRequest
from gateway.fhir.types import SUPPORTED_TYPES
from gateway.search.dates import date_range, parse_instant
from gateway.search.extract import index_resource, normalise
from gateway.search.query import Include, QueryParser, split_values
from gateway.search.registry import SearchRegistry, split_union
from gateway.settings import REPO_PROFILES
from gateway.store.plan import (
    DateClause, IdClause, MissingClause, ReferenceClause, SortKey, StringClause, TokenClause,
)

UTC = timezone.utc


def us(*args, tz=UTC) -> int:
    dt = datetime(*args, tzinfo=tz)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# -- dates.date_range: a value covers its whole precision --------------------------------
@pytest.mark.parametrize("text,low,high", [
    ("2024", us(2024, 1, 1), us(2025, 1, 1) - 1),
    ("2024-02", us(2024, 2, 1), us(2024, 3, 1) - 1),  # leap year: 29 days
    ("2023-02", us(2023, 2, 1), us(2023, 3, 1) - 1),
    ("2024-12", us(2024, 12, 1), us(2025, 1, 1) - 1),
    ("2024-03-05", us(2024, 3, 5), us(2024, 3, 6) - 1),
    ("2024-03-05T10:00Z", us(2024, 3, 5, 10, 0), us(2024, 3, 5, 10, 1) - 1),
    ("2024-03-05T10:00", us(2024, 3, 5, 10, 0), us(2024, 3, 5, 10, 1) - 1),  # no zone: UTC
    ("2024-03-05T10:00:07Z", us(2024, 3, 5, 10, 0, 7), us(2024, 3, 5, 10, 0, 8) - 1),
    ("2024-03-05T10:00:07.5Z", us(2024, 3, 5, 10, 0, 7, 500000), us(2024, 3, 5, 10, 0, 7, 600000) - 1),
    ("2024-03-05T10:00:07.123Z", us(2024, 3, 5, 10, 0, 7, 123000), us(2024, 3, 5, 10, 0, 7, 124000) - 1),
    ("2024-03-05T10:00:07.123456Z", us(2024, 3, 5, 10, 0, 7, 123456), us(2024, 3, 5, 10, 0, 7, 123456)),
    ("2024-03-05T10:00:07.123456789Z", us(2024, 3, 5, 10, 0, 7, 123456), us(2024, 3, 5, 10, 0, 7, 123456)),
    ("2024-03-05T10:00:00+01:00", us(2024, 3, 5, 9, 0), us(2024, 3, 5, 9, 0, 1) - 1),
    ("2024-03-05T10:00:00-05:30", us(2024, 3, 5, 15, 30), us(2024, 3, 5, 15, 30, 1) - 1),
    ("0001-01-01", us(1, 1, 1), us(1, 1, 2) - 1),
    (" 2024-03-05 ", us(2024, 3, 5), us(2024, 3, 6) - 1),
])
def test_date_range_covers_the_whole_precision_of_the_value(text, low, high):
    assert date_range(text) == (low, high)


def test_coarser_precision_contains_finer_precision():
    chain = ["2024", "2024-03", "2024-03-05", "2024-03-05T10:00Z", "2024-03-05T10:00:07Z",
             "2024-03-05T10:00:07.123Z"]
    ranges = [date_range(t) for t in chain]
    for outer, inner in zip(ranges, ranges[1:]):
        assert outer[0] <= inner[0] and inner[1] <= outer[1] and inner != outer


def test_same_instant_in_different_zones_has_the_same_range():
    assert date_range("2024-05-20T08:00:00+02:00") == date_range("2024-05-20T06:00:00Z")


@pytest.mark.parametrize("text", ["9999", "9999-12", "9999-12-31", "9999-12-31T23:59:59Z",
                                  "9999-12-31T23:59:59.999Z"])
def test_the_last_representable_fhir_dates_have_ranges(text):
    """9999-12-31 is a valid FHIR date (and a common 'no end' marker); its range ends at the
    last microsecond of that year/day, not with an error."""
    low, high = date_range(text)
    assert low <= high
    assert high == us(9999, 12, 31, 23, 59, 59, 999999)


@pytest.mark.parametrize("text", ["", "24", "2024-1", "2024-13", "2024-00", "2024-02-30", "2024-03-05T10",
                                  "2024-03-05T25:00Z", "2024-03-05 10:00", "2024-03-05T10:00:00+0100",
                                  "2024-03-05T10:00:00+24:00", "yesterday", "2024-03-05Z", "0000"])
def test_date_range_rejects_what_is_not_a_fhir_date_with_value_error(text):
    with pytest.raises(ValueError):
        date_range(text)


def test_parse_instant_is_the_start_of_the_range():
    assert parse_instant("2024-03-05T10:00:07.5Z") == us(2024, 3, 5, 10, 0, 7, 500000)
    assert parse_instant("2024") == us(2024, 1, 1)


# -- query.split_values ------------------------------------------------------------------
@pytest.mark.parametrize("value,parts", [
    ("a", ["a"]), ("a,b,c", ["a", "b", "c"]), ("a\\,b", ["a\\,b"]), ("a,", ["a", ""]),
    ("sys|a,sys|b", ["sys|a", "sys|b"]), ("a\\\\,b", ["a\\\\", "b"]),
])
def test_split_values_splits_on_unescaped_commas_only(value, parts):
    assert split_values(value) == parts


# -- query.QueryParser --------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(REPO_PROFILES, SUPPORTED_TYPES)


@pytest.fixture
def parser(registry) -> QueryParser:
    return QueryParser(registry, default_count=20, max_count=1000, snapshot_limit=10_000)


def clauses(parser, rtype: str, *params: tuple[str, str]):
    return parser.parse(rtype, list(params)).plan.clauses


def test_token_values_with_and_without_system(parser):
    (clause,) = clauses(parser, "Task", ("identifier", "urn:s|T-1,T-2,urn:s|,|T-3"))
    assert clause == TokenClause("identifier", (("urn:s", "T-1"), (None, "T-2"), ("urn:s", None), ("", "T-3")))


def test_escaped_characters_in_token_values(parser):
    (clause,) = clauses(parser, "Task", ("identifier", "a\\|b,c\\,d"))
    assert clause.values == ((None, "a|b"), (None, "c,d"))


def test_token_not_modifier(parser):
    (clause,) = clauses(parser, "Task", ("status:not", "completed"))
    assert clause == TokenClause("status", ((None, "completed"),), negate=True)


def test_repeated_parameters_become_separate_clauses(parser):
    assert len(clauses(parser, "Task", ("status", "a"), ("status", "b"))) == 2


def test_reference_values(parser):
    (c,) = clauses(parser, "Task", ("patient", "123"))
    assert c == ReferenceClause("patient", (("Patient", "123"),))  # the only target types a bare id
    (c,) = clauses(parser, "Task", ("subject", "123"))
    assert c == ReferenceClause("subject", ((None, "123"),))  # many targets: any type
    (c,) = clauses(parser, "Task", ("subject:Patient", "123"))
    assert c == ReferenceClause("subject", (("Patient", "123"),))
    (c,) = clauses(parser, "Task", ("subject", "Patient/123,Organization/9"))
    assert c.values == (("Patient", "123"), ("Organization", "9"))
    req = parser.parse("Task", [("subject", "http://test/fhir/Patient/123/_history/2")], base_url="http://test/fhir")
    assert req.plan.clauses[0].values == (("Patient", "123"),)  # under our own base: local
    (c,) = clauses(parser, "Task", ("subject", "https://kommun.example/fhir/Patient/123"))
    assert c.values == ((None, "https://kommun.example/fhir/Patient/123"),)  # another server's: by URL


def test_reference_type_modifier_must_agree_with_the_value(parser):
    with pytest.raises(BadRequest, match="Organization"):
        parser.parse("Task", [("subject:Patient", "Organization/1")])


def test_date_prefixes_are_parsed_and_default_to_eq(parser):
    (c,) = clauses(parser, "Task", ("authored-on", "2024-03-05,ge2024,lt2024-03,ne2024-03-05T10:00Z,sa2024,eb2024"))
    assert isinstance(c, DateClause)
    assert [v[0] for v in c.values] == ["eq", "ge", "lt", "ne", "sa", "eb"]
    assert c.values[0][1:] == date_range("2024-03-05")
    assert c.values[1][1:] == date_range("2024")


def test_invalid_date_is_bad_request_naming_the_parameter(parser):
    with pytest.raises(BadRequest, match="authored-on"):
        parser.parse("Task", [("authored-on", "gt")])
    with pytest.raises(BadRequest, match="authored-on"):
        parser.parse("Task", [("authored-on", "2024-02-30")])


def test_string_modes(parser):
    (c,) = clauses(parser, "Patient", ("family", "Åberg"))
    assert c == StringClause("family", (("prefix", "aberg"),))
    (c,) = clauses(parser, "Patient", ("family:exact", "Åberg"))
    assert c == StringClause("family", (("exact", "Åberg"),))
    (c,) = clauses(parser, "Patient", ("family:contains", "BERG"))
    assert c == StringClause("family", (("contains", "berg"),))


def test_missing_modifier(parser):
    (c,) = clauses(parser, "Task", ("owner:missing", "true"))
    assert isinstance(c, MissingClause) and c.param == "owner" and c.missing is True and c.table == "reference"
    (c,) = clauses(parser, "Task", ("authored-on:missing", "false"))
    assert c.missing is False and c.table == "date"
    with pytest.raises(BadRequest):
        parser.parse("Task", [("owner:missing", "yes")])


def test_id_clause(parser):
    (c,) = clauses(parser, "Task", ("_id", "a,b"))
    assert c == IdClause(("a", "b"))
    (c,) = clauses(parser, "Task", ("_id:not", "a"))
    assert c == IdClause(("a",), negate=True)
    with pytest.raises(BadRequest):
        parser.parse("Task", [("_id:missing", "maybe")])


@pytest.mark.parametrize("name,value", [
    ("status:exact", "x"), ("status:contains", "x"), ("authored-on:not", "2024"), ("family:not", "x"),
    ("owner:exact", "x"), ("_id:exact", "x"), ("status", ""), ("status", "a,,b"),
])
def test_modifiers_and_values_that_do_not_apply_are_bad_requests(parser, name, value):
    with pytest.raises(BadRequest):
        parser.parse("Task" if name.split(":")[0] != "family" else "Patient", [(name, value)])


def test_unknown_parameter_is_bad_request_unless_lenient(parser):
    with pytest.raises(BadRequest, match="colour"):
        parser.parse("Task", [("colour", "blue")])
    req = parser.parse("Task", [("colour", "blue"), ("status", "draft")], lenient=True)
    assert req.plan.clauses == (TokenClause("status", ((None, "draft"),)),)
    assert req.query == "status=draft"


def test_chains_and_has_are_refused_and_lenient_drops_them(parser):
    for name in ("subject.name", "_has:Task:patient:status"):
        with pytest.raises(BadRequest):
            parser.parse("Patient" if name.startswith("_has") else "Task", [(name, "x")])
    assert parser.parse("Task", [("subject.name", "x")], lenient=True).plan.clauses == ()


def test_count(parser):
    assert parser.parse("Task", []).count == 20
    assert parser.parse("Task", [("_count", "5")]).count == 5
    assert parser.parse("Task", [("_count", "50000")]).count == 1000  # capped
    assert parser.parse("Task", [("_count", "0")]).summary_count is True
    for bad in ("-1", "abc", "1.5"):
        with pytest.raises(BadRequest):
            parser.parse("Task", [("_count", bad)])


def test_count_with_non_ascii_digits_is_a_bad_request(parser):
    """'²'.isdigit() is True but int('²') fails: the client must get a 400, not a crash."""
    with pytest.raises(BadRequest, match="_count"):
        parser.parse("Task", [("_count", "²")])


def test_sort_keys(parser):
    req = parser.parse("Task", [("_sort", "-authored-on,_lastUpdated,_id")])
    assert req.plan.sort == (SortKey("authored-on", "date", True), SortKey("_lastUpdated", "lastUpdated", False),
                             SortKey("_id", "id", False))
    with pytest.raises(BadRequest):
        parser.parse("Task", [("_sort", "status")])


def test_includes(parser):
    req = parser.parse("Task", [("_include", "Task:patient"), ("_include", "Task:owner:Organization"),
                                ("_include:iterate", "CarePlan:care-team"), ("_revinclude", "Provenance:target")])
    assert req.includes == [Include("Task", "patient", None), Include("Task", "owner", "Organization"),
                            Include("CarePlan", "care-team", None, iterate=True)]
    assert req.revincludes == [Include("Provenance", "target", None)]
    with pytest.raises(BadRequest, match="iterate"):
        parser.parse("Task", [("_include", "CarePlan:care-team")])
    with pytest.raises(BadRequest):
        parser.parse("Task", [("_include", "Task:status")])  # not a reference parameter


def test_result_parameters(parser):
    req = parser.parse("Task", [("_summary", "count"), ("_total", "none"), ("_elements", "status, owner")])
    assert req.summary_count and req.total == "none" and req.elements == ["status", "owner"]
    for name, value in (("_total", "maybe"), ("_summary", "text")):
        with pytest.raises(BadRequest):
            parser.parse("Task", [(name, value)])


def test_normalised_query_keeps_applied_parameters_and_drops_format(parser):
    req = parser.parse("Task", [("_format", "json"), ("status", "draft"), ("_count", "5")])
    assert req.query == "status=draft&_count=5"


# -- registry.split_union -----------------------------------------------------------------
@pytest.mark.parametrize("expression,parts", [
    ("Task.for", ["Task.for"]),
    ("CarePlan.subject | CareTeam.subject", ["CarePlan.subject", "CareTeam.subject"]),
    ("A.where(x | y) | B", ["A.where(x | y)", "B"]),
    ("A.where(s = 'a|b') | B", ["A.where(s = 'a|b')", "B"]),
    ("(Observation.value as CodeableConcept) | (Observation.component.value as CodeableConcept)",
     ["(Observation.value as CodeableConcept)", "(Observation.component.value as CodeableConcept)"]),
    ("A.where(f(g(x) | y)) | B.c | C", ["A.where(f(g(x) | y))", "B.c", "C"]),
    ("A |  | B", ["A", "B"]),
    ("A |", ["A"]),
])
def test_split_union_splits_on_top_level_bars_only(expression, parts):
    assert split_union(expression) == parts


# -- registry: definitions → searchable parameters ------------------------------------------
def _sp(code: str, base: list[str], ptype: str, expression: str, **extra) -> dict:
    return {"resourceType": "SearchParameter", "url": f"urn:test:{code}", "code": code, "base": base,
            "type": ptype, "expression": expression, **extra}


def test_registry_applies_resource_parameters_to_every_type_and_skips_unsearchable_types():
    reg = SearchRegistry([
        _sp("_id", ["Resource"], "token", "Resource.id"),
        _sp("_tag", ["Resource"], "token", "Resource.meta.tag"),
        _sp("length", ["Task"], "number", "Task.input.value"),  # number: not searchable here
        _sp("deadline", ["Task"], "date", "Task.restriction.period"),
    ], ("Task", "Patient"))
    assert set(reg.params("Patient")) == {"_id", "_tag"}
    assert set(reg.params("Task")) == {"_id", "_tag", "deadline"}
    assert reg.get("Task", "length") is None


@pytest.mark.parametrize("expression", ["Task.status.where(", "Task.status.frobnicate()"],
                         ids=["syntax-error", "unknown-function"])
def test_registry_leaves_out_a_parameter_the_fhirpath_engine_cannot_run(expression):
    """A SearchParameter whose expression cannot be evaluated must not be listed (and so
    not searchable): otherwise /metadata claims it and searches silently match nothing."""
    reg = SearchRegistry([_sp("broken", ["Task"], "token", expression)], ("Task",))
    assert reg.get("Task", "broken") is None


def test_registry_parts_of_a_union_go_to_their_own_type():
    reg = SearchRegistry([_sp("subject", ["CarePlan", "CareTeam"], "reference",
                              "CarePlan.subject | CareTeam.subject")], ("CarePlan", "CareTeam", "Task"))
    assert reg.get("CarePlan", "subject") and reg.get("CareTeam", "subject")
    assert reg.get("Task", "subject") is None
    plan = {"resourceType": "CarePlan", "subject": {"reference": "Patient/1"}}
    assert index_resource(reg, "CarePlan", plan).references == [("subject", "Patient", "1")]


# -- extract.index_resource ---------------------------------------------------------------
def test_resolve_is_becomes_a_target_type_filter(registry):
    for_patient = {"resourceType": "Task", "status": "draft", "intent": "order", "for": {"reference": "Patient/1"}}
    for_group = {**for_patient, "for": {"reference": "Group/1"}}
    refs = index_resource(registry, "Task", for_patient).references
    assert ("patient", "Patient", "1") in refs and ("subject", "Patient", "1") in refs
    refs = index_resource(registry, "Task", for_group).references
    assert ("subject", "Group", "1") in refs and not [r for r in refs if r[0] == "patient"]


def test_where_clauses_are_evaluated(registry):
    p = {"resourceType": "Patient", "telecom": [{"system": "email", "value": "a@b.se"},
                                                {"system": "phone", "value": "070"}]}
    tokens = index_resource(registry, "Patient", p).tokens
    # Patient.telecom.where(system='email'): only the email ContactPoint, under its own system
    assert [t for t in tokens if t[0] == "email"] == [("email", "email", "a@b.se")]
    assert [t for t in tokens if t[0] == "phone"] == [("phone", "phone", "070")]
    assert len([t for t in tokens if t[0] == "telecom"]) == 2


def test_choice_elements_are_indexed_under_their_parameter(registry):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "effectiveDateTime": "2024-03-05T10:00:00Z"}
    dates = index_resource(registry, "Observation", obs).dates
    assert ("date", *date_range("2024-03-05T10:00:00Z")) in dates
    obs = {**obs, "effectivePeriod": {"start": "2024-03-01"}}
    del obs["effectiveDateTime"]
    (row,) = [d for d in index_resource(registry, "Observation", obs).dates if d[0] == "date"]
    assert row[1] == date_range("2024-03-01")[0] and row[2] > date_range("9000")[0]  # open end


def test_strings_are_indexed_folded_and_raw(registry):
    p = {"resourceType": "Patient", "name": [{"family": "Åberg", "given": ["Tolvan"]}]}
    strings = index_resource(registry, "Patient", p).strings
    assert ("family", "aberg", "Åberg") in strings
    assert ("given", "tolvan", "Tolvan") in strings
    assert normalise("  ÅÄÖ éü ") == "aao eu"


def test_a_value_the_index_cannot_read_does_not_break_the_write(registry):
    task = {"resourceType": "Task", "status": "draft", "intent": "order", "authoredOn": "not-a-date"}
    rows = index_resource(registry, "Task", task)  # validation rejects it first; extraction must not raise
    assert not [d for d in rows.dates if d[0] == "authored-on"]
