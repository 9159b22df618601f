"""A request fuzzer: 10,000 seeded, random-but-reproducible requests in-process (bodies mutated from
valid resources, Bundles, JSON Patch and Parameters documents; URLs from the FHIR grammar with
garbage in every part; headers valid, odd and hostile), authenticated like a real client. The
rule it checks is the codebase's first: whatever a client sends, the answer is never a 5xx, and
every error is an OperationOutcome. Bounded to run in well under two minutes.

On a failure the message lists the first offending requests (method, URL, headers, body prefix):
the generator is seeded, so ``FUZZ_SEED=<n> pytest tests/test_fuzz.py`` replays a run exactly.
"""
from __future__ import annotations

import copy
import gzip
import json
import os
import random
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import FHIR, assert_outcome, get_token, patient, running_gateway, task

REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "10000"))
SEED = int(os.environ.get("FUZZ_SEED", "13"))
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "profiles"

TYPES = ["Patient", "Task", "CarePlan", "CareTeam", "Consent", "Encounter", "Organization", "Observation",
         "Subscription", "Communication", "Questionnaire", "QuestionnaireResponse", "Bundle", "Parameters",
         "AuditEvent", "StructureDefinition", "SearchParameter", "ValueSet", "Practitioner", "Goal"]
BAD_TYPES = ["patient", "Foo", "_history", "$validate", "..", "%00", "Patient%2FTask", "A" * 300, "Pätient", "metadata"]
MODIFIERS = ["", "", "", ":exact", ":missing", ":not", ":contains", ":Patient", ":text", ":above", ":garbage", ":"]
PREFIXES = ["", "", "eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap", "zz"]
RESULT_PARAMS = ["_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements", "_format",
                 "_since", "_getpages", "_cursor", "_id", "_lastUpdated", "_contained", "_has:Task:for:status",
                 "mode", "eventsSinceNumber", "eventsUntilNumber", "_pretty", "identifier"]
