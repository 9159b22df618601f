"""The region's reply: a FHIR ``transaction-response`` Bundle, or an OperationOutcome with a 4xx.

One response entry per resource of the message, in the message's order: ``status`` (``201
Created``, or ``200 OK`` for an update and for a resource the message did not change),
``location`` (our ``Type/id/_history/vid``: the region learns our id) and ``etag``. Warnings —
a local code kept as sent because no map translates it — are in that entry's ``response.outcome``
(an OperationOutcome, severity ``warning``, naming the element), where FHIR puts hints for a
transaction entry; an unchanged resource says so there too (``informational``).

Errors: what the mapping cannot take (``MappingError``) is 400 when the message itself is not one
it takes (not FHIR JSON, a Bundle type it does not take) and 422 when its content is wrong (the
issue names the element in the region's message); what the gateway refused (validation 422, the
access rule 403, a stale version 412 …) keeps the gateway's status and OperationOutcome.
"""
from __future__ import annotations

from gateway.errors import FhirError, Issue, operation_outcome
from gateway.fhir.canonical import dumps
from gateway.mapping import MappingError, Outcome, Reply, Translation

MEDIA_TYPE = "application/fhir+json"


def build_reply(translation: Translation | None, outcome: Outcome) -> Reply:
    if not outcome.ok:
        return error_reply(outcome.error)
    written = iter(outcome.written)
    entries = []
    for item in translation.context if translation is not None else []:
        issues = list(item.warnings)
        if item.write is not None:
            location = next(written)
            created = item.found is None and location.endswith("/_history/1")
        else:
            location = f"{item.rtype}/{item.found['id']}/_history/{item.found['meta']['versionId']}"
            created = False
            issues.append(Issue("informational", f"{item.rtype} unchanged: the message says what is stored.",
                                severity="information"))
        response: dict = {"status": "201 Created" if created else "200 OK", "location": location,
                          "etag": f'W/"{location.rsplit("/", 1)[1]}"'}
        if issues:
            response["outcome"] = operation_outcome(issues)
        entries.append({"response": response})
    body = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
    return Reply(dumps(body), MEDIA_TYPE)


def error_reply(error: Exception | None) -> Reply:
    if isinstance(error, MappingError):
        issue = Issue(error.code, str(error), expression=[error.location] if error.location else [])
        return Reply(dumps(operation_outcome([issue])), MEDIA_TYPE, 400 if error.reject else 422)
    if isinstance(error, FhirError):
        return Reply(dumps(error.outcome()), MEDIA_TYPE, error.status)
    issue = Issue("exception", "The message could not be processed; the gateway has logged it.")
    return Reply(dumps(operation_outcome([issue])), MEDIA_TYPE, 500)
