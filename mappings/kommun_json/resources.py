"""kommun-json items → FHIR resources, merged into what is stored (``existing``): the elements a
message states are replaced, everything else the resource holds is kept.

| item | resource | found again by |
|---|---|---|
| person | ``Patient`` (the municipality's own for the person) | personnummer / samordningsnummer + ``meta.source`` |
| decision (biståndsbeslut) | ``Task`` (samverkan-task), owner the handläggare's unit | identifier ``…:beslut`` |
| action (hemtjänst, hemsjukvård) | ``Task`` (samverkan-task), ``partOf`` its decision, owned by its unit | ``…:insats`` |
| need (IBIC life area) | ``Condition``, code ICF | identifier ``…:behov`` = ``<caseId>/<icf>`` |

Why these choices (``mappings/README.md`` says the same to senders):

- **Needs are Conditions.** In IBIC a need is assessed per life area whether or not a service is
  granted for it (a rejection documents the need too), so it must stand on its own; a Condition
  is FHIR's assessed problem or concern, and what ``CarePlan.addresses`` and Gravity SDOH point
  at. A Goal is a wished outcome, not a need. ``Task.reasonCode`` / ``reasonReference`` hold one
  value in R4, while a decision usually meets several life areas; and ``CarePlan.addresses`` of
  another organisation's plan is its author's alone (``gateway/access/write_rule.py``).
- **The handläggare is ``Task.requester``** (a PractitionerRole by name: who decided the service)
  and **the unit is ``Task.owner``** (samverkan-task requires an Organization there; the owner
  changes the Task's progress). No Practitioner or CareTeam is written: a CareTeam opens access
  (``gateway/access``), which a case-system message must not do by the way.

Decision status → Task.status: granted → accepted, rejected → rejected (statusReason = reason),
ended → completed. Action status: planned → accepted, started / resumed → in-progress, paused →
on-hold (statusReason), completed → completed, cancelled → cancelled (statusReason); the
municipality's own word is ``businessStatus.text``. The deadline samverkan-task requires
(``restriction.period.end``) is the end, else the follow-up date; a rejection's is its date.
"""
from __future__ import annotations

from gateway.validation.identifiers import HSA_ID

from mappings.kommun_json.message import Message, MessageError

SOURCE = "urn:samverkan:mapping:kommun-json:"
TASK_PROFILE = "https://samverkan.example.se/fhir/StructureDefinition/samverkan-task"
ACTIVITY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-activity"
KSI = "https://samverkan.example.se/fhir/CodeSystem/ksi"  # project-local: no official KSI URI verified
KVA = "urn:oid:1.2.752.116.1.3.2.1.4"
ICF = "http://hl7.org/fhir/sid/icf"
UNIT_KIND = "https://samverkan.example.se/fhir/CodeSystem/samverkan-unit-kind"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CARRY_OUT = {"system": ACTIVITY, "code": "genomforande-insats", "display": "Genomförande av åtgärd"}

DECISION_STATUS = {"granted": ("accepted", "beviljad"), "rejected": ("rejected", "avslag"),
                   "ended": ("completed", "avslutad")}
ACTION_STATUS = {"planned": ("accepted", "planerad"), "started": ("in-progress", "påbörjad"),
                 "paused": ("on-hold", "pausad"), "resumed": ("in-progress", "återupptagen"),
                 "completed": ("completed", "avslutad"), "cancelled": ("cancelled", "avbruten")}
UNIT_KINDS = {"hemtjanst": ("hemtjanst", "Hemtjänst"),
              "hemsjukvard": ("kommunal-halso-och-sjukvard", "Kommunal hälso- och sjukvård")}
NEEDS_REASON = ("rejected", "on-hold", "cancelled", "failed")  # samverkan-task: these say why (sam-task-1)


def system(org: str, kind: str) -> str:
    """Identifier systems are the sending organisation's: another's ids never collide with them."""
    return f"urn:samverkan:kommun-json:{org}:{kind}"


