"""Synthetic care-coordination data and its loader (transaction Bundles of ~500 entries).

Shape, per patient: 1 Patient, 1 CarePlan (SIP), 1 CareTeam, 2 Encounters and 10-20 Tasks
with mixed statuses, so Tasks are ~75 % of the store and Patients ~5 %; a few Organizations
(region, municipalities, units) and Practitioners are shared by everyone. All of a patient's
resources go in one transaction and refer to each other by ``urn:uuid:`` fullUrls, which the
server rewrites; shared ones are created first and referred to by their server ids.

The ids the benchmark needs later are kept in a manifest (``<db>.bench.json``) so a loaded
store can be reused with ``--db`` without reloading.
"""
from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import orjson

from gateway.validation.identifiers import luhn_ok

from loadgen import Connection, encode_request

TASK_STATUSES = ("requested", "accepted", "in-progress", "completed")
_STATUS_WEIGHTS = (30, 20, 25, 25)
PNR = "http://electronichealth.se/identifier/personnummer"


def personnummer(born: date, serial: int) -> str:
    """A synthetic personnummer with a correct Luhn check digit (the gateway checks it)."""
    body = f"{born:%Y%m%d}{serial:03d}"
    return body + next(d for d in "0123456789" if luhn_ok(body[2:] + d))
HSA = "urn:oid:1.2.752.29.4.19"
SIP = {"system": "http://snomed.info/sct", "code": "736353004", "display": "Samordnad individuell plan"}
_TASK_CODES = [("sip-meeting", "Kalla till SIP-möte"), ("home-care", "Hemtjänstinsats"),
               ("follow-up", "Uppföljning efter utskrivning"), ("medication", "Läkemedelsgenomgång"),
               ("assistive", "Hjälpmedelsbedömning")]
_FAMILY = ["Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson"]
_GIVEN = ["Anna", "Erik", "Maria", "Lars", "Karin", "Anders", "Eva", "Johan", "Åsa", "Örjan"]


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _entry(full_url: str, resource: dict) -> dict:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]}}


