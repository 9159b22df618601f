"""Several gateway processes may share one SQLite file (README): heavy transactions through one
process must not freeze another's event loop, and nothing answers 500 — a write that cannot
have the file's lock in time answers 503 with Retry-After.

Two real `gateway serve` processes on one file, driven over HTTP from threads."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid

import httpx
import pytest

from test_notifications_workers import free_port, start, wait_until

LOAD_SECONDS = 6.0
BUSY_TIMEOUT = 5.0  # GATEWAY_BUSY_TIMEOUT of both processes (the default)
A_CLIENTS = 6  # enough that A always has a transaction queued: its batch would never end by itself


def _transaction(n: int) -> dict:
    """A transaction of ``n`` Patients, each with a Task about it: heavy enough to hold the
    file's write lock for a good while."""
    entries = []
    for i in range(n):
        ref = f"urn:uuid:{uuid.uuid4()}"
        entries.append({"fullUrl": ref, "resource": {"resourceType": "Patient", "name": [{"family": f"Last{i}"}]},
                        "request": {"method": "POST", "url": "Patient"}})
        entries.append({"resource": {"resourceType": "Task", "status": "requested", "intent": "order",
                                     "for": {"reference": ref}}, "request": {"method": "POST", "url": "Task"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture
def two_processes(tmp_path):
    env = {**os.environ, "GATEWAY_DB": str(tmp_path / "shared.sqlite"), "GATEWAY_SECURITY": "off",
           "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_BUSY_TIMEOUT": str(BUSY_TIMEOUT)}
    log = open(tmp_path / "processes.log", "w")
    bases, procs = [], []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(start(["serve"], {**env, "GATEWAY_PORT": str(port)}, log))
            base = f"http://127.0.0.1:{port}/fhir"

            def up(base=base) -> bool:
                try:
                    return httpx.get(f"{base}/metadata", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False
            wait_until(up, 30, "gateway serve did not start")
            bases.append(base)
        yield bases
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.answers: list[tuple[str, int, float, float, httpx.Response]] = []  # (who, status, sent, answered, r)

    def run(self, who: str, stop: threading.Event, request) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                started = time.monotonic()
                r = request(http)
                with self.lock:
                    self.answers.append((who, r.status_code, started, time.monotonic(), r))

    def of(self, who: str) -> list[tuple[int, float, float, httpx.Response]]:
        return [(s, t0, t1, r) for w, s, t0, t1, r in self.answers if w == who]


def test_heavy_transactions_in_one_process_leave_the_other_responsive_and_nothing_answers_500(two_processes):
    a, b = two_processes
    bundle = _transaction(150)
    record, stop = Recorder(), threading.Event()
    workers = [threading.Thread(target=record.run, args=("A transaction", stop, lambda h: h.post(a, json=bundle)))
               for _ in range(A_CLIENTS)]
    workers.append(threading.Thread(target=record.run, args=("B write", stop, lambda h: h.post(
        f"{b}/Patient", json={"resourceType": "Patient", "name": [{"family": "Bprocess"}]}))))
    workers.append(threading.Thread(target=record.run, args=("B probe", stop, lambda h: h.get(f"{b}/metadata"))))
    began = time.monotonic()
    for w in workers:
        w.start()
    try:  # load for LOAD_SECONDS, and at least until A committed transactions and B tried writes meanwhile
        wait_until(lambda: time.monotonic() - began >= LOAD_SECONDS and len(record.of("B write")) >= 3
                   and sum(a[0] == 200 for a in record.of("A transaction")) >= 3, 90, "the load did not run")
    finally:
        stop.set()
        for w in workers:
            w.join(60)

    if os.environ.get("SHOW_FIGURES"):
        for who in ("A transaction", "B write", "B probe"):
            got = record.of(who)
            times = sorted(t1 - t0 for _, t0, t1, _ in got)
            print(who, len(got), {st: sum(a[0] == st for a in got) for st in {a[0] for a in got}},
                  "p50 %.3f max %.3f" % (times[len(times) // 2], times[-1]))
    for who, status, _, _, r in record.answers:
        assert status in (200, 201, 503), f"{who}: {status} {r.text[:300]}"
        if status == 503:  # the lock was not had in time: a clean, retryable refusal
            assert r.json()["resourceType"] == "OperationOutcome" and r.headers["retry-after"].isdigit()
    assert sum(a[0] == 200 for a in record.of("A transaction")) >= 3
    assert any(a[0] == 201 for a in record.of("B write")), "B never had the lock while A wrote"
    probes = record.of("B probe")
    assert probes and all(a[0] == 200 for a in probes)
    # B never went silent while its writes waited for the file lock that A held. Before the fix
    # B's event loop waited inside SQLite: its probes stopped for as long as its longest write
    # waited (0.7-4.9 s). Now they go on: the longest stretch without an answer is far shorter
    # than B's longest write — half of it, and a second, leave room for a busy machine.
    answered = sorted(p1 for _, _, p1, _ in probes)
    silence = max(b - a for a, b in zip(answered, answered[1:]))
    longest_write = max(w1 - w0 for _, w0, w1, _ in record.of("B write"))
    assert silence < max(1.0, longest_write / 2), (silence, longest_write)