def identifier(org: str, kind: str, value: str) -> dict:
    return {"system": system(org, kind), "value": value}


def unit(hsa: str, name: str | None = None) -> dict:
    ref = {"type": "Organization", "identifier": {"system": HSA_ID, "value": hsa}}
    if name:
        ref["display"] = name
    return ref


def handlaggare(msg: Message) -> dict | None:
    person = msg.data.get("handlaggare")
    return {"type": "PractitionerRole", "display": person["name"]} if person else None


def meta_for(existing: dict | None, source: str, profile: str | None = None) -> dict:
    meta = {k: v for k, v in ((existing or {}).get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    meta["source"] = source
    if profile:
        meta["profile"] = [profile] + [p for p in meta.get("profile") or [] if p != profile]
    return meta


def _base(existing: dict | None, rtype: str, owned: tuple[str, ...]) -> dict:
    return {k: v for k, v in (existing or {"resourceType": rtype}).items() if k not in owned}


def _identifiers(existing: dict | None, mine: dict) -> list[dict]:
    return [mine] + [i for i in (existing or {}).get("identifier") or [] if i.get("system") != mine["system"]]


# -- the person ------------------------------------------------------------------------------
def patient(msg: Message, source: str, existing: dict | None) -> dict:
    resource = _base(existing, "Patient", ("meta", "identifier", "name"))
    resource["meta"] = meta_for(existing, source)
    resource["identifier"] = _identifiers(existing, {"system": msg.person_system, "value": msg.person_value})
    name = msg.data["person"].get("name")
    if name:
        resource["name"] = [{"use": "official", "family": name["family"], **({"given": name["given"]}
                                                                             if name.get("given") else {})}]
    elif existing and existing.get("name"):
        resource["name"] = existing["name"]
    return resource


# -- needs -------------------------------------------------------------------------------------
def need_key(msg: Message, need: dict) -> str:
    return f"{msg.case_id}/{need['icf']}"


def condition(msg: Message, org: str, source: str, need: dict, patient_ref: dict, existing: dict | None) -> dict:
    # note and recorder only when the message states them
    owned = ("meta", "identifier", "clinicalStatus", "verificationStatus", "code", "subject")
    resource = _base(existing, "Condition", owned)
    resource["meta"] = meta_for(existing, source)
    resource["identifier"] = _identifiers(existing, identifier(org, "behov", need_key(msg, need)))
    resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": need.get("status", "active")}]}
    resource["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": "confirmed"}]}
    resource["code"] = {"coding": [{"system": ICF, "code": need["icf"]}]}
    resource["subject"] = patient_ref
    resource.setdefault("recordedDate", msg.data["sent"])
    if handlaggare(msg):
        resource["recorder"] = handlaggare(msg)
    if need.get("text"):
        resource["note"] = [{"text": need["text"]}]
    return resource


# -- decisions and actions ---------------------------------------------------------------------
_TASK_OWNED = ("meta", "identifier", "groupIdentifier", "status", "businessStatus", "statusReason", "intent", "code",
               "for", "owner", "lastModified", "restriction")


def _service_code(service: dict | None, fallback: dict | None = None) -> dict:
    """The activity code plus the KSI / KVÅ code; an action that names no service carries out its
    decision's (``fallback``: the decision Task's code)."""
    codings = [CARRY_OUT]
    if service and service.get("ksi"):
        codings.append({"system": KSI, "code": service["ksi"]})
    if service and service.get("kva"):
        codings.append({"system": KVA, "code": service["kva"]})
    fallback = fallback or {}
    if len(codings) == 1:
        codings += [c for c in fallback.get("coding") or [] if c.get("system") in (KSI, KVA)]
    code = {"coding": codings}
    text = (service or {}).get("text") or (fallback.get("text") if not service else None)
    if text:
        code["text"] = text
    return code


def _status(resource: dict, status: str, business: str, reason: str | None) -> None:
    resource["status"] = status
    resource["businessStatus"] = {"text": business}
    if status in NEEDS_REASON:
        resource["statusReason"] = {"text": reason or business}


