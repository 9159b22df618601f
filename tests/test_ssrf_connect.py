"""SSRF by default is closed at connect time too: every connection the notification sender makes
goes to an address the endpoint rule allows for the host, checked on the lookup the connection
uses (so DNS rebinding does not pass), for literal addresses as for names, and a pooled
connection is not reused for another host. Real sockets on 127.0.0.1 play the internal service
an attacker aims at; a stub resolver plays their DNS server."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from conftest import FHIR, running_gateway
from endpoint_stub import Endpoint, StubResolver
from test_notifications import subscription

from gateway.events.delivery import ADDRESS_REFUSED
from gateway.events.endpoints import EndpointPolicy, EndpointRefused
from gateway.events.sender import CheckedResolver, HttpSender

PUBLIC = "93.184.216.34"


# -- the resolver, with a stand-in DNS server -------------------------------------------------------
async def test_ssrf_the_resolver_keeps_only_allowed_addresses():
    inner = StubResolver({"mixed.example": [["10.0.0.1", PUBLIC, "::ffff:127.0.0.1", "fe80::1"]]})
    answers = await CheckedResolver(EndpointPolicy(), inner).resolve("mixed.example", 443)
    assert [a["host"] for a in answers] == [PUBLIC]


async def test_ssrf_rebinding_a_private_second_answer_is_refused():
    """Public when first looked up (as when the Subscription was written and handshaken), the
    service's loopback address on the next lookup: that lookup yields nothing to connect to."""
    inner = StubResolver({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    resolver = CheckedResolver(EndpointPolicy(), inner)
    assert [a["host"] for a in await resolver.resolve("rebind.example", 443)] == [PUBLIC]
    with pytest.raises(EndpointRefused) as refused:
        await resolver.resolve("rebind.example", 443)
    assert refused.value.refused == [("127.0.0.1", "loopback")]


async def test_ssrf_the_resolver_applies_the_loopback_setting_and_the_allow_list():
    inner = StubResolver({"dev.example": [["127.0.0.1"]], "intern.region.local": [["10.1.2.3"]],
                          "meta.region.local": [["169.254.169.254"]]})
    assert await CheckedResolver(EndpointPolicy(http_loopback=True), inner).resolve("dev.example")
    with pytest.raises(EndpointRefused):
        await CheckedResolver(EndpointPolicy(http_loopback=True), inner).resolve("intern.region.local")
    listed = CheckedResolver(EndpointPolicy("intern.region.local,meta.region.local"), inner)
    assert [a["host"] for a in await listed.resolve("intern.region.local")] == ["10.1.2.3"]
    with pytest.raises(EndpointRefused):  # link-local: never, even for a listed host
        await listed.resolve("meta.region.local")
    with pytest.raises(EndpointRefused):  # not on the list: refused at connect time too
        await listed.resolve("dev.example")


# -- the real sender against a real socket ----------------------------------------------------------
async def post(sender: HttpSender, url: str) -> int:
    return await sender.post(url, b"{}", {"Content-Type": "application/fhir+json"}, 5)


async def test_ssrf_a_name_resolving_to_loopback_is_never_connected_to():
    async with Endpoint() as service:
        stub = StubResolver({"rebind.example": [["127.0.0.1"]]})
        sender = HttpSender(EndpointPolicy(), stub)
        try:
            with pytest.raises(EndpointRefused):
                await post(sender, service.url("rebind.example"))
        finally:
            await sender.close()
        assert stub.lookups == ["rebind.example"] and service.connections == 0
        for policy in (EndpointPolicy(http_loopback=True), EndpointPolicy("rebind.example")):
            sender = HttpSender(policy, stub)  # the same path reaches it once the setting allows
            try:
                assert await post(sender, service.url("rebind.example")) == 200
            finally:
                await sender.close()
        assert service.requests == 2


@pytest.mark.parametrize("host", ["localhost", "0x7f.1"])
async def test_ssrf_the_system_resolver_s_loopback_answers_are_refused(host):
    async with Endpoint() as service:
        sender = HttpSender(EndpointPolicy())
        try:
            with pytest.raises(EndpointRefused):
                await post(sender, service.url(host))
        finally:
            await sender.close()
        assert service.connections == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "１２７.０.０.１", "2130706433", "127.0.0.1."])
async def test_ssrf_literal_addresses_are_checked_before_connecting(host):
    """aiohttp connects to a host written as an address without asking the resolver."""
    async with Endpoint() as service:
        sender = HttpSender(EndpointPolicy())
        try:
            with pytest.raises(EndpointRefused):
                await post(sender, service.url(host))
        finally:
            await sender.close()
        assert service.connections == 0


async def test_ssrf_a_pooled_connection_is_not_reused_for_another_host():
    """``open.example`` may reach the internal address; ``other.example`` resolves to the same
    address and may not: the kept-alive connection of the first is not the second's."""
    async with Endpoint() as service:
        stub = StubResolver({"open.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
        sender = HttpSender(EndpointPolicy("open.example"), stub)
        try:
            assert await post(sender, service.url("open.example")) == 200
            with pytest.raises(EndpointRefused):
                await post(sender, service.url("other.example"))
            assert await post(sender, service.url("open.example")) == 200
        finally:
            await sender.close()
        assert (service.connections, service.requests) == (1, 2)  # keep-alive kept for the allowed host


# -- end to end: a Subscription whose host resolves to the service ----------------------------------
async def test_ssrf_a_subscription_whose_host_resolves_inside_goes_to_error_without_a_connection(settings, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.events")
    async with Endpoint() as service:
        sender = HttpSender(EndpointPolicy(), StubResolver({"rebind.example": [["127.0.0.1"]]}))
        async with running_gateway(replace(settings, notify_tick=0.05), notify_sender=sender) as http:
            r = await http.post(f"{FHIR}/Subscription",
                                json=subscription(endpoint=service.url("rebind.example", scheme="https")))
            assert r.status_code == 201, r.text  # a name: nothing to judge until it is resolved
            sid = r.json()["id"]
            body = await wait_status(http, sid)
        assert body["status"] == "error"
        assert body["error"] == f"handshake failed: {ADDRESS_REFUSED}"
        assert "127.0.0.1" not in body["error"] and "loopback" not in body["error"]
        assert service.connections == 0
        [record] = [r for r in caplog.records if sid in r.getMessage()]
        assert record.levelno == logging.WARNING
        assert "rebind.example" in record.getMessage() and "127.0.0.1 (loopback)" in record.getMessage()


async def wait_status(http, sid: str, timeout: float = 15.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await http.get(f"{FHIR}/Subscription/{sid}")).json()
        if body["status"] in ("active", "error"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"status stayed {body['status']}"
        await asyncio.sleep(0.02)
