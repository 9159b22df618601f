"""The HL7 v2 ADT mapping through ``POST /fhir/$ingest?mapping=hl7v2-adt``: each event's FHIR, field
by field; repeats, older and out-of-order messages; merges; malformed and unknown messages with
their exact ACKs; and the access rule applying to what the mapping writes."""
from __future__ import annotations

import pytest
from adt_messages import HOSPITAL, PNR, SAMORDNING_OID, VC, WARD, adt, fields
from conftest import FHIR, running_gateway, get_token

REGION = "SE2321000016-HSH1"  # the hospital's client: everything the feed writes is the region's
KOMMUN = "SE2120001181-HALM"  # Halmstad, kommunkod 1380, registered by the operator
OTHER = "SE2120001231-OTH1"
ER7 = "x-application/hl7-v2+er7"
SD = "https://samverkan.example.se/fhir/StructureDefinition/"
PNR_SYSTEM = "http://electronichealth.se/identifier/personnummer"
HSA = "urn:oid:1.2.752.29.4.19"


class Feed:
    def __init__(self, http, db_path):
        self.http, self.db_path, self.h = http, db_path, {}

    async def login(self, org: str, **vouched) -> None:
        self.h[org] = {"Authorization": f"Bearer {await get_token(self.http, self.db_path, organization=org, **vouched)}"}

    async def send(self, message: bytes, org: str = REGION, mapping: str = "hl7v2-adt", ctype: str = ER7):
        r = await self.http.post(f"{FHIR}/$ingest?mapping={mapping}", content=message,
                                 headers={**self.h[org], "Content-Type": ctype})
        return r

    async def ack(self, message: bytes, org: str = REGION) -> dict[str, list[str]]:
        r = await self.send(message, org)
        assert r.status_code == 200 and r.headers["content-type"].startswith(ER7), r.text
        return fields(r.content)

    async def one(self, rtype: str, org: str = REGION, query: str = "") -> dict:
        r = await self.http.get(f"{FHIR}/{rtype}?{query}", headers=self.h[org])
        entries = [e["resource"] for e in r.json().get("entry", [])]
        assert len(entries) == 1, (rtype, query, r.text[:500])
        return entries[0]

    async def count(self, rtype: str, org: str = REGION, query: str = "") -> int:
        r = await self.http.get(f"{FHIR}/{rtype}?{query}&_summary=count", headers=self.h[org])
        return r.json()["total"]


@pytest.fixture
async def feed(settings):
    async with running_gateway(settings, authorised=False) as http:
        f = Feed(http, settings.db_path)
        await f.login(REGION)
        await f.login(KOMMUN, kommunkod="1380")
        await f.login(OTHER)
        yield f


def _ext(resource: dict, url: str) -> list[dict]:
    return [{p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in e["extension"]}
            for e in resource.get("extension", []) if e["url"] == url]


