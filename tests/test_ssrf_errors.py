"""SSRF by default is closed in what a subscriber reads too: Subscription.error (and $status)
says only a category — it reads the same for a closed port, a silent one, an answer that is not
HTTP and an HTTP error, so a subscriber cannot map which ports of a host answer. The cause goes
to the operator's log (warning, naming the subscription and the endpoint's host).

The real network sender against real sockets on 127.0.0.1 (GATEWAY_NOTIFY_HTTP_LOOPBACK=on, as
in development, so that the loopback receivers may be reached at all)."""
from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import replace

from conftest import FHIR, running_gateway
from endpoint_stub import Endpoint
from test_notifications import BP, subscription
from test_ssrf_connect import wait_status

from gateway.events.delivery import NOT_ACCEPTED

CAUSES = {"closed": "ClientConnectorError", "silent": "no answer within 1 s", "error": "HTTP 500",
          "garbage": "ClientResponseError"}


async def test_ssrf_the_error_a_subscriber_reads_does_not_tell_ports_apart(settings, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.events")
    dev = replace(settings, notify_http_loopback=True, notify_tick=0.05)
    timeout = [{"url": BP + "backport-timeout", "valueUnsignedInt": 1}]
    async with AsyncExitStack() as stack:
        endpoints = {mode: await stack.enter_async_context(Endpoint(mode)) for mode in CAUSES}
        http = await stack.enter_async_context(running_gateway(dev))
        ids = {}
        for mode, endpoint in endpoints.items():
            r = await http.post(f"{FHIR}/Subscription",
                                json=subscription(endpoint=endpoint.url(), extension=timeout))
            assert r.status_code == 201, r.text
            ids[mode] = r.json()["id"]
        read = dict(zip(ids, await asyncio.gather(*(wait_status(http, sid) for sid in ids.values()))))
        status = (await http.get(f"{FHIR}/Subscription/$status")).json()
    assert {mode: body["status"] for mode, body in read.items()} == dict.fromkeys(CAUSES, "error")
    assert {body["error"] for body in read.values()} == {f"handshake failed: {NOT_ACCEPTED}"}
    reported = [p["valueCodeableConcept"]["text"] for e in status["entry"] for p in e["resource"]["parameter"]
                if p["name"] == "error"]
    assert reported == [f"handshake failed: {NOT_ACCEPTED}"] * len(CAUSES)
    for mode, sid in ids.items():  # the operator learns what happened, and where
        [record] = [r for r in caplog.records if sid in r.getMessage()]
        assert record.levelno == logging.WARNING
        assert f"127.0.0.1:{endpoints[mode].port}" in record.getMessage()
        assert CAUSES[mode] in record.getMessage(), (mode, record.getMessage())
