"""The edge of the server: which Host names it answers to, compressed bodies, and bodies that do
not arrive (in-process; the same over real sockets is in test_slow_clients.py)."""
from __future__ import annotations

import asyncio
import gzip
import zlib
from dataclasses import replace

import pytest

from conftest import FHIR, FHIR_JSON, assert_outcome, create, patient, running_gateway, total
from gateway.api.edge import EdgeGuard, allowed_hosts
from gateway.settings import Settings


# -- Host --------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example<script>", "test@evil", "", "a b", "x" * 300,
                                  "test:99999999", "[::1"])
async def test_a_host_the_server_is_not_configured_for_is_400_and_never_echoed(client, host):
    r = await client.post(f"{FHIR}/Patient", json=patient(), headers={**FHIR_JSON, "Host": host})
    body = assert_outcome(r, 400, "Host", "GATEWAY_ALLOWED_HOSTS")
    assert "location" not in r.headers and (not host or host not in str(body))
    assert await total(client, "Patient") == 0


async def test_the_host_check_covers_paths_outside_the_fhir_mount(client):
    assert_outcome(await client.get("/nothing-here", headers={"Host": "evil.example"}), 400, "Host")


async def test_location_names_the_configured_host_of_the_request(trusted_client):
    client = trusted_client  # a token's audience is the base it was issued for: Host test, no port
    r = await client.post(f"{FHIR}/Patient", json=patient(), headers={**FHIR_JSON, "Host": "test:8080"})
    assert r.status_code == 201 and r.headers["location"].startswith("http://test:8080/fhir/Patient/")


@pytest.mark.parametrize("host, allowed", [
    ("localhost", True), ("127.0.0.1:8080", True), ("[::1]:8080", True), ("LOCALHOST.", True),
    ("fhir.region.se", True), ("a.sjunet.org", True), ("sjunet.org", False), ("gw.example.se", True),
    ("evil.example", False), ("localhost.evil.example", False), ("127.0.0.1.evil", False),
])
def test_allowed_hosts_are_loopback_the_serve_host_the_base_url_host_and_the_configured_ones(host, allowed):
    settings = Settings(base_url="https://gw.example.se/fhir", allowed_hosts="fhir.region.se, *.sjunet.org")
    guard = EdgeGuard(None, settings)
    assert guard.host_allowed(host) is allowed


def test_a_star_allows_any_well_formed_host_but_never_garbage():
    guard = EdgeGuard(None, Settings(allowed_hosts="*"))
    assert guard.host_allowed("anything.example:443")
    assert not guard.host_allowed("evil<script>") and not guard.host_allowed("a/b")


def test_listening_on_every_interface_does_not_allow_every_host():
    names, suffixes, any_host = allowed_hosts(Settings(host="0.0.0.0"))
    assert not any_host and "0.0.0.0" not in names and not suffixes


# -- Content-Encoding -----------------------------------------------------------------------------
@pytest.mark.parametrize("coding, compress", [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda b: (lambda c: c.compress(b) + c.flush())(zlib.compressobj(wbits=-15))),
])
async def test_a_gzip_or_deflate_body_is_decompressed(client, coding, compress):
    import json
    body = compress(json.dumps(patient()).encode())
    r = await client.post(f"{FHIR}/Patient", content=body, headers={**FHIR_JSON, "Content-Encoding": coding})
    assert r.status_code == 201, r.text
    assert r.json()["name"][0]["family"] == "Tolvansson"


async def test_a_zip_bomb_is_413_counting_the_decompressed_size_against_the_body_limit(tmp_path):
    bomb = gzip.compress(b'{"resourceType":"Patient","x":"' + b"a" * (64 * 1024 * 1024) + b'"}', 9)
    settings = Settings(db_path=str(tmp_path / "g.sqlite"), max_body_bytes=1024 * 1024)
    assert len(bomb) < settings.max_body_bytes
    async with running_gateway(settings) as client:
        r = await client.post(f"{FHIR}/Patient", content=bomb, headers={**FHIR_JSON, "Content-Encoding": "gzip"})
        assert_outcome(r, 413, "decompresses", "GATEWAY_MAX_BODY_BYTES")


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "unknown"])
async def test_a_content_encoding_we_cannot_decode_is_415_naming_what_to_send(client, coding):
    r = await client.post(f"{FHIR}/Patient", content=b"{}", headers={**FHIR_JSON, "Content-Encoding": coding})
    assert_outcome(r, 415, "Content-Encoding", "gzip")


async def test_a_body_that_is_not_what_its_content_encoding_says_is_400(client):
    for body in (b'{"resourceType":"Patient"}', gzip.compress(b"{}")[:-4]):
        r = await client.post(f"{FHIR}/Patient", content=body, headers={**FHIR_JSON, "Content-Encoding": "gzip"})
        assert_outcome(r, 400, "gzip")
    assert await total(client, "Patient") == 0


# -- body deadline ----------------------------------------------------------------------------------
async def test_a_body_that_stops_arriving_is_408_within_the_body_timeout(settings):
    never = asyncio.Event()  # the client sends part of the body, then nothing

    async def stalled_body():
        yield b'{"resourceType":"Patient",'
        await never.wait()
        yield b"}"

    async with running_gateway(replace(settings, body_timeout=0.5)) as client:
        r = await asyncio.wait_for(client.post(f"{FHIR}/Patient", content=stalled_body(), headers=FHIR_JSON), 30)
        assert_outcome(r, 408, "GATEWAY_BODY_TIMEOUT")
        assert r.headers["connection"] == "close"
        assert (await create(client, patient()))["id"]  # and the server goes on serving
        assert await total(client, "Patient") == 1
    never.set()


async def test_a_body_that_arrives_in_time_is_not_cut_short(settings):
    async def chunked_body():
        yield b'{"resourceType":"Patient",'
        await asyncio.sleep(0)  # hand the loop over between chunks, as a network would
        yield b'"active":true}'

    async with running_gateway(replace(settings, body_timeout=30)) as client:
        r = await client.post(f"{FHIR}/Patient", content=chunked_body(), headers=FHIR_JSON)
        assert r.status_code == 201, r.text
