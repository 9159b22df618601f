"""One checked kommun-json message → one transaction Bundle, written as the sending municipality.

Everything is read first through the ``Lookup`` (as the sending client sees it), then merged:
a resource this mapping keeps is found by its identifier and ``meta.source``
(``urn:samverkan:mapping:kommun-json:<organisation>``), updated with ``ifMatch`` on the version
read (a change meanwhile: the gateway translates the message again from the new state), or
created with ``ifNoneExist`` (a concurrent message that created it first wins, nothing doubles).
A resource the message leaves as it is gets no entry, so a message that changes nothing writes
nothing and notifies nobody.

Ordering: the message is about its case (``subject`` = the case id) at its ``sent`` time; the
gateway drops a message sent before the newest one it took about the case.
"""
from __future__ import annotations

import uuid
from urllib.parse import urlencode

from gateway.errors import FhirError
from gateway.mapping import Lookup, Translation

from mappings.kommun_json import plan as plans
from mappings.kommun_json.message import Message, MessageError
from mappings.kommun_json.resources import (
    SOURCE, action_task, condition, decision_task, identifier, need_key, patient, system,
)

MAX_PER_SEARCH = 1000


class _Writer:
    """The transaction's entries; each save answers the reference other entries use."""

    def __init__(self) -> None:
        self.entries: list[dict] = []

    def save(self, resource: dict, found: dict | None, query: str) -> dict:
        rtype = resource["resourceType"]
        if found is not None:
            ref = {"reference": f"{rtype}/{found['id']}"}
            if _content(resource) == _content(found):
                return ref  # the message says what is stored: no new version, no notification
            resource["id"] = found["id"]
            self.entries.append({"resource": resource, "request": {
                "method": "PUT", "url": ref["reference"], "ifMatch": f'W/"{found["meta"]["versionId"]}"'}})
            return ref
        full_url = f"urn:uuid:{uuid.uuid4()}"
        request = {"method": "POST", "url": rtype}
        if query:
            request["ifNoneExist"] = query
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        return {"reference": full_url}

    def bundle(self) -> dict:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


def _content(resource: dict) -> dict:
    """What a message can change: not the server's meta, and not ``lastModified`` alone (a restated
    decision is not a change; a changed one carries the new time)."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    return {**{k: v for k, v in resource.items() if k not in ("meta", "id", "lastModified")}, "meta": meta}


def _token(item: dict) -> str:
    return f"{item['system']}|{item['value']}"


async def _by_identifier(lookup: Lookup, rtype: str, source: str, tokens: list[str]) -> dict[str, dict]:
    """This mapping's resources of ``rtype`` with these identifiers, by identifier token."""
    if not tokens:
        return {}
    found = await lookup.search(rtype, urlencode({"identifier": ",".join(tokens), "_source": source,
                                                  "_count": str(MAX_PER_SEARCH)}))
    return {_token(i): r for r in found for i in r.get("identifier") or [] if _token(i) in tokens}


def _query(item: dict, source: str) -> str:
    return urlencode({"identifier": _token(item), "_source": source})


class _Reading:
    """The lookup, with a refused search (e.g. the client's scopes do not cover Condition) answered
    in the sender's format rather than as a FHIR OperationOutcome it does not read."""

    def __init__(self, lookup: Lookup):
        self.lookup = lookup
        self.organization = lookup.organization

    async def search(self, rtype: str, query: str) -> list[dict]:
        try:
            return await self.lookup.search(rtype, query)
        except FhirError as exc:
            reason = "; ".join(i.diagnostics for i in exc.issues)[:500]
            raise MessageError(f"Reading {rtype} as the sending client was refused: {reason}", "$", code=exc.code,
                               status=exc.status) from None