def _task(msg: Message, org: str, source: str, kind: str, item_id: str, patient_ref: dict,
          existing: dict | None, owned: tuple[str, ...]) -> dict:
    resource = _base(existing, "Task", owned)
    resource["meta"] = meta_for(existing, source, TASK_PROFILE)
    resource["identifier"] = _identifiers(existing, identifier(org, kind, item_id))
    resource["groupIdentifier"] = identifier(org, "arende", msg.case_id)
    resource["intent"] = "order"
    resource["for"] = patient_ref
    return resource


def owner_of(msg: Message, org: str, item: dict | None = None) -> dict:
    if item and item.get("unitHsaId"):
        return unit(item["unitHsaId"], item.get("unitName"))
    person = msg.data.get("handlaggare")
    return unit(person["unitHsaId"], person.get("unitName")) if person else unit(org)


def decision_task(msg: Message, org: str, source: str, decision: dict, patient_ref: dict,
                  existing: dict | None) -> dict:
    resource = _task(msg, org, source, "beslut", decision["id"], patient_ref, existing,
                     _TASK_OWNED + ("authoredOn", "requester"))
    _status(resource, *DECISION_STATUS[decision["status"]], decision.get("reason"))
    resource["code"] = _service_code(decision["service"])
    resource["authoredOn"] = decision["decided"]
    resource["lastModified"] = msg.data["sent"]
    if handlaggare(msg):
        resource["requester"] = handlaggare(msg)
    resource["owner"] = owner_of(msg, org)
    period = {"start": decision["start"]} if decision.get("start") else {}
    period["end"] = decision["decided"] if decision["status"] == "rejected" else \
        decision.get("end") or decision["followUp"]
    resource["restriction"] = {"period": period}
    return resource


def action_task(msg: Message, org: str, source: str, index: int, action: dict, patient_ref: dict,
                existing: dict | None, decision_ref: dict | None, decision: dict | None) -> dict:
    """``decision``: the Task of the decision the action carries out, as this message makes it or
    as stored (its service code and deadline are the action's when the action states none)."""
    resource = _task(msg, org, source, "insats", action["id"], patient_ref, existing,
                     _TASK_OWNED + ("partOf", "performerType"))
    status, word = ACTION_STATUS[action["status"]]
    _status(resource, status, word, action.get("reason"))
    if decision_ref is not None:
        resource["partOf"] = [decision_ref]
    elif existing and existing.get("partOf"):
        resource["partOf"] = existing["partOf"]
    carried_out = (decision or {}).get("code") or (existing or {}).get("code")
    resource["code"] = _service_code(action.get("service"), carried_out)
    kind, display = UNIT_KINDS[action["kind"]]
    resource["performerType"] = [{"coding": [{"system": UNIT_KIND, "code": kind, "display": display}]}]
    resource["lastModified"] = action["time"]
    resource["owner"] = owner_of(msg, org, action)
    _execution(resource, action)
    if action.get("note"):
        note = {"time": action["time"], "text": f"{word}: {action['note']}"}
        notes = list(resource.get("note") or [])
        resource["note"] = notes if note in notes else notes + [note]
    deadline = action.get("end") or action.get("followUp") or _deadline(decision) or _deadline(existing)
    if deadline is None:
        raise MessageError(f"actions[{index}] needs end or followUp (the deadline of its Task), or a decisionId "
                           "whose decision states one.", f"$.actions[{index}].end")
    resource["restriction"] = {"period": {"end": deadline}}
    return resource


def _execution(resource: dict, action: dict) -> None:
    period = dict(resource.get("executionPeriod") or {})
    if action["status"] in ("started", "resumed"):
        period.setdefault("start", action["time"])
        period.pop("end", None)
    elif action["status"] in ("completed", "cancelled"):
        period["end"] = action["time"]
    if period:
        resource["executionPeriod"] = period


def _deadline(task: dict | None) -> str | None:
    return (((task or {}).get("restriction") or {}).get("period") or {}).get("end")
