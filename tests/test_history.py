"""history: instance, type and system level, with _since and _count (paged by next links)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from conftest import (
    FHIR, TEST_PNR_2, assert_outcome, create, history, link, local, patient, put, task, tick,
)


def _versions(bundle: dict) -> list[tuple[str, str]]:
    """(Type/id, versionId) of every entry, in bundle order (deletions from their etag)."""
    out = []
    for e in bundle.get("entry", []):
        key = e["fullUrl"].split("/fhir/", 1)[1]
        vid = e["resource"]["meta"]["versionId"] if "resource" in e else e["response"]["etag"][3:-1]
        out.append((key, vid))
    return out


async def _walk(client, first: dict) -> list[dict]:
    pages = [first]
    while (nxt := link(pages[-1], "next")) is not None:
        r = await client.get(local(nxt))
        assert r.status_code == 200, r.text
        pages.append(r.json())
        assert len(pages) < 50, "next links never end"
    return pages


async def test_instance_history_lists_every_version_newest_first(client):
    v1 = await create(client, task(status="requested"))
    await tick()
    v2 = (await put(client, {**v1, "status": "accepted"})).json()
    await tick()
    await put(client, {**v2, "status": "in-progress"})
    await tick()
    await client.delete(f"{FHIR}/Task/{v1['id']}")
    hist = await history(client, f"Task/{v1['id']}/_history")
    assert hist["total"] == 4
    assert [vid for _, vid in _versions(hist)] == ["4", "3", "2", "1"]
    methods = [e["request"]["method"] for e in hist["entry"]]
    assert methods == ["DELETE", "PUT", "PUT", "POST"]
    assert [e["resource"]["status"] for e in hist["entry"][1:]] == ["in-progress", "accepted", "requested"]
    assert "resource" not in hist["entry"][0]
    assert all(e["response"]["status"].split()[0] in ("200", "201", "204") for e in hist["entry"])


async def test_type_history_holds_only_that_type_but_all_its_resources(client):
    t1 = await create(client, task())
    t2 = await create(client, task())
    await put(client, {**t1, "status": "accepted"})
    await create(client, patient())
    hist = await history(client, "Task/_history")
    assert hist["total"] == 3
    assert sorted(_versions(hist)) == sorted([(f"Task/{t1['id']}", "1"), (f"Task/{t1['id']}", "2"),
                                              (f"Task/{t2['id']}", "1")])


async def test_system_history_holds_every_type(client):
    t = await create(client, task())
    p = await create(client, patient())
    await client.delete(f"{FHIR}/Patient/{p['id']}")
    hist = await history(client, "_history")
    assert hist["total"] == 3
    assert set(_versions(hist)) == {(f"Task/{t['id']}", "1"), (f"Patient/{p['id']}", "1"),
                                    (f"Patient/{p['id']}", "2")}


async def test_history_since_leaves_out_versions_before_the_instant(client):
    v1 = await create(client, task(status="requested"))
    other = await create(client, patient())
    await tick()
    v2 = (await put(client, {**v1, "status": "accepted"})).json()
    await tick()
    v3 = (await put(client, {**v2, "status": "completed"})).json()
    since = v2["meta"]["lastUpdated"]
    inst = await history(client, f"Task/{v1['id']}/_history?_since={since}")
    assert [vid for _, vid in _versions(inst)] == ["3", "2"]
    assert inst["total"] == 2
    typ = await history(client, f"Task/_history?_since={v3['meta']['lastUpdated']}")
    assert _versions(typ) == [(f"Task/{v1['id']}", "3")]
    system = await history(client, f"_history?_since={since}")
    assert (f"Patient/{other['id']}", "1") not in _versions(system)
    assert len(_versions(system)) == 2


async def test_history_since_with_a_timezone_offset_means_the_same_instant(client):
    v1 = await create(client, task(status="requested"))
    await tick()
    v2 = (await put(client, {**v1, "status": "accepted"})).json()
    utc = datetime.fromisoformat(v2["meta"]["lastUpdated"].replace("Z", "+00:00"))
    stockholm_summer = utc.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")
    hist = await history(client, f"Task/_history?_since={quote(stockholm_summer)}")
    assert _versions(hist) == [(f"Task/{v1['id']}", "2")]
    future = await history(client, "Task/_history?_since=2999-01-01T00:00:00Z")
    assert future.get("entry", []) == [] and future["total"] == 0


async def test_history_count_pages_through_every_version_exactly_once(client):
    current = await create(client, task())
    for status in ("accepted", "in-progress", "on-hold", "completed"):
        current = (await put(client, {**current, "status": status})).json()
    first = await history(client, f"Task/{current['id']}/_history?_count=2")
    assert len(first["entry"]) == 2 and first["total"] == 5
    pages = await _walk(client, first)
    assert [len(p.get("entry", [])) for p in pages if p.get("entry")] == [2, 2, 1]
    seen = [vid for p in pages for _, vid in _versions(p)]
    assert seen == ["5", "4", "3", "2", "1"]


async def test_history_pages_do_not_shift_when_new_versions_are_written(client):
    current = await create(client, task())
    for status in ("accepted", "in-progress", "on-hold"):
        current = (await put(client, {**current, "status": status})).json()
    first = await history(client, f"Task/{current['id']}/_history?_count=2")
    assert [vid for _, vid in _versions(first)] == ["4", "3"]
    await put(client, {**current, "status": "completed"})  # version 5 arrives between page fetches
    rest = await _walk(client, first)
    seen = [vid for p in rest for _, vid in _versions(p)]
    assert seen == ["4", "3", "2", "1"]


async def test_type_history_with_since_and_count_combined(client):
    old = await create(client, task())
    await tick()
    marker = await create(client, task())
    await tick()
    newer = [await create(client, task()) for _ in range(3)]
    first = await history(client, f"Task/_history?_since={marker['meta']['lastUpdated']}&_count=2")
    pages = await _walk(client, first)
    seen = {rid.split("/")[1] for p in pages for rid, _ in _versions(p)}
    assert seen == {marker["id"], *(t["id"] for t in newer)}
    assert old["id"] not in seen


async def test_history_of_a_deleted_resource_is_still_available(client):
    p = await create(client, patient(TEST_PNR_2))
    await client.delete(f"{FHIR}/Patient/{p['id']}")
    hist = await history(client, f"Patient/{p['id']}/_history")
    assert [vid for _, vid in _versions(hist)] == ["2", "1"]


async def test_history_of_unknown_resource_is_404(client):
    assert_outcome(await client.get(f"{FHIR}/Task/nope/_history"), 404, "Task/nope")


async def test_history_of_unknown_type_is_404(client):
    assert_outcome(await client.get(f"{FHIR}/Spaceship/_history"), 404, "Spaceship")


async def test_history_with_unknown_parameter_is_400_naming_it(client):
    assert_outcome(await client.get(f"{FHIR}/Task/_history?_at=2024"), 400, "_at")


async def test_history_with_invalid_since_is_400(client):
    assert_outcome(await client.get(f"{FHIR}/_history?_since=yesterday"), 400, "_since")


async def test_history_with_invalid_count_is_400(client):
    assert_outcome(await client.get(f"{FHIR}/_history?_count=-1"), 400, "_count")