CONTENT_TYPES = ["application/fhir+json", "application/json", "application/json+fhir", "application/fhir+json; charset=utf-8",
                 "application/fhir+xml", "text/plain", "", "application/json-patch+json", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/fhir+json; fhirVersion=3.0", "*/*", "\x7f", "a/b/c"]
ACCEPTS = [None, None, "application/fhir+json", "application/xml", "*/*", "text/html", "application/*",
           "application/fhir+json;q=0", ",,,", "application/fhir+xml, application/json;q=0.1"]
EVIL_STRINGS = ["", " ", "\u0000", "\\", "%", "%00", "'; DROP TABLE versions;--", "\ud800", "👩‍⚕️" * 50, "a" * 70_000,
                "Patient/../../etc/passwd", "urn:uuid:not-a-uuid", "http://evil.example/fhir/Patient/1",
                "2024-13-45", "9999-12-31T23:59:59.999999999+14:00", "1e400", "-0", "NaN", "true", "null",
                "W/\"1\"", "W/\"99999999999999999999\"", "*", "Patient?identifier=x", "#", "|", "a|b|c", "$"]


def evil_value(rng: random.Random):
    kind = rng.randrange(16)
    if kind < 6:
        return rng.choice(EVIL_STRINGS)
    if kind == 6:
        return rng.choice([None, True, False, 0, -1, 2**63, 2**70, -(2**80), 1.5, 1e308, 0.1])
    if kind == 7:
        return []
    if kind == 8:
        return {}
    if kind == 9:
        value: object = rng.choice([1, "x", {}])
        for _ in range(rng.randrange(1, 90)):  # around the nesting limit
            value = [value] if rng.random() < 0.5 else {"a": value}
        return value
    if kind == 10:
        return [rng.choice(EVIL_STRINGS) for _ in range(rng.randrange(1, 50))]
    if kind == 11:
        return {"reference": rng.choice(["Patient/x", "urn:uuid:" + "0" * 36, "#contained", "", "Task?status=x"])}
    if kind == 12:
        return {"url": rng.choice(["http://x", ""]), "extension": [{"url": "u", "valueString": "v"}]}
    if kind == 13:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
    return rng.randrange(-10, 10_000)


def containers(node, out=None):
    """Every dict and list inside a document."""
    out = [] if out is None else out
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (dict, list)):
            out.append(current)
            stack.extend(current.values() if isinstance(current, dict) else current)
    return out


def mutate(rng: random.Random, doc):
    for _ in range(rng.randrange(0, 4)):
        target = rng.choice(containers(doc) or [doc])
        if isinstance(target, dict):
            action = rng.randrange(4)
            if target and action == 0:
                del target[rng.choice(list(target))]
            elif target and action == 1:
                target[rng.choice(list(target))] = evil_value(rng)
            elif action == 2:
                target[rng.choice(["resourceType", "id", "meta", "extension", "modifierExtension", "contained",
                                   "_birthDate", "text", "status", "subject", rng.choice(EVIL_STRINGS)[:20]])] = \
                    evil_value(rng)
            elif target:
                key = rng.choice(list(target))
                target[key] = [target[key]] * rng.randrange(0, 30)
        elif isinstance(target, list):
            if target and rng.random() < 0.5:
                target[rng.randrange(len(target))] = evil_value(rng)
            else:
                target.append(evil_value(rng))
    return doc


def mutate_bytes(rng: random.Random, body: bytes) -> bytes:
    action = rng.randrange(8)
    if action == 0 and body:
        return body[: rng.randrange(len(body))]
    if action == 1 and body:
        i = rng.randrange(len(body))
        return body[:i] + bytes([rng.randrange(256)]) + body[i + 1:]
    if action == 2:
        return b"\xef\xbb\xbf" + body
    if action == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if action == 4:
        return body.replace(b'"', b"'", 1)
    if action == 5:
        return b"[" + body + b"]"
    if action == 6:
        return body + b"}" * rng.randrange(1, 5)
    return body.replace(b":", b":" + b"[" * 70, 1) if body else body


class Fuzzer:
    def __init__(self, rng: random.Random, seeds: list[dict], ids: dict[str, list[str]], params: dict[str, list[str]]):
        self.rng, self.seeds, self.ids, self.params = rng, seeds, ids, params

    def rtype(self) -> str:
        return self.rng.choice(BAD_TYPES) if self.rng.random() < 0.05 else self.rng.choice(TYPES)

    def rid(self, rtype: str) -> str:
        r = self.rng.random()
        if r < 0.7 and self.ids.get(rtype):
            return self.rng.choice(self.ids[rtype])
        if r < 0.85:
            return "".join(self.rng.choice("abcdef0123456789-.") for _ in range(self.rng.randrange(1, 64)))
        return quote(self.rng.choice(EVIL_STRINGS)[:300] or "x", safe="", errors="surrogatepass")

    def resource(self, rtype: str | None = None) -> dict:
        candidates = [s for s in self.seeds if s["resourceType"] == rtype]
        doc = copy.deepcopy(self.rng.choice(candidates or self.seeds))
        if not candidates and rtype and self.rng.random() < 0.7:
            doc["resourceType"] = rtype  # another type's elements: for validation to refuse
        return mutate(self.rng, doc)

    def query(self, rtype: str) -> str:
        pairs = []
        for _ in range(self.rng.randrange(0, 5)):
            if self.rng.random() < 0.6 and self.params.get(rtype):
                name = self.rng.choice(self.params[rtype]) + self.rng.choice(MODIFIERS)
                if self.rng.random() < 0.1:
                    name += "." + self.rng.choice(["name", "identifier", "x"])  # chaining
            else:
                name = self.rng.choice(RESULT_PARAMS)
            value = self.rng.choice(PREFIXES) + str(self.rng.choice([
                self.rng.choice(EVIL_STRINGS)[:200], self.rng.randrange(-5, 3000), "2024-01-01", "2024",
                "http://electronichealth.se/identifier/personnummer|191212121212", f"{rtype}:subject",
                f"Patient/{self.rid('Patient')}", "count", "accurate", "-_lastUpdated", "id,meta", "json", "xml"]))
            pairs.append(f"{quote(name, safe=':._$', errors='surrogatepass')}="
                         f"{quote(value, safe='|:/,-', errors='surrogatepass')}")
        if self.rng.random() < 0.03:
            pairs.append(self.rng.choice(["%zz", "a=%", "&&&", "=x", "a=b=c", "%00=%00"]))
        return "&".join(pairs)

    def headers(self, content_type: str | None) -> dict[str, str]:
        h: dict[str, str] = {}
        if content_type is not None:
            h["Content-Type"] = self.rng.choice(CONTENT_TYPES) if self.rng.random() < 0.1 else content_type
        accept = self.rng.choice(ACCEPTS) if self.rng.random() < 0.15 else None
        if accept:
            h["Accept"] = accept
        for name, values in (("If-Match", ['W/"1"', 'W/"2"', "*", "garbage", 'W/"-1"', '"1"']),
                             ("If-None-Match", ['W/"1"', "*", "x"]),
                             ("If-None-Exist", ["identifier=x|y", "", "_id=a&_id=b", "unknown=1", "%zz"]),
                             ("Prefer", ["return=minimal", "return=OperationOutcome", "handling=lenient", "x=y;;"]),
                             ("Content-Encoding", ["gzip", "br", "identity", "deflate", "gzip, gzip"])):
            if self.rng.random() < 0.06:
                h[name] = self.rng.choice(values)
        r = self.rng.random()
        if r < 0.03:
            h["Authorization"] = self.rng.choice(["", "Bearer", "Bearer x.y.z", "Basic dXNlcjpwYXNz", "Bearer " + "a" * 5000])
        elif r < 0.05:
            h["Host"] = self.rng.choice(["evil.example", "test:0", "te st", "[::1]", "localhost:8080"])
        if self.rng.random() < 0.03:
            h[self.rng.choice(["X-Forwarded-Host", "Transfer-Encoding", "Expect", "X-" + "a" * 100])] = \
                self.rng.choice(["evil.example", "chunked", "100-continue", "\t"])
        return h

    def body(self, kind: str, rtype: str, fixed: dict | None = None) -> bytes:
        if kind == "resource":
            doc: object = self.resource(rtype if self.rng.random() < 0.8 else None)
            if fixed and isinstance(doc, dict):
                doc.update(fixed)
        elif kind == "patch":
            doc = [{"op": self.rng.choice(["add", "replace", "remove", "test", "move", "copy", "x", None]),
                    "path": self.rng.choice(["/active", "/name/0/family", "/id", "/resourceType", "/meta/versionId",
                                             "", "/", "/-", "/extension/-", "/a~2b", "/name/99999", "/status"]),
                    "value": evil_value(self.rng), "from": self.rng.choice(["/name", "/x", ""])}
                   for _ in range(self.rng.randrange(0, 4))]
        elif kind == "bundle":
            entries = []
            for _ in range(self.rng.randrange(0, 5)):
                method = self.rng.choice(["POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "FOO"])
                resource = self.resource()
                entries.append(mutate(self.rng, {
                    "fullUrl": self.rng.choice(["urn:uuid:6f6b3c3e-1111-4222-8333-444455556666", "urn:uuid:x", None]),
                    "request": {"method": method, "url": self.rng.choice([
                        resource["resourceType"] if isinstance(resource, dict) and "resourceType" in resource
                        else "Patient", f"Patient/{self.rid('Patient')}", "Patient?identifier=x|y", "", "metadata"])},
                    "resource": resource}))
            doc = {"resourceType": "Bundle", "type": self.rng.choice(["transaction", "batch", "searchset", "x"]),
                   "entry": entries}
        elif kind == "parameters":
            doc = mutate(self.rng, {"resourceType": "Parameters", "parameter": [
                {"name": "resource", "resource": self.resource(rtype)}, {"name": "mode", "valueCode": "create"}]})
        else:  # a search form
            return self.query(rtype).encode()
        raw = json.dumps(doc, ensure_ascii=self.rng.random() < 0.5).encode("utf-8", "surrogatepass")
        return mutate_bytes(self.rng, raw) if self.rng.random() < 0.15 else raw

    def request(self) -> tuple[str, str, dict[str, str], bytes]:
        rng = self.rng
        rtype = self.rtype()
        rid = self.rid(rtype)
        shapes = [
            ("GET", f"{rtype}", None, None), ("POST", f"{rtype}", "resource", "application/fhir+json"),
            ("PUT", f"{rtype}/{rid}", "resource", "application/fhir+json"),
            ("PUT", f"{rtype}", "resource", "application/fhir+json"), ("GET", f"{rtype}/{rid}", None, None),
            ("PATCH", f"{rtype}/{rid}", "patch", "application/json-patch+json"), ("DELETE", f"{rtype}/{rid}", None, None),
            ("GET", f"{rtype}/{rid}/_history", None, None), ("GET", f"{rtype}/{rid}/_history/{rng.randrange(-1, 5)}", None, None),
            ("GET", f"{rtype}/_history", None, None), ("GET", "_history", None, None),
            ("POST", "", "bundle", "application/fhir+json"),
            ("POST", f"{rtype}/_search", "form", "application/x-www-form-urlencoded"),
            ("POST", f"{rtype}/$validate", "parameters", "application/fhir+json"),
            ("POST", f"{rtype}/{rid}/$validate", "resource", "application/fhir+json"),
            ("GET", "Subscription/$status", None, None), ("GET", f"Subscription/{rid}/$events", None, None),
            ("POST", f"Subscription/{rid}/$status", "parameters", "application/fhir+json"),
            ("GET", rng.choice(["metadata", "api-docs", ".well-known/smart-configuration", "auth/token", ""]), None, None),
            ("POST", "auth/token", "form", "application/x-www-form-urlencoded"),
            ("GET", f"{rtype}/{rid}/{rng.choice(['x', '$', '_history/1/x', '$everything', '%2e%2e'])}", None, None),
        ]
        method, path, kind, content_type = rng.choice(shapes)
        if rng.random() < 0.04:
            method = rng.choice(["HEAD", "OPTIONS", "TRACE", "FOO", "get", "CONNECT"])
        if kind == "resource" and method == "PUT" and path.count("/") == 1 and rng.random() < 0.8:
            body = self.body(kind, rtype, {"resourceType": rtype, "id": rid})  # an update that matches its URL
        else:
            body = self.body(kind, rtype) if kind else b""
        headers = self.headers(content_type if kind else None)
        if headers.get("Content-Encoding") in ("gzip",) and rng.random() < 0.8:
            body = gzip.compress(body)
        conditional = method == "PUT" and "/" not in path and rng.random() < 0.9
        query = self.query(rtype) if (method == "GET" or conditional or rng.random() < 0.2) else ""
        prefix = FHIR if rng.random() < 0.98 else rng.choice(["", "/fhirx", "/FHIR", "/fhir/fhir"])
        return method, f"{prefix}/{path}" + (f"?{query}" if query else ""), headers, body


def seed_resources() -> list[dict]:
    seeds = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(FIXTURES.glob("*.json"))]
    for seed in seeds:
        seed.pop("id", None)
    seeds += [patient(), task(), {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                  "valueQuantity": {"value": 1.50, "unit": "kg"}}]
    return seeds


def problem(method: str, url: str, response) -> str | None:
    """What is wrong with an answer, if anything."""
    if response.status_code >= 500:
        return f"status {response.status_code}"
    if response.status_code < 400 or method.upper() == "HEAD":
        return None
    kind = response.headers.get("content-type", "")
    if not kind.startswith(("application/fhir+json", "application/json")):
        return f"{response.status_code} with content-type {kind!r}"
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} with a body that is not JSON"
    if not (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" and body.get("issue")):
        return f"{response.status_code} with a body that is not an OperationOutcome"
    return None


async def test_ten_thousand_fuzzed_requests_get_no_5xx_and_every_error_is_an_operation_outcome(settings):
    rng = random.Random(SEED)
    seeds = seed_resources()
    fast = replace(settings, sqlite_synchronous="OFF")  # durability is not under test here; speed is
    async with running_gateway(fast) as client:
        ids: dict[str, list[str]] = {}
        tolvan = await client.post(f"{FHIR}/Patient", json=patient(), headers={"Content-Type": "application/fhir+json"})
        # the fixtures are about Patient/tolvan: point them at the stored one, so writes get past access rules
        seeds = [json.loads(json.dumps(s).replace("Patient/tolvan", f"Patient/{tolvan.json()['id']}")) for s in seeds]
        for seed in seeds:
            r = await client.post(f"{FHIR}/{seed['resourceType']}", json=seed, headers={"Content-Type": "application/fhir+json"})
            assert r.status_code == 201, r.text
            ids.setdefault(seed["resourceType"], []).append(r.json()["id"])
        capability = (await client.get(f"{FHIR}/metadata")).json()
        params = {res["type"]: [p["name"] for p in res.get("searchParam", [])] for res in capability["rest"][0]["resource"]}
        fuzzer = Fuzzer(rng, seeds, ids, params)
        client.headers["Authorization"] = f"Bearer {await get_token(client, fast.db_path)}"
        statuses: dict[int, int] = {}
        failures: list[str] = []
        for _ in range(REQUESTS):
            method, url, headers, body = fuzzer.request()
            r = await client.request(method, url, headers=headers, content=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            wrong = problem(method, url, r)
            if wrong and len(failures) < 10:
                failures.append(f"{wrong}: {method} {url[:300]} headers={headers} body={body[:300]!r} -> {r.text[:300]}")
            if r.status_code == 201 and method == "POST" and "location" in r.headers:
                created = r.headers["location"].split("/fhir/", 1)[1].split("/")
                ids.setdefault(created[0], []).append(created[1])
    print(f"\nfuzz seed {SEED}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) == REQUESTS
    assert not failures, "\n".join(failures)
    assert sum(n for code, n in statuses.items() if code < 300) > REQUESTS // 50  # not all bounced at the door


# -- what the fuzzer found, kept as named cases ---------------------------------------------------
@pytest.mark.parametrize("path", ["Practitioner/$validate", "Subscription/$status", "Subscription/x/$status"])
@pytest.mark.parametrize("parameter", [5948, "x", {"name": "mode"}, True])
async def test_a_parameters_body_whose_parameter_is_not_an_array_is_400(client, path, parameter):
    r = await client.post(f"{FHIR}/{path}", json={"resourceType": "Parameters", "parameter": parameter},
                          headers={"Content-Type": "application/fhir+json"})
    assert_outcome(r, 400, "Parameters.parameter", "array")


async def test_a_validate_mode_that_is_not_a_code_is_ignored_not_a_500(client):
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient()},
                                                         {"name": "mode", "valueCode": ["create"]}]}
    r = await client.post(f"{FHIR}/Patient/$validate", json=body, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