def shared_entries(rng: random.Random) -> list[dict]:
    """Organizations (1 region, 8 municipalities, 20 units) and 150 Practitioners."""
    out = [_entry(_urn(), {"resourceType": "Organization", "name": "Region Exempel", "active": True,
                           "identifier": [{"system": HSA, "value": "SE2321000000-0001"}]})]
    for i in range(8):
        out.append(_entry(_urn(), {"resourceType": "Organization", "name": f"Exempels kommun {i + 1}",
                                   "active": True, "identifier": [{"system": HSA, "value": f"SE{2120000000 + i}-0001"}],
                                   "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                                         "code": "govt"}]}]}))
    for i in range(20):
        out.append(_entry(_urn(), {"resourceType": "Organization", "name": f"Vårdenhet {i + 1}", "active": True,
                                   "identifier": [{"system": HSA, "value": f"SE2321000000-1{i:03d}"}]}))
    for i in range(150):
        out.append(_entry(_urn(), {"resourceType": "Practitioner", "active": True,
                                   "identifier": [{"system": HSA, "value": f"SE2321000000-P{i:04d}"}],
                                   "name": [{"family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}]}))
    return out


def patient_group(rng: random.Random, orgs: list[str], practitioners: list[str]) -> list[dict]:
    """One patient and their plan, team, encounters and 10-20 Tasks, cross-referenced by urn:uuid."""
    pat, plan, team = _urn(), _urn(), _urn()
    encs = [_urn(), _urn()]
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 70))
    start = date(2024, 1, 1) + timedelta(days=rng.randrange(600))
    unit, kommun = rng.choice(orgs[9:]), rng.choice(orgs[1:9])
    doctor, nurse = rng.sample(practitioners, 2)
    tasks = [_urn() for _ in range(rng.randint(10, 20))]
    out = [_entry(pat, {
        "resourceType": "Patient", "active": True, "gender": rng.choice(["female", "male"]),
        "identifier": [{"system": PNR, "value": personnummer(born, rng.randrange(1000))}],
        "name": [{"family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}],
        "birthDate": born.isoformat(), "managingOrganization": {"reference": unit}})]
    out.append(_entry(team, {
        "resourceType": "CareTeam", "status": "active", "name": "SIP-team", "subject": {"reference": pat},
        "participant": [{"member": {"reference": doctor}, "onBehalfOf": {"reference": unit}},
                        {"member": {"reference": nurse}, "onBehalfOf": {"reference": kommun}}],
        "managingOrganization": [{"reference": unit}]}))
    for n, enc in enumerate(encs):
        day = start + timedelta(days=7 * n)
        out.append(_entry(enc, {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": pat}, "serviceProvider": {"reference": unit},
            "participant": [{"individual": {"reference": doctor}}],
            "period": {"start": f"{day}T09:00:00+01:00", "end": f"{day}T10:00:00+01:00"}}))
    out.append(_entry(plan, {
        "resourceType": "CarePlan", "status": "active", "intent": "plan", "category": [{"coding": [SIP]}],
        "title": "Samordnad individuell plan", "subject": {"reference": pat},
        "period": {"start": start.isoformat(), "end": (start + timedelta(days=180)).isoformat()},
        "author": {"reference": doctor}, "careTeam": [{"reference": team}],
        "activity": [{"reference": {"reference": t}} for t in tasks[:5]]}))
    for t in tasks:
        code, text = rng.choice(_TASK_CODES)
        authored = start + timedelta(days=rng.randrange(60))
        status = rng.choices(TASK_STATUSES, _STATUS_WEIGHTS)[0]
        task = {
            "resourceType": "Task", "status": status, "intent": "order", "priority": "routine",
            "code": {"coding": [{"system": "https://samverkan.example.se/CodeSystem/task-code", "code": code}],
                     "text": text},
            "focus": {"reference": plan}, "for": {"reference": pat}, "encounter": {"reference": rng.choice(encs)},
            "authoredOn": f"{authored}T08:30:00+01:00", "lastModified": f"{authored}T08:30:00+01:00",
            "requester": {"reference": doctor}, "owner": {"reference": kommun},
            "restriction": {"period": {"end": f"{authored + timedelta(days=rng.choice([3, 7, 14]))}"
                                              "T23:59:59+01:00"}}}
        out.append(_entry(t, task))
    return out


def _bundle(entries: list[dict]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


async def _post(conn: Connection, host: str, body: bytes) -> list[str]:
    """POST a transaction; return the created "Type/id" of each entry, in order."""
    req = encode_request("POST", "/fhir", host, {"Content-Type": "application/fhir+json"}, body)
    status, _, resp = await conn.request(req)
    if status != 200:
        raise RuntimeError(f"transaction failed: HTTP {status}: {resp[:1000].decode('utf-8', 'replace')}")
    return ["/".join(e["response"]["location"].split("/")[:2]) for e in orjson.loads(resp)["entry"]]


async def load(host: str, port: int, target: int, seed: int, batch: int = 500) -> dict:
    """Load at least ``target`` resources; return the manifest of ids (and load timing)."""
    rng = random.Random(seed)
    addr = f"{host}:{port}"
    conn = Connection(host, port)
    t0 = time.perf_counter()
    shared = await _post(conn, addr, _bundle(shared_entries(rng)))
    orgs = shared[:29]
    practitioners = shared[29:]
    manifest: dict = {"seed": seed, "patients": {}, "careplans": [], "other": shared}
    loaded = len(shared)
    # Two connections in flight: the client builds the next bundle while the server writes one.
    conns = [conn, Connection(host, port)]
    queue: asyncio.Queue = asyncio.Queue(maxsize=2)
    tty, next_report = sys.stdout.isatty(), 0.0

    async def sender(c: Connection) -> None:
        nonlocal loaded, next_report
        while (item := await queue.get()) is not None:
            entries, groups = item
            ids = await _post(c, addr, _bundle(entries))
            pos = 0
            for size in groups:  # map the response back onto each patient's group
                group = ids[pos:pos + size]
                pos += size
                pid = group[0].split("/")[1]
                manifest["patients"][pid] = [r.split("/")[1] for r in group if r.startswith("Task/")]
                manifest["careplans"] += [r.split("/")[1] for r in group if r.startswith("CarePlan/")]
                manifest["other"] += [r for r in group if r.split("/")[0] not in ("Patient", "Task", "CarePlan")]
            loaded += len(ids)
            elapsed = time.perf_counter() - t0
            if elapsed >= next_report or loaded >= target:
                next_report = elapsed + (1 if tty else 10)
                line = f"  loaded {loaded:>9,} / {target:,} resources  {loaded / elapsed:8.0f} res/s  {elapsed:6.0f} s"
                print("\r" + line if tty else line, end="" if tty else "\n", flush=True)

    senders = [asyncio.create_task(sender(c)) for c in conns]
    planned = loaded
    while planned < target:
        entries, groups = [], []
        while len(entries) < batch and planned + len(entries) < target:
            group = patient_group(rng, orgs, practitioners)
            entries += group
            groups.append(len(group))
        planned += len(entries)
        put = asyncio.ensure_future(queue.put((entries, groups)))
        await asyncio.wait([put, *senders], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():  # a sender failed while we waited: stop producing
            put.cancel()
            break
    failed = [s for s in senders if s.done() and s.exception()]
    if failed:
        for s in senders:
            s.cancel()
        raise failed[0].exception()
    for _ in senders:
        await queue.put(None)
    await asyncio.gather(*senders)
    if tty:
        print()
    for c in conns:
        c.close()
    seconds = time.perf_counter() - t0
    manifest["load"] = {"resources": loaded, "seconds": round(seconds, 1), "rps": round(loaded / seconds, 1)}
    return manifest


def manifest_path(db: Path) -> Path:
    return db.with_name(db.name + ".bench.json")


def save_manifest(db: Path, manifest: dict) -> None:
    manifest_path(db).write_text(json.dumps(manifest))


def read_manifest(db: Path) -> dict | None:
    path = manifest_path(db)
    return json.loads(path.read_text()) if path.exists() else None