# -- each event, field by field -------------------------------------------------------------------
async def test_adt_a01_admission_becomes_patient_stay_and_provenance(feed):
    ack = await feed.ack(adt("A01", pd1={3: f"Vårdcentralen Södra^^^^^^^^^{VC}"}, pv2={9: "20240508"},
                             zlu={1: "Y", 2: "Y", 3: "20240502160000+0200"}))
    assert ack["MSA"][1:3] == ["AA", "MSG0001"] and "ERR" not in ack
    assert ack["MSH"][9] == "ACK^A01^ACK" and ack["MSH"][5:7] == ["COSMIC", HOSPITAL]
    patient = await feed.one("Patient")
    assert {"system": PNR_SYSTEM, "value": PNR} in patient["identifier"]
    assert any(i["value"] == "4711" and i["type"]["coding"][0]["code"] == "MR" for i in patient["identifier"])
    assert patient["name"] == [{"use": "official", "family": "Tolvansson", "given": ["Tolvan"]}]
    assert (patient["gender"], patient["birthDate"]) == ("male", "1912-12-12")
    home = patient["address"][0]
    assert home["line"] == ["Exempelgatan 12"] and home["city"] == "Halmstad" and home["postalCode"] == "30250"
    assert {"url": SD + "folkbokforingskommun", "valueCoding": {
        "system": "https://samverkan.example.se/fhir/sid/kommunkod", "code": "1380"}} in home["extension"]
    assert patient["telecom"] == [{"system": "phone", "value": "070-1234567"}]
    assert patient["generalPractitioner"][0]["identifier"] == {"system": HSA, "value": VC}
    stay = await feed.one("Encounter")
    assert stay["status"] == "in-progress" and stay["class"]["code"] == "IMP"
    assert stay["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert stay["identifier"][0]["value"] == "VN123" and stay["identifier"][0]["type"]["coding"][0]["code"] == "VN"
    assert stay["period"] == {"start": "2024-05-02T14:20:00+02:00"}
    assert stay["serviceProvider"] == {"identifier": {"system": HSA, "value": WARD}}
    assert stay["location"][0]["location"]["display"] == "MED1 rum 12 säng 1" and stay["location"][0]["status"] == "active"
    assert SD + "lusen-encounter" in stay["meta"]["profile"]
    assert _ext(stay, SD + "may-need-services") == [{"municipality": True, "primaryCare": True,
                                                    "judged": "2024-05-02T16:00:00+02:00"}]
    assert _ext(stay, SD + "planned-discharge-date") == [{"date": "2024-05-08T00:00:00+02:00",
                                                         "recorded": "2024-05-02T14:20:00+02:00"}]
    provenance = await feed.one("Provenance")
    assert provenance["activity"]["coding"][0]["code"] == "A01"
    assert provenance["recorded"] == "2024-05-02T14:20:00+02:00"
    assert provenance["entity"][0]["what"]["identifier"]["value"] == f"{HOSPITAL}|MSG0001"
    assert {t["reference"] for t in provenance["target"]} == {f"Patient/{patient['id']}", f"Encounter/{stay['id']}"}


async def test_adt_a02_transfer_grows_the_location_history(feed):
    await feed.ack(adt("A01"))
    await feed.ack(adt("A02", control="M2", at="20240503100000+0200", pv1={3: f"KIR2^4^2^{WARD}"}))
    stay = await feed.one("Encounter")
    assert [(h["location"]["display"], h["status"]) for h in stay["location"]] == [
        ("MED1 rum 12 säng 1", "completed"), ("KIR2 rum 4 säng 2", "active")]
    assert stay["location"][0]["period"]["end"] == "2024-05-03T10:00:00+02:00"


async def test_adt_a03_discharge_then_a13_cancel_discharge(feed):
    await feed.ack(adt("A01"))
    await feed.ack(adt("A03", control="M2", at="20240509110000+0200", pv1={45: "20240509110000+0200"}))
    stay = await feed.one("Encounter")
    assert stay["status"] == "finished" and stay["period"]["end"] == "2024-05-09T11:00:00+02:00"
    await feed.ack(adt("A13", control="M3", at="20240509113000+0200"))
    stay = await feed.one("Encounter")
    assert stay["status"] == "in-progress" and "end" not in stay["period"]


@pytest.mark.parametrize("event,status", [("A21", "onleave"), ("A05", "planned"), ("A11", "entered-in-error")])
async def test_adt_events_set_the_stay_status(feed, event, status):
    await feed.ack(adt("A01"))
    await feed.ack(adt(event, control="M2", at="20240503100000+0200"))
    assert (await feed.one("Encounter"))["status"] == status
    if event == "A21":
        await feed.ack(adt("A22", control="M3", at="20240503180000+0200"))
        assert (await feed.one("Encounter"))["status"] == "in-progress"


async def test_adt_a08_or_a03_for_an_unknown_stay_creates_it(feed):
    await feed.ack(adt("A03", pv1={45: "20240509110000+0200"}))
    stay = await feed.one("Encounter")
    assert stay["status"] == "finished" and stay["period"]["start"] == "2024-05-02T14:20:00+02:00"
    await feed.ack(adt("A08", control="M2", pv1={19: f"VN999^^^{HOSPITAL}^VN"}))
    assert await feed.count("Encounter") == 2


async def test_adt_a31_updates_the_person_only(feed):
    await feed.ack(adt("A01"))
    await feed.ack(adt("A31", control="M2", at="20240503100000+0200", pid={5: "Tolvansson^Tolvan^Tolle^^^^L"},
                       pv1=False))
    assert (await feed.one("Patient"))["name"][0]["given"] == ["Tolvan", "Tolle"]
    assert (await feed.one("Encounter"))["meta"]["versionId"] == "1"


async def test_adt_lusen_zlu_revisions_utskrivningsklar_and_its_revocation(feed):
    await feed.ack(adt("A01", pv2={9: "20240508"}))
    await feed.ack(adt("A08", control="M2", at="20240506093000+0200", pv2={9: "20240510"},
                       zlu={6: "Fortsatt intravenös antibiotika"}))
    await feed.ack(adt("A08", control="M3", at="20240509101500+0200", zlu={4: "20240509101500+0200"}))
    await feed.ack(adt("A08", control="M4", at="20240509154000+0200", zlu={5: "20240509154000+0200"}))
    stay = await feed.one("Encounter")
    assert _ext(stay, SD + "planned-discharge-date") == [
        {"date": "2024-05-08T00:00:00+02:00", "recorded": "2024-05-02T14:20:00+02:00"},
        {"date": "2024-05-10T00:00:00+02:00", "recorded": "2024-05-06T09:30:00+02:00",
         "reason": "Fortsatt intravenös antibiotika"}]
    assert _ext(stay, SD + "utskrivningsklar") == [{"time": "2024-05-09T10:15:00+02:00",
                                                   "revoked": "2024-05-09T15:40:00+02:00"}]


async def test_adt_a40_merge_links_the_replaced_patient_to_the_survivor(feed):
    await feed.ack(adt("A01", pid={3: "R123^^^SE2321000016-HSH^MR"}))  # registered under a local number
    await feed.ack(adt("A01", control="M2", pv1={19: f"VN200^^^{HOSPITAL}^VN"}))  # and under the personnummer
    await feed.ack(adt("A40", control="M3", at="20240503100000+0200", mrg={1: "R123^^^SE2321000016-HSH^MR"},
                       pv1=False))
    patients = {p["id"]: p for p in [e["resource"] for e in (await feed.http.get(
        f"{FHIR}/Patient", headers=feed.h[REGION])).json()["entry"]]}
    survivor = next(p for p in patients.values() if any(i["value"] == PNR for i in p["identifier"]))
    replaced = next(p for p in patients.values() if p is not survivor)
    assert replaced["active"] is False
    assert replaced["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{replaced['id']}"}, "type": "replaces"}]
    assert await feed.count("Encounter") == 2  # both stays kept where they are