async def translate(msg: Message, lookup: Lookup) -> Translation:
    lookup = _Reading(lookup)
    org = lookup.organization
    source = SOURCE + org
    data = msg.data
    writer = _Writer()

    person = {"system": msg.person_system, "value": msg.person_value}
    patients = await lookup.search("Patient", urlencode({"identifier": _token(person)}))
    own_patient = next((p for p in patients if (p.get("meta") or {}).get("source") == source), None)
    patient_ref = writer.save(patient(msg, source, own_patient), own_patient, _query(person, source))

    need_ids = [identifier(org, "behov", need_key(msg, n)) for n in data.get("needs") or []]
    stored_needs = await _by_identifier(lookup, "Condition", source, [_token(i) for i in need_ids])
    need_refs = [writer.save(condition(msg, org, source, need, patient_ref, stored_needs.get(_token(key))),
                             stored_needs.get(_token(key)), _query(key, source))
                 for need, key in zip(data.get("needs") or [], need_ids)]

    decisions = data.get("decisions") or []
    actions = data.get("actions") or []
    wanted = [identifier(org, "beslut", d["id"]) for d in decisions] + \
             [identifier(org, "insats", a["id"]) for a in actions] + \
             [identifier(org, "beslut", a["decisionId"]) for a in actions if a.get("decisionId")]
    stored_tasks = await _by_identifier(lookup, "Task", source, list(dict.fromkeys(_token(i) for i in wanted)))
    task_refs: list[dict] = []
    made: dict[str, tuple[dict, dict]] = {}  # decision id → (reference, Task) as this message makes it
    for d in decisions:
        key = identifier(org, "beslut", d["id"])
        found = stored_tasks.get(_token(key))
        task = decision_task(msg, org, source, d, patient_ref, found)
        made[d["id"]] = (writer.save(task, found, _query(key, source)), task)
        task_refs.append(made[d["id"]][0])
    for i, a in enumerate(actions):
        decision_ref, decision = _decision(org, a, i, made, stored_tasks)
        key = identifier(org, "insats", a["id"])
        found = stored_tasks.get(_token(key))
        task = action_task(msg, org, source, i, a, patient_ref, found, decision_ref, decision)
        task_refs.append(writer.save(task, found, _query(key, source)))

    visible = await plans.visible_plans(lookup, patients)
    shared = plans.shared_plan(visible, source)
    if shared is not None:
        case_tasks = await lookup.search("Task", urlencode({
            "group-identifier": _token(identifier(org, "arende", msg.case_id)), "_source": source,
            "_count": str(MAX_PER_SEARCH)}))
        refs = [{"reference": f"Task/{t['id']}"} for t in case_tasks] + task_refs
        appended = plans.with_activities(shared, refs)
        if appended is not None:
            writer.save(appended, shared, "")
        context = {"plan": "shared"}
    else:
        own = next((p for p in visible if (p.get("meta") or {}).get("source") == source), None)
        key = plans.own_plan_identifier(msg, org)
        writer.save(plans.own_plan(msg, org, source, patient_ref, own, task_refs, need_refs), own,
                    _query(key, source))
        context = {"plan": "own", "note": plans.NOT_SHARED.format(org=org)}
    return Translation(writer.bundle(), key=msg.message_id, subject=f"case:{msg.case_id}",
                       occurred_us=int(msg.sent.timestamp() * 1_000_000), context=context)


def _decision(org: str, action: dict, index: int, made: dict[str, tuple[dict, dict]],
              stored: dict[str, dict]) -> tuple[dict | None, dict | None]:
    """The decision an action carries out: made by this message, or stored; 422 when neither."""
    decision_id = action.get("decisionId")
    if decision_id is None:
        return None, None
    if decision_id in made:
        return made[decision_id]
    found = stored.get(f"{system(org, 'beslut')}|{decision_id}")
    if found is None:
        raise MessageError(f"actions[{index}].decisionId '{decision_id}' names no decision this municipality has "
                           "sent; send the decision first, or in the same message.", f"$.actions[{index}].decisionId")
    return {"reference": f"Task/{found['id']}"}, found
