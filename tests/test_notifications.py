"""Topic-based subscriptions (Subscriptions R5 Backport IG, R4): handshake, filters, payloads,
ordering, retries, $status/$events, and the secrecy rule — an event reaches a subscriber only if
its organisation may see the focus resource at delivery time.

The receivers are a stand-in transport (tests/receiver.py), so a test can take an endpoint down
and bring it back; the gateway, its store and the delivery engine are the real ones."""
from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import uuid
from dataclasses import replace

import pytest
from conftest import FHIR, drop_redis_keys, require_redis, running_gateway, task
from receiver import Receiver
from test_access_redteam import KOMMUN, OTHER, REGION, SECRET, build_world

TOPIC = "https://samverkan.example.se/fhir/SubscriptionTopic/"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
HOOK = "https://kommun.example.se/hook"
HOOK_2 = "https://region.example.se/hook"


def subscription(topic: str = "task-created", endpoint: str = HOOK, content: str = "id-only", filters=(),
                 heartbeat: int | None = None, status: str = "requested", **channel_extra) -> dict:
    channel = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
               "_payload": {"extension": [{"url": BP + "backport-payload-content", "valueCode": content}]},
               **channel_extra}
    if heartbeat is not None:
        channel["extension"] = [{"url": BP + "backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
    sub = {"resourceType": "Subscription", "status": status, "reason": "Samverkan test",
           "criteria": TOPIC + topic, "channel": channel}
    if filters:
        sub["_criteria"] = {"extension": [{"url": BP + "backport-filter-criteria", "valueString": f}
                                          for f in filters]}
    return sub


@pytest.fixture(params=["local", "redis"])
def fast(request, settings):
    """Retries and scans in tens of milliseconds, so recovery fits in a test; every test runs on the
    embedded engine and on the Redis Streams engine (real Redis, keys of its own)."""
    fast = replace(settings, notify_tick=0.05, notify_retry_base=0.05, notify_retry_max=0.2, notify_http_loopback=True)
    if request.param == "local":
        return fast
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    fast = replace(fast, redis_url=require_redis(), redis_prefix=prefix, notify_claim_idle=0.5,
                   notify_lease_margin=0.5)
    request.addfinalizer(lambda: drop_redis_keys(prefix))
    return fast


@pytest.fixture
async def hub(fast):
    """The red-team world (REGION's data about two patients; KOMMUN, OTHER) with receivers."""
    receiver = Receiver()
    async with running_gateway(fast, authorised=False, notify_sender=receiver) as http:
        w = await build_world(http, fast.db_path)
        w.receiver = receiver
        w.engine = http.app.state.fhir.engine
        yield w


async def subscribe(w, who: str, sub: dict) -> dict:
    """Create and wait for the handshake's outcome; returns the Subscription as stored then."""
    r = await w.call(who, "POST", "Subscription", json=sub)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "requested"
    await wait_status(w, who, created["id"], ("active", "error"))
    return (await w.get(who, f"Subscription/{created['id']}")).json()


async def wait_status(w, who: str, sid: str, states: tuple[str, ...], timeout: float = 10.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await w.get(who, f"Subscription/{sid}")).json()
        if body["status"] in states:
            return body
        assert asyncio.get_running_loop().time() < deadline, f"status stayed {body['status']}"
        await asyncio.sleep(0.02)


async def stored(hub, sid: str, predicate, timeout: float = 20.0):
    """The subscription's delivery state once ``predicate`` holds for it: the gateway writes a
    delivery's result after the receiver has answered, so a test waits for the row itself."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate(row := await hub.engine.store.subscription(sid)):
        assert asyncio.get_running_loop().time() < deadline, f"the stored state stayed {row}"
        await asyncio.sleep(0.02)
    return row


async def new_task(w, **extra) -> dict:
    about = {"owner": w.ref(KOMMUN), "requester": w.ref(REGION), "description": SECRET}
    return await w.make(REGION, task(f"Patient/{w.ids['pid']}", **{**about, **extra}))


# -- handshake ---------------------------------------------------------------------------------
async def test_handshake_success_activates_the_subscription(hub, fast):
    assert type(hub.engine).__name__ == ("RedisEngine" if fast.redis_url else "LocalEngine")
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    assert sub["status"] == "active"
    [handshake] = hub.receiver.at(HOOK_2)
    status = handshake.status
    assert (status["type"], status["status"], status["events-since-subscription-start"]) == \
        ("handshake", "requested", "0")
    assert status["subscription"]["reference"].endswith(f"/Subscription/{sub['id']}")
    assert handshake.bundle["type"] == "history"
    assert handshake.headers["content-type"] == "application/fhir+json"


async def test_handshake_failure_puts_the_subscription_in_error(hub):
    hub.receiver.answer[HOOK_2] = "down"
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    assert sub["status"] == "error"
    assert "handshake failed" in sub["error"]


async def test_the_channel_headers_are_sent(hub):
    sub = subscription(endpoint=HOOK_2, header=["Authorization: Bearer kommun-secret-1"])
    await subscribe(hub, REGION, sub)
    assert hub.receiver.at(HOOK_2)[0].headers["authorization"] == "Bearer kommun-secret-1"


@pytest.mark.parametrize("change, mentions", [
    ({"criteria": TOPIC + "no-such-topic"}, "criteria"),
    ({"channel": {"type": "websocket", "endpoint": HOOK}}, "rest-hook"),
    ({"_criteria": {"extension": [{"url": BP + "backport-filter-criteria", "valueString": "Task?code:text=x"}]}},
     "cannot be filtered"),
    ({"_criteria": {"extension": [{"url": BP + "backport-filter-criteria", "valueString": "Task?authored-on=2024"}]}},
     "cannot be filtered"),
    ({"status": "error"}, "set by the server"),
])
async def test_a_subscription_the_server_cannot_serve_is_refused_with_what_to_fix(hub, change, mentions):
    r = await hub.call(REGION, "POST", "Subscription", json={**subscription(), **change})
    assert r.status_code == 422, r.text
    assert mentions in r.text


async def test_full_resource_needs_https_or_loopback(hub):
    r = await hub.call(REGION, "POST", "Subscription",
                       json=subscription(endpoint="http://kommun.example.se/hook", content="full-resource"))
    assert r.status_code == 422 and "https" in r.text
    for endpoint in ("http://127.0.0.1:9999/hook", "https://kommun.example.se/hook"):
        r = await hub.call(REGION, "POST", "Subscription", json=subscription(endpoint=endpoint, content="full-resource"))
        assert r.status_code == 201, r.text


# -- events and payloads -----------------------------------------------------------------------
async def test_id_only_names_the_focus_and_numbers_the_event(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    t = await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    [note] = hub.receiver.at(HOOK_2, "event-notification")
    status = note.status
    assert status["events-since-subscription-start"] == "1"
    assert status["topic"] == TOPIC + "task-created"
    [event] = status["notification-event"]
    assert event["focus"]["reference"].endswith(f"/Task/{t['id']}")
    focus_entries = note.bundle["entry"][1:]
    assert [e["fullUrl"].endswith(f"/Task/{t['id']}") for e in focus_entries] == [True]
    assert "resource" not in focus_entries[0]
    assert SECRET not in note.body.decode()
    assert sub["id"] in status["subscription"]["reference"]


async def test_full_resource_carries_the_resource(hub):
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2, content="full-resource"))
    t = await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    [note] = hub.receiver.at(HOOK_2, "event-notification")
    assert note.bundle["entry"][1]["resource"]["id"] == t["id"]
    assert note.bundle["entry"][1]["resource"]["description"] == SECRET


async def test_empty_carries_the_event_number_only(hub):
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2, content="empty"))
    await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    [note] = hub.receiver.at(HOOK_2, "event-notification")
    assert len(note.bundle["entry"]) == 1
    assert "focus" not in note.status["notification-event"][0]
    assert "topic" not in note.status


async def test_filters_pick_the_events_a_subscriber_asked_for(hub):
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2, filters=[f"Task?owner=Organization/{hub.org[OTHER]}"]))
    await new_task(hub)  # owned by KOMMUN: not for this subscription
    t = await new_task(hub, owner=hub.ref(OTHER))
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    [note] = hub.receiver.at(HOOK_2, "event-notification")
    assert note.status["notification-event"][0]["focus"]["reference"].endswith(t["id"])
    await hub.engine.idle()
    assert hub.receiver.numbers(HOOK_2) == [1]


async def test_a_status_change_is_an_event_and_an_unchanged_update_is_not(hub):
    await subscribe(hub, REGION, subscription("task-status-changed", endpoint=HOOK_2))
    t = await new_task(hub)
    same = copy.deepcopy(t)
    same["note"] = [{"text": "no status change"}]
    assert (await hub.update(REGION, same)).status_code == 200
    changed = (await hub.current("Task", t["id"])) | {"status": "accepted"}
    assert (await hub.update(REGION, changed)).status_code == 200
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    await hub.engine.idle()
    assert hub.receiver.numbers(HOOK_2) == [1]


# -- ordering and durability -------------------------------------------------------------------
async def test_events_arrive_once_each_in_number_order(hub):
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    for _ in range(30):
        await new_task(hub)
    await hub.receiver.wait(lambda: len(hub.receiver.numbers(HOOK_2)) >= 30)
    await hub.engine.idle()
    assert hub.receiver.numbers(HOOK_2) == list(range(1, 31))


async def test_a_failing_receiver_gets_everything_in_order_once_it_recovers(hub):
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    hub.receiver.answer[HOOK_2] = 503
    for _ in range(5):
        await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.attempts[HOOK_2] >= 4)  # the handshake + 3 failed attempts
    hub.receiver.answer[HOOK_2] = "down"
    await hub.receiver.wait(lambda: hub.receiver.attempts[HOOK_2] >= 6)
    hub.receiver.answer[HOOK_2] = 200
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1, 2, 3, 4, 5])
    sub_id = (await hub.get(REGION, "Subscription")).json()["entry"][0]["resource"]["id"]
    assert (await hub.get(REGION, f"Subscription/{sub_id}")).json()["status"] == "active"


async def test_a_receiver_down_past_the_retry_horizon_errors_and_resuming_delivers_the_backlog(fast):
    receiver = Receiver()
    settings = replace(fast, notify_retry_horizon=0.3)
    async with running_gateway(settings, authorised=False, notify_sender=receiver) as http:
        w = await build_world(http, settings.db_path)
        w.receiver = receiver
        sub = await subscribe(w, REGION, subscription(endpoint=HOOK_2))
        receiver.answer[HOOK_2] = "down"
        for _ in range(3):
            await new_task(w)
        errored = await wait_status(w, REGION, sub["id"], ("error",))
        assert "delivery failed" in errored["error"]
        await new_task(w)  # events go on being numbered while in error
        r = await w.get(REGION, f"Subscription/{sub['id']}/$events")
        assert [n["event-number"] for n in Receiver_status(r.json())] == ["1", "2", "3", "4"]
        receiver.answer[HOOK_2] = 200
        resumed = (await w.current("Subscription", sub["id"])) | {"status": "requested"}
        assert (await w.update(REGION, resumed)).status_code == 200
        await receiver.wait(lambda: receiver.numbers(HOOK_2) == [1, 2, 3, 4])
        assert (await wait_status(w, REGION, sub["id"], ("active",)))["status"] == "active"


def Receiver_status(bundle: dict) -> list[dict]:
    """notification-event parts of a Bundle fetched over the API."""
    params = bundle["entry"][0]["resource"]["parameter"]
    return [{q["name"]: next(v for k, v in q.items() if k.startswith("value")) for q in p["part"]}
            for p in params if p["name"] == "notification-event"]


async def test_event_numbers_survive_a_restart_and_undelivered_events_go_out_after_it(fast):
    receiver = Receiver()
    async with running_gateway(fast, authorised=False, notify_sender=receiver) as http:
        w = await build_world(http, fast.db_path)
        w.receiver = receiver
        sub = await subscribe(w, REGION, subscription(endpoint=HOOK_2))
        await new_task(w)
        await receiver.wait(lambda: receiver.numbers(HOOK_2) == [1])
        receiver.answer[HOOK_2] = "down"
        await new_task(w)
        await new_task(w)
        headers = w.headers
    receiver.answer[HOOK_2] = 200
    async with running_gateway(fast, authorised=False, notify_sender=receiver) as http:
        w.http = http
        w.headers = headers
        await receiver.wait(lambda: receiver.numbers(HOOK_2) == [1, 2, 3])
        await new_task(w)
        await receiver.wait(lambda: receiver.numbers(HOOK_2) == [1, 2, 3, 4])
        last = receiver.at(HOOK_2, "event-notification")[-1]
        assert last.status["events-since-subscription-start"] == "4"
        assert sub["id"] in last.status["subscription"]["reference"]


async def test_heartbeats_are_sent_after_silence(hub):
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2, heartbeat=1))
    await hub.receiver.wait(lambda: hub.receiver.at(HOOK_2, "heartbeat"), timeout=20)
    beat = hub.receiver.at(HOOK_2, "heartbeat")[0].status
    assert (beat["status"], beat["events-since-subscription-start"], beat["notification-event"]) == ("active", "0", [])


# -- operations --------------------------------------------------------------------------------
async def test_status_operation_reports_state_and_count(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    r = await hub.get(REGION, f"Subscription/{sub['id']}/$status")
    assert r.status_code == 200, r.text
    [entry] = r.json()["entry"]
    params = {p["name"]: p for p in entry["resource"]["parameter"]}
    assert params["type"]["valueCode"] == "query-status"
    assert params["status"]["valueCode"] == "active"
    assert params["events-since-subscription-start"]["valueString"] == "1"
    everything = (await hub.get(REGION, "Subscription/$status")).json()
    assert everything["total"] == 1


async def test_events_operation_replays_a_range(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    tasks = [await new_task(hub) for _ in range(4)]
    await hub.receiver.wait(lambda: len(hub.receiver.numbers(HOOK_2)) == 4)
    r = await hub.get(REGION, f"Subscription/{sub['id']}/$events?eventsSinceNumber=2&eventsUntilNumber=3"
                              "&content=full-resource")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert [e["event-number"] for e in Receiver_status(bundle)] == ["2", "3"]
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == [tasks[1]["id"], tasks[2]["id"]]
    assert bundle["entry"][0]["resource"]["parameter"][3]["valueCode"] == "query-event"
    bad = await hub.get(REGION, f"Subscription/{sub['id']}/$events?eventsSinceNumber=two")
    assert bad.status_code == 400 and "eventsSinceNumber" in bad.text


async def test_events_replayed_in_full_carry_at_most_one_response_s_bytes_and_the_numbers_say_where_to_go_on(fast):
    receiver = Receiver()
    settings = replace(fast, max_page_bytes=100 * 1024)
    async with running_gateway(settings, authorised=False, notify_sender=receiver) as http:
        w = await build_world(http, settings.db_path)
        w.receiver = receiver
        sub = await subscribe(w, REGION, subscription(endpoint=HOOK_2))
        for _ in range(4):
            await new_task(w, note=[{"text": "x" * 40 * 1024}])
        await receiver.wait(lambda: len(receiver.numbers(HOOK_2)) == 4)
        numbers = []
        while len(numbers) < 4:
            r = await w.get(REGION, f"Subscription/{sub['id']}/$events?content=full-resource"
                                    f"&eventsSinceNumber={len(numbers) + 1}")
            assert r.status_code == 200, r.text
            got = [int(e["event-number"]) for e in Receiver_status(r.json())]
            assert got and len(r.content) < 100 * 1024 + 8 * 1024
            numbers += got
        assert numbers == [1, 2, 3, 4]


async def test_another_organisation_cannot_see_or_query_a_subscription(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2, header=["Authorization: Bearer s3cr3t"]))
    for path in (f"Subscription/{sub['id']}", f"Subscription/{sub['id']}/$status",
                 f"Subscription/{sub['id']}/$events"):
        r = await hub.get(KOMMUN, path)
        assert r.status_code == 404, (path, r.text)
        assert "s3cr3t" not in r.text
    assert (await hub.get(KOMMUN, "Subscription/$status")).json()["total"] == 0


# -- secrecy -----------------------------------------------------------------------------------
async def test_routing_an_organisation_gets_events_only_about_what_it_may_see(hub):
    await subscribe(hub, KOMMUN, subscription(endpoint=HOOK))
    await new_task(hub)  # no CareTeam and Consent yet: KOMMUN may not see it
    await hub.share()
    t = await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK) != [])
    await hub.engine.idle()
    [note] = hub.receiver.at(HOOK, "event-notification")
    assert [e["focus"]["reference"].rsplit("/", 1)[1] for e in note.status["notification-event"]] == [t["id"]]
    # The change it could not see got no number: neither a gap nor the count tells of it.
    assert note.numbers == [1] and note.status["events-since-subscription-start"] == "1"
    sid = (await hub.get(KOMMUN, "Subscription")).json()["entry"][0]["resource"]["id"]
    r = await hub.get(KOMMUN, f"Subscription/{sid}/$events?eventsSinceNumber=1")
    assert [e["event-number"] for e in Receiver_status(r.json())] == ["1"]
    assert (await hub.engine.store.subscription(sid)).withheld == 1  # counted for the operator


async def test_routing_consent_withdrawn_stops_notifications(hub):
    await hub.share()
    await subscribe(hub, KOMMUN, subscription(endpoint=HOOK))
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK) == [1])
    withdrawn = (await hub.current("Consent", hub.ids["consent"])) | {"status": "inactive"}
    assert (await hub.update(REGION, withdrawn)).status_code == 200
    await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1, 2])
    await hub.engine.idle()
    assert hub.receiver.numbers(HOOK) == [1]
    status = (await hub.get(KOMMUN, "Subscription/$status")).json()["entry"][0]["resource"]["parameter"]
    assert {p["name"]: p.get("valueString") for p in status}["events-since-subscription-start"] == "1"


async def test_routing_full_resource_to_another_organisation_is_logged_as_a_disclosure(hub):
    await hub.share()
    await subscribe(hub, KOMMUN, subscription(endpoint=HOOK, content="full-resource"))
    t = await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK) == [1])
    admin = await hub.login(REGION, scope="system/AuditEvent.rs")  # not an admin client: refused
    assert (await hub.get(admin, "AuditEvent")).status_code == 403
    from conftest import get_token
    token = await get_token(hub.http, hub.db_path, scope="system/AuditEvent.rs", organization=REGION, admin=True)
    deadline = asyncio.get_running_loop().time() + 20
    while True:  # the access log is written in batches: wait for the one with the export
        r = await hub.get({"Authorization": f"Bearer {token}"},
                          f"AuditEvent?patient=Patient/{hub.ids['pid']}&_count=100")
        exports = [e["resource"] for e in r.json()["entry"] if e["resource"]["type"]["code"] == "110106"]
        if any(f"Task/{t['id']}" in str(e["entity"]) for e in exports):
            break
        assert asyncio.get_running_loop().time() < deadline, "the export never reached the access log"
        await asyncio.sleep(0.05)
    assert any(a.get("who", {}).get("identifier", {}).get("value") == KOMMUN for e in exports for a in e["agent"])


async def test_notifications_can_be_signed(fast):
    receiver = Receiver()
    settings = replace(fast, notify_signing_key="test-signing-key")
    async with running_gateway(settings, authorised=False, notify_sender=receiver) as http:
        w = await build_world(http, settings.db_path)
        await subscribe(w, REGION, subscription(endpoint=HOOK_2))
        [handshake] = receiver.at(HOOK_2)
        stamp, digest = (part.split("=", 1)[1] for part in handshake.headers["x-samverkan-signature"].split(","))
        expected = hmac.new(b"test-signing-key", stamp.encode() + b"." + handshake.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(digest, expected)


async def test_deleting_a_subscription_stops_it(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    assert (await hub.call(REGION, "DELETE", f"Subscription/{sub['id']}")).status_code == 204
    await new_task(hub)
    await hub.engine.idle()
    assert hub.receiver.numbers(HOOK_2) == []


async def test_the_capability_statement_lists_the_topics(hub):
    statement = (await hub.http.get(f"{FHIR}/metadata")).json()
    [sub] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    topics = {e["valueCanonical"] for e in sub["extension"]}
    assert TOPIC + "task-created" in topics and TOPIC + "encounter-utskrivningsklar" in topics
    assert {"status", "events"} <= {o["name"] for o in sub["operation"]}


# -- LUSEN: the admission notice reaches the municipality without consent ------------------------
async def test_lusen_the_municipality_is_notified_of_the_admission_with_the_notice_only(fast):
    import test_access_lusen as lusen
    from conftest import TEST_PNR, organization, patient
    receiver = Receiver()
    async with running_gateway(fast, authorised=False, notify_sender=receiver) as http:
        orgs = (lusen.REGION, lusen.KOMMUN, lusen.HYLTE)  # the operator vouches for the municipalities
        headers = {o: await lusen.login(http, fast.db_path, o, **lusen.VOUCHED[o]) for o in orgs}
        w = lusen.World(http, headers, fast.db_path)
        hospital = (await w.make(lusen.REGION, organization("Hallands sjukhus", lusen.REGION)))["id"]
        person = await w.make(lusen.REGION, patient(TEST_PNR, address=[lusen.home()],
                                                   telecom=[{"system": "phone", "value": lusen.PHONE}]))
        for org, hook in ((lusen.KOMMUN, HOOK), (lusen.HYLTE, HOOK_2)):
            r = await http.post(f"{FHIR}/Subscription", headers=headers[org],
                                json=subscription("encounter-admission", endpoint=hook, content="full-resource"))
            assert r.status_code == 201, r.text
        await receiver.wait(lambda: len(receiver.at(HOOK, "handshake")) + len(receiver.at(HOOK_2, "handshake")) == 2)
        enc = await w.make(lusen.REGION, lusen.stay(person["id"], hospital))
        await receiver.wait(lambda: receiver.numbers(HOOK) == [1])
        engine = http.app.state.fhir.engine
        await engine.idle()
        [note] = receiver.at(HOOK, "event-notification")
        shown = note.bundle["entry"][1]["resource"]
        assert shown["id"] == enc["id"]
        assert lusen.REASON not in note.body.decode()  # the stay, not its clinical content
        assert receiver.numbers(HOOK_2) == []  # another municipality: not its resident


async def test_a_dead_receiver_does_not_hold_up_other_subscriptions(hub):
    await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    await subscribe(hub, KOMMUN, subscription(endpoint=HOOK, content="empty"))
    hub.receiver.answer[HOOK_2] = "down"
    for _ in range(3):
        await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.attempts.get(HOOK_2, 0) >= 3)  # handshake + 2 failures
    await hub.share()
    await new_task(hub)  # the first three were not KOMMUN's to see (no consent then): this is its event 1
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK) == [1], timeout=20)
    assert hub.receiver.numbers(HOOK_2) == []  # still down, retried on its own


async def test_a_subscription_past_its_end_gets_no_more_events_and_is_switched_off(hub):
    from datetime import datetime, timedelta, timezone
    end = (datetime.now(timezone.utc) + timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2) | {"end": end})
    await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    off = await wait_status(hub, REGION, sub["id"], ("off",), timeout=15)
    assert off["status"] == "off"
    await new_task(hub)
    await hub.engine.idle()
    assert hub.receiver.numbers(HOOK_2) == [1]


# -- found in review ---------------------------------------------------------------------------
async def test_events_operation_answers_within_the_token_s_scopes(hub):
    await hub.share()
    sub = await subscribe(hub, KOMMUN, subscription(endpoint=HOOK, content="full-resource"))
    t = await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK) == [1])
    narrow = await hub.login(KOMMUN, scope="system/Subscription.rs")
    assert (await hub.get(narrow, f"Task/{t['id']}")).status_code == 403
    r = await hub.get(narrow, f"Subscription/{sub['id']}/$events?content=full-resource")
    assert r.status_code == 200
    assert SECRET not in r.text and t["id"] not in r.text


async def test_routing_a_revoked_client_s_subscriptions_are_switched_off(hub):
    from gateway.auth.registry import ClientRegistry
    await hub.share()
    sub = await subscribe(hub, KOMMUN, subscription(endpoint=HOOK, content="full-resource"))
    def revoke() -> None:  # as `gateway clients revoke` does; on a thread, like get_token's registration
        registry = ClientRegistry(hub.db_path)
        for client in registry.list():
            if client.organization == KOMMUN:
                registry.revoke(client.client_id)
        registry.close()
    await asyncio.to_thread(revoke)
    await asyncio.sleep(2.1)  # a revocation reaches every process within 2 s
    await new_task(hub)
    await hub.engine.idle()
    row = await hub.engine.store.subscription(sub["id"])
    assert row.state == "off" and "revoked" in row.error
    assert hub.receiver.numbers(HOOK) == [] and SECRET not in str([r.body for r in hub.receiver.received])


async def test_a_deleted_subscription_brought_back_goes_on_numbering(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1])
    assert (await hub.call(REGION, "DELETE", f"Subscription/{sub['id']}")).status_code == 204
    await new_task(hub)  # nothing while deleted
    revived = {**subscription(endpoint=HOOK_2), "id": sub["id"]}
    assert (await hub.update(REGION, revived)).status_code in (200, 201)
    await wait_status(hub, REGION, sub["id"], ("active",))
    await new_task(hub)
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1, 2])
    await hub.engine.idle()
    assert hub.receiver.numbers(HOOK_2) == [1, 2]


async def test_full_resource_shows_every_version_of_a_resource_in_one_notification(hub):
    sub = await subscribe(hub, REGION, subscription("task-status-changed", endpoint=HOOK_2, content="full-resource"))
    hub.receiver.answer[HOOK_2] = 503
    t = await new_task(hub)
    for status in ("accepted", "in-progress", "completed"):
        current = await hub.current("Task", t["id"])
        assert (await hub.update(REGION, current | {"status": status})).status_code == 200
    await hub.receiver.wait(lambda: hub.receiver.attempts.get(HOOK_2, 0) >= 2)
    hub.receiver.answer[HOOK_2] = 200
    await hub.receiver.wait(lambda: hub.receiver.numbers(HOOK_2) == [1, 2, 3])
    [note] = hub.receiver.at(HOOK_2, "event-notification")
    assert [e["resource"]["status"] for e in note.bundle["entry"][1:]] == ["accepted", "in-progress", "completed"]
    assert sub


@pytest.mark.parametrize("channel, mentions", [
    ({"header": ["X-Key: a\x00b"]}, "header"),
    ({"header": ["Content-Length: 3"]}, "Content-Length"),
    ({"header": ["Host: internal.admin"]}, "Host"),
    ({"endpoint": "https://[::1/y"}, "endpoint"),
    ({"endpoint": "http://kommun.example.se/hook"}, "https"),
    ({"payload": "application/fhir+json; fhirVersion=4.01"}, "payload"),
])
async def test_a_channel_the_gateway_cannot_safely_use_is_refused(hub, channel, mentions):
    sub = subscription()
    sub["channel"] = {**sub["channel"], **channel}
    r = await hub.call(REGION, "POST", "Subscription", json=sub)
    assert r.status_code == 422, r.text
    assert mentions in r.text


async def test_filters_are_bounded(hub):
    many = ",".join(f"Organization/{i}" for i in range(101))
    r = await hub.call(REGION, "POST", "Subscription", json=subscription(filters=[f"Task?owner={many}"]))
    assert r.status_code == 422 and "at most 100" in r.text


async def test_a_resource_brought_back_after_deletion_stays_with_its_person(hub):
    """Its older versions are judged by the resource's person: moving it would hand them to the
    other person's parties (found through full-resource notifications of version 1)."""
    t = await hub.make(REGION, task(f"Patient/{hub.ids['pid2']}", description=SECRET))
    assert (await hub.call(REGION, "DELETE", f"Task/{t['id']}")).status_code == 204
    moved = {**t, "for": {"reference": f"Patient/{hub.ids['pid']}"}}
    moved.pop("meta")
    r = await hub.update(REGION, moved)
    assert r.status_code == 422 and "another person" in r.text


async def test_a_working_heartbeat_clears_an_earlier_failure(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2, heartbeat=1))
    hub.receiver.answer[HOOK_2] = 503
    failing = await stored(hub, sub["id"], lambda row: row.attempts >= 1)  # a heartbeat failed, and that is stored
    assert failing.failing_since_us and failing.error
    answered = len(hub.receiver.at(HOOK_2, "heartbeat"))
    hub.receiver.answer[HOOK_2] = 200
    await hub.receiver.wait(lambda: len(hub.receiver.at(HOOK_2, "heartbeat")) > answered, timeout=20)
    # the gateway stores the heartbeat's result after the receiver has answered it
    row = await stored(hub, sub["id"], lambda row: row.attempts == 0)
    assert (row.attempts, row.failing_since_us, row.error) == (0, 0, "")


async def test_the_engine_s_verdict_on_an_old_channel_does_not_touch_a_new_one(hub):
    sub = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    row = await hub.engine.store.subscription(sub["id"])
    judged = replace(row, headers=("Authorization: Bearer old",))  # what the engine was sending with
    assert not await hub.http.app.state.fhir.subscriptions.set_status("error", judged, "handshake failed")
    assert (await hub.get(REGION, f"Subscription/{sub['id']}")).json()["status"] == "active"


async def test_the_operator_limits_where_notifications_go_and_how_many_subscriptions_an_organisation_holds(fast):
    receiver = Receiver()
    settings = replace(fast, notify_allowed_hosts="region.example.se,*.kommun.example.se", notify_max_subscriptions=2)
    async with running_gateway(settings, authorised=False, notify_sender=receiver) as http:
        w = await build_world(http, settings.db_path)
        r = await w.call(REGION, "POST", "Subscription", json=subscription(endpoint="https://intern.example.se/x"))
        assert r.status_code == 422 and "intern.example.se" in r.text
        for endpoint in (HOOK_2, "https://hemtjanst.kommun.example.se/hook"):
            r = await w.call(REGION, "POST", "Subscription", json=subscription(endpoint=endpoint))
            assert r.status_code == 201, r.text
        r = await w.call(REGION, "POST", "Subscription", json=subscription(endpoint=HOOK_2))
        assert r.status_code == 422 and "2 subscriptions" in r.text
        r = await w.call(KOMMUN, "POST", "Subscription", json=subscription(endpoint=HOOK_2))
        assert r.status_code == 201  # the limit is per organisation


async def test_type_level_status_leaves_out_deleted_subscriptions(hub):
    kept = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    gone = await subscribe(hub, REGION, subscription(endpoint=HOOK_2))
    assert (await hub.call(REGION, "DELETE", f"Subscription/{gone['id']}")).status_code == 204
    listed = (await hub.get(REGION, "Subscription/$status")).json()
    refs = [p["valueReference"]["reference"] for e in listed["entry"] for p in e["resource"]["parameter"]
            if p["name"] == "subscription"]
    assert [r.rsplit("/", 1)[1] for r in refs] == [kept["id"]] and listed["total"] == 1