async def test_adt_samordningsnummer_as_iso_universal_id(feed):
    await feed.ack(adt("A01", pid={3: f"199001712380^^^&{SAMORDNING_OID}&ISO^PI"}))
    patient = await feed.one("Patient")
    assert patient["identifier"] == [{"system": "http://electronichealth.se/identifier/samordningsnummer",
                                      "value": "199001712380"}]


async def test_adt_protection_indicator_marks_sekretessmarkering(feed):
    await feed.ack(adt("A01", pd1={12: "Y"}))
    patient = await feed.one("Patient")
    assert {"system": "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel", "code": "sekretessmarkering"} in \
        patient["meta"]["security"]


async def test_adt_latin1_by_msh18(feed):
    message = adt("A01", pid={5: "Åström^Örjan"}, msh={18: "8859/1"}).decode("utf-8").encode("latin-1")
    await feed.ack(message)
    assert (await feed.one("Patient"))["name"][0] == {"family": "Åström", "given": ["Örjan"]}


# -- once, in order ---------------------------------------------------------------------------------
async def test_adt_a_repeat_changes_nothing_and_gets_the_same_ack(feed):
    first = await feed.send(adt("A01"))
    again = await feed.send(adt("A01"))
    assert first.content == again.content
    assert (await feed.one("Encounter"))["meta"]["versionId"] == "1"
    assert await feed.count("Provenance") == 1


