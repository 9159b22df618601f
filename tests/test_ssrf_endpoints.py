"""SSRF by default is closed: notifications go only to public addresses unless the operator opens
a host (gateway/events/endpoints.py). Here the rule itself, and its check when a Subscription is
written: an endpoint whose host is written as a non-public address (in any spelling) is refused
with a 422 OperationOutcome naming Subscription.channel.endpoint and saying what to fix.
The connect-time check (DNS rebinding) is in test_ssrf_connect.py."""
from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import FHIR, running_gateway
from receiver import Receiver
from test_notifications import subscription

from gateway.events.endpoints import EndpointPolicy, non_public, odd_spelling

NON_PUBLIC = [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.254", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "shared (CGNAT)"), ("100.127.255.254", "shared (CGNAT)"),
    ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"), ("fec0::1", "site-local"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"), ("ff0e::1", "multicast"),
    ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"), ("192.0.0.9", "reserved"),
    ("198.18.0.1", "benchmarking"), ("198.19.255.1", "benchmarking"), ("192.0.2.1", "documentation"),
    ("2001:db8::1", "documentation"), ("2001:2::1", "reserved"), ("100::1", "reserved"),
    # IPv6 forms that carry an IPv4 address are judged by it
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "link-local"),
    ("::127.0.0.1", "loopback"), ("::ffff:0:10.0.0.1", "private"), ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a00:1", "private"), ("2002:7f00:1::", "loopback"), ("2002:a9fe:a9fe::1", "link-local"),
    ("64:ff9b:1::1", "private"),
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2001:4860:4860::8888", "2606:4700::1111", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address, kind", NON_PUBLIC)
def test_ssrf_non_public_ranges_are_named(address, kind):
    assert non_public(address) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_ssrf_public_addresses_pass(address):
    assert non_public(address) is None


