"""Shared fixtures: a fresh gateway (own SQLite file) per test, an httpx client on it, and
small builders/helpers for the resources a shared care plan is made of.

All test data is synthetic; personnummer are Skatteverket's published test numbers.
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from gateway.api.protocol import uvicorn_config
from gateway.app import create_app
from gateway.auth.keys import client_assertion, generate_key
from gateway.auth.directory import Directory, Entry
from gateway.auth.registry import ClientRegistry
from gateway.settings import Settings

BASE = "http://test"
FHIR = "/fhir"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
PATCH_JSON = {"Content-Type": "application/json-patch+json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

PNR_SYSTEM = "http://electronichealth.se/identifier/personnummer"
HSA_SYSTEM = "urn:oid:1.2.752.129.2.1.4.1"
TEST_PNR = "191212121212"  # Tolvan Tolvansson, Skatteverket's test personnummer
TEST_PNR_2 = "201212121212"
TEST_PNR_3 = "199001012385"


TEST_ORG = "SE2321000016-GWTEST"  # the organisation the default test client acts for


# -- app and client -------------------------------------------------------------------
def register_client(db_path: str, organization: str = TEST_ORG, scopes: str = "system/*.cruds",
                    admin: bool = False, alg: str = "ES384", operator: bool = False, kommunkod: str = "",
                    primary_care: bool = False) -> tuple[str, bytes, str]:
    """A registered client with a fresh key pair: (client id, private key PEM, kid); with
    ``kommunkod`` / ``primary_care`` the operator vouches for the organisation in the directory
    (as ``gateway clients add --kommunkod / --primary-care`` does)."""
    pem, jwk = generate_key(alg)
    if kommunkod or primary_care:
        directory = Directory(db_path)
        try:
            directory.register([Entry(organization, "test organisation", kommunkod, primary_care, "test")])
        finally:
            directory.close()
    registry = ClientRegistry(db_path)
    try:
        client = registry.add("test client", organization, {"keys": [jwk]}, scopes, admin, operator)
    finally:
        registry.close()
    return client.client_id, pem, jwk["kid"]


async def get_token(client: httpx.AsyncClient, db_path: str, scope: str = "system/*.cruds", **register) -> str:
    """Register a client for ``register['organization']`` and get an access token over the API,
    as a real backend service would."""
    # On a thread: the in-process gateway may hold the store's write lock for a group commit that
    # only the event loop can finish, and a write made from the loop would wait for it forever.
    client_id, pem, kid = await asyncio.to_thread(register_client, db_path, **register)
    token_url = f"{client.base_url}{FHIR}/auth/token".replace("//fhir", "/fhir")
    form = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(client_id, pem, token_url, kid)}
    r = await client.post(f"{FHIR}/auth/token", data=form)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@asynccontextmanager
async def running_gateway(settings: Settings, authorised: bool = True,
                          notify_sender=None) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with its lifespan running, and a client talking to it in-process; unless
    ``authorised`` is False the client carries a token for TEST_ORG with system/*.cruds.

    ``raise_app_exceptions=False``: a server bug comes back as the 500 a real client would
    see, so tests can assert "never 500" instead of crashing on the exception.
    """
    if "test" not in settings.allowed_hosts.split(","):  # the in-process client's Host, BASE
        settings = replace(settings, allowed_hosts=",".join(filter(None, [settings.allowed_hosts, "test"])))
    app = create_app(settings, notify_sender=notify_sender)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, timeout=30) as client:
            if authorised and settings.security != "off":
                client.headers["Authorization"] = f"Bearer {await get_token(client, settings.db_path)}"
            client.app = app  # tests reach the engine through client.app.state.fhir
            yield client


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(db_path=str(tmp_path / "g.sqlite"))