async def test_adt_an_older_update_does_not_overwrite_newer_state(feed):
    await feed.ack(adt("A01"))
    await feed.ack(adt("A03", control="M3", at="20240509110000+0200", pv1={45: "20240509110000+0200"}))
    ack = await feed.ack(adt("A08", control="M2", at="20240505120000+0200", pv1={2: "O"}))
    assert ack["MSA"][1] == "AA"
    stay = await feed.one("Encounter")
    assert stay["status"] == "finished" and stay["class"]["code"] == "IMP" and stay["meta"]["versionId"] == "2"


async def test_adt_a_cancel_that_arrives_before_its_admission_wins(feed):
    await feed.ack(adt("A11", control="M2", at="20240502150000+0200"))
    await feed.ack(adt("A01", control="M1", at="20240502142000+0200"))  # older: changes nothing
    assert (await feed.one("Encounter"))["status"] == "entered-in-error"


async def test_adt_message_keys_belong_to_the_sending_organisation(feed):
    """Another organisation's identical control id neither pre-empts nor replays the region's message."""
    other = await feed.send(adt("A01", pid={3: "199001012385^^^1.2.752.129.2.1.3.1^PI"}), org=OTHER)
    assert fields(other.content)["MSA"][1] == "AA"
    mine = await feed.ack(adt("A01"))
    assert mine["MSA"][1] == "AA" and await feed.count("Encounter") == 1  # the region's own, new
    assert await feed.count("Encounter", org=OTHER) == 1


# -- refused, with the exact ACK --------------------------------------------------------------------
@pytest.mark.parametrize("message,code,where,kind", [
    (adt("A01", pid={3: "191212121213^^^1.2.752.129.2.1.3.1^PI"}), "102", "PID^1^3", "AE"),
    (adt("A01", pv1={19: ""}), "101", "PV1^1^19", "AE"),
    (adt("A01", pid={3: ""}), "101", "PID^1^3", "AE"),
    (adt("A01", pv1={2: "X"}), "103", "PV1^1^2", "AE"),
    (adt("A01", zlu={1: "kanske", 2: "Y"}), "103", "ZLU^1^1", "AE"),
    (adt("A08", zlu={5: "20240509154000+0200"}), "207", "ZLU^1^5", "AE"),
    (adt("R01", kind="ORU"), "200", "MSH^1^9", "AR"),
    (adt("A47"), "201", "MSH^1^9", "AR"),
    (adt("A01", version="2.2"), "203", "MSH^1^12", "AR"),
    (adt("A01", control=""), "101", "MSH^1^10", "AR"),
    (adt("A01", msh={11: "X"}), "202", "MSH^1^11", "AR"),
    (adt("A01", at="2024-05-02"), "102", "EVN^1^2", "AE"),
    (adt("A40", mrg={1: "R999^^^SE2321000016-HSH^MR"}, pv1=False), "204", "MRG^1^1", "AE"),
], ids=["bad-luhn", "no-visit-number", "no-pid-3", "bad-patient-class", "zlu-not-y-n", "revoke-nothing",
       "not-adt", "unknown-event", "old-version", "no-control-id", "bad-processing-id", "bad-timestamp",
       "merge-unknown"])
async def test_adt_refusals_name_the_field_and_store_nothing(feed, message, code, where, kind):
    ack = await feed.ack(message)
    assert ack["MSA"][1:3] == [kind, fields(message)["MSH"][10]]
    if len(ack["ERR"]) > 2:  # 2.5 and later: ERR-2 location, ERR-3 code
        assert ack["ERR"][2] == where and ack["ERR"][3].split("^")[0] == code, ack["ERR"]
    else:  # the message's own version before 2.5: ERR-1 segment^sequence^field^code&text&table
        assert ack["ERR"][1].startswith(f"{where}^{code}&"), ack["ERR"]
    assert await feed.count("Encounter") == 0 and await feed.count("Provenance") == 0


async def test_adt_version_2_3_errors_use_err_1(feed):
    ack = await feed.ack(adt("A01", version="2.3", pid={3: "191212121213^^^1.2.752.129.2.1.3.1^PI"}))
    assert ack["MSA"][1] == "AE" and ack["ERR"][1] == "PID^1^3^102&Data type error&HL70357"