@pytest.mark.parametrize("host, means", [("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
                                         ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
                                         ("127.1", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"),
                                         ("167772161", "10.0.0.1"), ("1.2.3.4.5", "no address"),
                                         ("kommun.example.se", None), ("8.8.8.8", None), ("::1", None)])
def test_ssrf_odd_spellings_of_addresses_are_recognised(host, means):
    assert odd_spelling(host) == means


def test_ssrf_the_policy_default_loopback_setting_and_allow_list():
    default, loopback = EndpointPolicy(), EndpointPolicy(http_loopback=True)
    listed = EndpointPolicy("intern.region.local,*.sjunet.org,*.Kommun-Åre.se")
    assert default.refusal("x.se", "8.8.8.8") is None and default.refusal("x.se", "127.0.0.1") == "loopback"
    assert loopback.refusal("x.se", "127.0.0.1") is None and loopback.refusal("x.se", "::ffff:127.0.0.1") is None
    assert loopback.refusal("x.se", "10.0.0.1") == "private"  # loopback only
    assert listed.refusal("intern.region.local", "10.0.0.1") is None  # a listed host may be private
    assert listed.refusal("INTERN.region.local.", "192.168.1.1") is None
    assert listed.refusal("vard.sjunet.org", "10.0.0.1") is None
    assert listed.refusal("x.xn--kommun-re-c3a.se", "10.0.0.1") is None  # entries are matched as IDNA
    assert listed.refusal("sjunet.org", "8.8.8.8") == "not on the operator's list"
    assert listed.refusal("evil.se", "8.8.8.8") == "not on the operator's list"
    for never in ("169.254.169.254", "0.0.0.0", "::", "224.0.0.1", "fe80::1", "not-an-address"):
        assert listed.refusal("intern.region.local", never) is not None, never


# -- at write time -------------------------------------------------------------------------------
@pytest.fixture
async def gateway(settings):
    async with running_gateway(settings, notify_sender=Receiver()) as http:
        yield http


async def post(http, endpoint: str):
    return await http.post(f"{FHIR}/Subscription", json=subscription(endpoint=endpoint))


def assert_refused_endpoint(r, *mentions: str) -> None:
    assert r.status_code == 422, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    [issue] = outcome["issue"]
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    for m in mentions:
        assert m in issue["diagnostics"], issue["diagnostics"]


@pytest.mark.parametrize("endpoint, kind", [
    ("https://127.0.0.1/hook", "loopback"), ("https://127.0.0.1:8080/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"), ("https://172.16.0.1/hook", "private"),
    ("https://192.168.1.1/hook", "private"), ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://0.0.0.0/hook", "unspecified"), ("https://[::]/hook", "unspecified"), ("https://[::1]/hook", "loopback"),
    ("https://[fe80::1]/hook", "link-local"), ("https://[fe80::1%25eth0]/hook", "link-local"),
    ("https://[fd00::1]/hook", "unique-local"), ("https://100.64.0.1/hook", "shared (CGNAT)"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"), ("https://[::ffff:a00:1]/hook", "private"),
    ("https://[::127.0.0.1]/hook", "loopback"), ("https://[64:ff9b::7f00:1]/hook", "loopback"),
    ("https://[2002:7f00:1::]/hook", "loopback"), ("https://224.0.0.1/hook", "multicast"),
    ("https://198.18.0.1/hook", "benchmarking"), ("https://255.255.255.255/hook", "broadcast"),
    ("https://１２７.０.０.１/hook", "loopback"),  # full-width digits: aiohttp connects to 127.0.0.1
])
async def test_ssrf_an_endpoint_at_a_non_public_address_is_refused_when_written(gateway, endpoint, kind):
    r = await post(gateway, endpoint)
    assert_refused_endpoint(r, kind, "public")


@pytest.mark.parametrize("endpoint", ["https://2130706433/hook", "https://0x7f000001/hook", "https://0x7f.1/hook",
                                      "https://0177.0.0.1/hook", "https://127.1/hook", "https://127.0.0.1./hook",
                                      "https://134744072/hook",  # 8.8.8.8: public, but spelled so it is not
                                      "https://0ｘ7f.1/hook"])
async def test_ssrf_an_address_in_an_odd_spelling_is_refused_when_written(gateway, endpoint):
    assert_refused_endpoint(await post(gateway, endpoint), "unusual spelling", "a.b.c.d")


@pytest.mark.parametrize("endpoint", ["https://localhost/hook", "https://LOCALHOST./hook",
                                      "https://gateway.localhost:8443/hook"])
async def test_ssrf_localhost_is_refused_when_written(gateway, endpoint):
    assert_refused_endpoint(await post(gateway, endpoint), "own machine", "public host name")


@pytest.mark.parametrize("endpoint", ["https://93.184.216.34/hook", "https://[2606:4700::1111]/hook",
                                      "https://kommun.example.se/hook"])
async def test_ssrf_a_public_endpoint_is_accepted(gateway, endpoint):
    r = await post(gateway, endpoint)
    assert r.status_code == 201, r.text


async def test_ssrf_the_loopback_setting_opens_loopback_only(settings):
    async with running_gateway(replace(settings, notify_http_loopback=True), notify_sender=Receiver()) as http:
        for endpoint in ("http://127.0.0.1:9999/hook", "http://localhost:9999/hook", "http://[::1]:9999/hook",
                         "https://127.0.0.1/hook"):
            r = await post(http, endpoint)
            assert r.status_code == 201, (endpoint, r.text)
        for endpoint, kind in (("https://10.0.0.1/hook", "private"), ("https://169.254.169.254/", "link-local"),
                               ("https://192.168.0.10/hook", "private")):
            assert_refused_endpoint(await post(http, endpoint), kind)
        assert_refused_endpoint(await post(http, "http://10.0.0.1/hook"))


async def test_ssrf_the_allow_list_opens_named_hosts_and_only_those(settings):
    listed = replace(settings, notify_allowed_hosts="intern.region.local,10.20.30.40,*.sjunet.org")
    async with running_gateway(listed, notify_sender=Receiver()) as http:
        for endpoint in ("https://intern.region.local/hook", "https://10.20.30.40/hook",
                         "https://vard.sjunet.org/hook"):
            r = await post(http, endpoint)
            assert r.status_code == 201, (endpoint, r.text)
        for endpoint in ("https://10.20.30.41/hook", "https://127.0.0.1/hook", "https://kommun.example.se/hook"):
            assert_refused_endpoint(await post(http, endpoint), "hosts this gateway allows")


async def test_ssrf_a_listed_address_that_is_never_a_receiver_stays_refused(settings):
    listed = replace(settings, notify_allowed_hosts="169.254.169.254,0.0.0.0")
    async with running_gateway(listed, notify_sender=Receiver()) as http:
        assert_refused_endpoint(await post(http, "https://169.254.169.254/latest"), "link-local", "never")
        assert_refused_endpoint(await post(http, "https://0.0.0.0/hook"), "unspecified", "never")


async def test_ssrf_an_update_to_a_non_public_endpoint_is_refused(gateway):
    r = await post(gateway, "https://kommun.example.se/hook")
    assert r.status_code == 201, r.text
    changed = r.json()
    changed["channel"]["endpoint"] = "https://[::ffff:169.254.169.254]/latest"
    r = await gateway.put(f"{FHIR}/Subscription/{changed['id']}", json=changed)
    assert_refused_endpoint(r, "link-local")