@pytest.fixture
async def client(settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(settings) as c:
        yield c


@pytest.fixture
async def trusted_client(settings) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with GATEWAY_SECURITY=off: every caller trusted. For REST semantics that an
    authenticated client may not use (update-as-create with an id of its choosing)."""
    async with running_gateway(replace(settings, security="off")) as c:
        yield c


# -- resource builders ---------------------------------------------------------------
def pnr(value: str = TEST_PNR) -> dict:
    return {"system": PNR_SYSTEM, "value": value}


def patient(pnr_value: str = TEST_PNR, family: str = "Tolvansson", given: str = "Tolvan", **extra) -> dict:
    return {"resourceType": "Patient", "identifier": [pnr(pnr_value)],
            "name": [{"family": family, "given": [given]}], **extra}


def organization(name: str, hsa: str | None = None, **extra) -> dict:
    res = {"resourceType": "Organization", "name": name, **extra}
    if hsa:
        res["identifier"] = [{"system": HSA_SYSTEM, "value": hsa}]
    return res


def task(patient_ref: str | None = None, status: str = "requested", **extra) -> dict:
    res: dict[str, Any] = {"resourceType": "Task", "status": status, "intent": "order"}
    if patient_ref:
        res["for"] = {"reference": patient_ref}
    res.update(extra)
    return res


def careplan(patient_ref: str, status: str = "active", **extra) -> dict:
    return {"resourceType": "CarePlan", "status": status, "intent": "plan",
            "subject": {"reference": patient_ref}, **extra}


def careteam(patient_ref: str | None = None, members: list[str] = (), **extra) -> dict:
    res: dict[str, Any] = {"resourceType": "CareTeam", "status": "active"}
    if patient_ref:
        res["subject"] = {"reference": patient_ref}
    if members:
        res["participant"] = [{"member": {"reference": m}} for m in members]
    res.update(extra)
    return res


def coding(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


# -- request helpers -----------------------------------------------------------------
async def create(client: httpx.AsyncClient, resource: dict, **headers) -> dict:
    """POST a resource, assert 201, return the stored resource."""
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource, headers={**FHIR_JSON, **headers})
    assert r.status_code == 201, r.text
    return r.json()


async def put(client: httpx.AsyncClient, resource: dict, **headers) -> httpx.Response:
    return await client.put(f"{FHIR}/{resource['resourceType']}/{resource['id']}", json=resource,
                            headers={**FHIR_JSON, **headers})


async def search(client: httpx.AsyncClient, path: str, **headers) -> dict:
    """GET a search (path relative to the FHIR base, e.g. 'Task?status=draft'); assert 200."""
    r = await client.get(f"{FHIR}/{path}", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def ids(bundle: dict, mode: str | None = "match") -> set[str]:
    """ids of a Bundle's entries (of one search mode; None = all)."""
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if mode is None or e.get("search", {}).get("mode") == mode}


def typed_ids(bundle: dict, mode: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if mode is None or e.get("search", {}).get("mode") == mode}


def ordered_ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


async def search_ids(client: httpx.AsyncClient, path: str) -> set[str]:
    return ids(await search(client, path))


def link(bundle: dict, *relations: str) -> str | None:
    for item in bundle.get("link", []):
        if item["relation"] in relations:
            return item["url"]
    return None


def local(url: str) -> str:
    """An absolute link from the server → path+query, for the in-process client."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def assert_outcome(r: httpx.Response, status: int, *must_mention: str) -> dict:
    """The response is an OperationOutcome with ``status`` whose diagnostics mention every
    given word (case-insensitive): the message tells the client what to fix."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(i["severity"] in ("error", "fatal") for i in body["issue"]), body
    text = " ".join(i.get("diagnostics", "") for i in body["issue"]).lower()
    for word in must_mention:
        assert word.lower() in text, f"diagnostics should mention {word!r}: {text!r}"
    return body


async def total(client: httpx.AsyncClient, path: str) -> int:
    """Number of matches of a search, via _summary=count."""
    sep = "&" if "?" in path else "?"
    body = await search(client, f"{path}{sep}_summary=count")
    return body["total"]


async def history(client: httpx.AsyncClient, path: str) -> dict:
    r = await client.get(f"{FHIR}/{path}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "history"
    return body


async def tick() -> None:
    """Let the millisecond clock advance, so consecutive writes get distinct lastUpdated."""
    await asyncio.sleep(0.003)


# -- real servers ---------------------------------------------------------------------------
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_redis() -> str:
    """The test Redis (database 15 of 127.0.0.1:6379 unless TEST_REDIS_URL says otherwise). Locally
    a missing server skips the test; under CI=true it fails it: CI has one."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but Redis at {REDIS_URL} is not reachable: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL} ({type(exc).__name__}); set TEST_REDIS_URL or start one")
    return REDIS_URL


def drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


# -- a real HTTP server -----------------------------------------------------------------------
@contextmanager
def serve_in_thread(settings: Settings) -> Iterator[tuple[str, Any]]:
    """The app behind uvicorn_config (what `gateway serve` runs: uvicorn with gateway.api.protocol)
    on a free port, in a thread with its own event loop: (base URL, uvicorn.Server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings, loop="asyncio", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), "uvicorn did not start", 30)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def token_over_http(base: str, db_path: str) -> str:
    """get_token against a server on a socket, from synchronous code."""
    async def fetch() -> str:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            return await get_token(client, db_path)
    return asyncio.run(fetch())


def wait_for(predicate, message: str, timeout: float = 60.0) -> None:
    """Poll a condition until it holds; fail after ``timeout`` seconds (generous: CI machines are busy)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)