@pytest.mark.parametrize("raw", [b"", b"not hl7 at all", b"MSH", b"\x00\x01\x02MSH|^~\\&|", b"PID|1||x",
                                 b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X|P|2.5\r\x0b\x1c\r"],
                         ids=["empty", "text", "msh-only", "binary", "no-msh", "frame-bytes"])
async def test_adt_unparseable_input_gets_an_ar_and_stores_nothing(feed, raw):
    r = await feed.send(raw)
    if r.status_code == 400:  # an empty body is refused by the operation itself
        assert r.json()["resourceType"] == "OperationOutcome"
        return
    ack = fields(r.content)
    assert r.status_code == 200 and ack["MSA"][1] == "AR" and "ERR" in ack
    assert await feed.count("Patient") == 0


async def test_ingest_names_unknown_mappings_and_wrong_media_types(feed):
    r = await feed.send(adt("A01"), mapping="no-such")
    assert r.status_code == 404 and "hl7v2-adt" in r.json()["issue"][0]["diagnostics"]
    r = await feed.send(adt("A01"), ctype="application/pdf")
    assert r.status_code == 415 and r.json()["resourceType"] == "OperationOutcome"


# -- the access rule applies to what the feed writes ------------------------------------------------
async def test_adt_feeds_the_lusen_notice_to_the_registered_municipality(feed):
    await feed.ack(adt("A01", pv2={9: "20240508"}, zlu={1: "Y", 2: "N", 3: "20240502160000+0200"}))
    stay = await feed.one("Encounter")
    notice = await feed.http.get(f"{FHIR}/Encounter/{stay['id']}", headers=feed.h[KOMMUN])
    assert notice.status_code == 200 and notice.json()["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert (await feed.http.get(f"{FHIR}/Encounter/{stay['id']}", headers=feed.h[OTHER])).status_code == 404
    assert (await feed.http.get(f"{FHIR}/Provenance", headers=feed.h[KOMMUN])).json()["total"] == 0


async def test_adt_a_feed_never_touches_another_organisations_patient(feed):
    """OTHER's own Patient for the same person is not the region feed's: the feed keeps its own."""
    r = await feed.http.post(f"{FHIR}/Patient", headers={**feed.h[OTHER], "Content-Type": "application/fhir+json"},
                             json={"resourceType": "Patient", "identifier": [{"system": PNR_SYSTEM, "value": PNR}]})
    assert r.status_code == 201
    await feed.ack(adt("A01"))
    others = (await feed.http.get(f"{FHIR}/Patient/{r.json()['id']}", headers=feed.h[OTHER])).json()
    assert others["meta"]["versionId"] == "1"
    assert await feed.count("Patient", org=REGION) == 1


async def test_ingest_needs_a_token_like_any_write(feed):
    r = await feed.http.post(f"{FHIR}/$ingest?mapping=hl7v2-adt", content=adt("A01"), headers={"Content-Type": ER7})
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"


async def test_adt_the_gateways_own_validation_refusal_is_an_ae(feed):
    """A stay the LUSEN profile refuses (may need services, but no planned discharge date) is AE, not stored."""
    ack = await feed.ack(adt("A01", zlu={1: "Y", 2: "N", 3: "20240502160000+0200"}))
    assert ack["MSA"][1] == "AE" and ack["ERR"][3].startswith("102^") and "sam-enc-2" in ack["ERR"][8]
    assert await feed.count("Encounter") == 0 and await feed.count("Patient") == 0


async def test_adt_every_corpus_message_gets_an_ack(feed):
    """Public sample messages of many versions and vendors: each is answered AA, AE or AR, never a 5xx."""
    from hl7v2_corpus import corpus

    answered = []
    for name, message in corpus():
        r = await feed.send(message)
        if r.status_code == 400 and not message:
            continue
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        ack = fields(r.content)
        assert ack["MSA"][1] in ("AA", "AE", "AR"), name
        assert ack["MSA"][1] == "AA" or "ERR" in ack, (name, r.content)
        answered.append(ack["MSA"][1])
    assert len(answered) >= 40 and answered.count("AA") >= 10, answered
