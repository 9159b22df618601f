"""The four measured workloads, as request generators for ``loadgen.run``.

Each builds complete request bytes per call (cheap string work, no JSON parsing on the read
and search paths) and declares which statuses count as success; anything else is an error.
"""
from __future__ import annotations

import random

import orjson

from loadgen import encode_request

JSON = {"Content-Type": "application/fhir+json"}


class BareRead:
    """The yardstick: GET of the bare app's one fixed body."""

    expected = frozenset({200})

    def __init__(self, host: str):
        self._req = encode_request("GET", "/fhir/Patient/bare", host)

    def request(self, conn: int) -> bytes:
        return self._req


class Read:
    """GET /fhir/{Type}/{id} of a random resource of the loaded store (mostly Tasks, like the store)."""

    expected = frozenset({200})

    def __init__(self, host: str, keys: list[str], seed: int):
        self._keys = keys  # "Type/id"
        self._rng = random.Random(seed)
        self._tail = f" HTTP/1.1\r\nHost: {host}\r\nAccept: application/fhir+json\r\n\r\n".encode()

    def request(self, conn: int) -> bytes:
        return b"GET /fhir/" + self._rng.choice(self._keys).encode() + self._tail


class CreateCarePlan:
    """POST /fhir/CarePlan: a SIP plan for a random patient, pointing at three of their Tasks."""

    expected = frozenset({201})

    def __init__(self, host: str, patients: dict[str, list[str]], practitioners: list[str], seed: int):
        self._host = host
        self._patients = list(patients.items())
        self._practitioners = practitioners
        self._rng = random.Random(seed)
        self._n = 0

    def request(self, conn: int) -> bytes:
        rng = self._rng
        pid, tasks = rng.choice(self._patients)
        self._n += 1
        day = 1 + self._n % 28
        body = orjson.dumps({
            "resourceType": "CarePlan", "status": "active", "intent": "plan",
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "736353004",
                                      "display": "Samordnad individuell plan"}]}],
            "title": f"SIP efter utskrivning {self._n}",
            "description": "Samordnad individuell plan mellan region och kommun efter utskrivning.",
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": f"2025-03-{day:02d}", "end": f"2025-09-{day:02d}"},
            "author": {"reference": rng.choice(self._practitioners)},
            "activity": [{"reference": {"reference": f"Task/{t}"}} for t in rng.sample(tasks, 3)],
        })
        return encode_request("POST", "/fhir/CarePlan", self._host, JSON, body)


class UpdateTask:
    """PUT /fhir/Task/{id} with If-Match; each connection owns distinct Tasks.

    A connection cycles through its own Tasks and takes each one's next version from the ETag
    of its previous response, so a correct server never answers 412 (counted as an error).
    After an error the Task is re-read once (GET) to recover its version and body.
    """

    expected = frozenset({200})
    _CYCLE = {"requested": "accepted", "accepted": "in-progress", "in-progress": "requested",
              "completed": "completed"}

    def __init__(self, host: str, owned: list[list[dict]]):
        # owned[conn] = [{"id", "version", "resource"}, ...] fetched just before the run
        self._host = host
        self._owned = owned
        self._turn = [0] * len(owned)
        self._current: list[dict | None] = [None] * len(owned)
        self._n = 0

    def request(self, conn: int) -> bytes:
        tasks = self._owned[conn]
        task = tasks[self._turn[conn] % len(tasks)]
        self._turn[conn] += 1
        self._current[conn] = task
        if task.get("stale"):
            return encode_request("GET", f"/fhir/Task/{task['id']}", self._host)
        res = task["resource"]
        res["status"] = self._CYCLE[res["status"]]
        self._n += 1
        res["lastModified"] = f"2025-04-{1 + self._n % 28:02d}T{self._n % 24:02d}:00:00+02:00"
        headers = {**JSON, "If-Match": f'W/"{task["version"]}"'}
        return encode_request("PUT", f"/fhir/Task/{task['id']}", self._host, headers, orjson.dumps(res))

    def response(self, conn: int, status: int, headers: dict, body: bytes) -> None:
        task = self._current[conn]
        if status == 200:
            task["version"] = int(headers[b"etag"].decode().strip('W/"'))
            if task.pop("stale", False):
                task["resource"] = without_meta(orjson.loads(body))
        else:
            task["stale"] = True


class SearchTasks:
    """GET /fhir/Task?patient=Patient/{id}&status={s}: a random loaded patient and status."""

    expected = frozenset({200})
    STATUSES = ("requested", "accepted", "in-progress", "completed")

    def __init__(self, host: str, patients: list[str], seed: int):
        self._patients = patients
        self._rng = random.Random(seed)
        self._tail = f" HTTP/1.1\r\nHost: {host}\r\nAccept: application/fhir+json\r\n\r\n".encode()

    def request(self, conn: int) -> bytes:
        pid = self._rng.choice(self._patients)
        status = self._rng.choice(self.STATUSES)
        return f"GET /fhir/Task?patient=Patient/{pid}&status={status}".encode() + self._tail


def without_meta(resource: dict) -> dict:
    resource.pop("meta", None)
    return resource
