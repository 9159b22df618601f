"""A kommun-json message read and checked: JSON, then the JSON Schema (``schema.json``, with the
``jsonschema`` library), then what a schema cannot say (real dates, Luhn, start before end,
each id once). Every refusal names the JSON path of the field to fix (``$.decisions[0].status``),
because the sender is a case system's integration, and its developers fix fields, not FHIR.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator, ValidationError

from gateway.mapping import MappingError
from gateway.validation.identifiers import PERSONNUMMER, SAMORDNINGSNUMMER, check_person_number

SCHEMA_PATH = Path(__file__).with_name("schema.json")
MAX_ERRORS = 20  # reported per message: enough to fix a batch, not a wall of text
MAX_TEXT = 300
_REQUIRED = re.compile(r"^'([A-Za-z]+)' is a required property$")


class MessageError(MappingError):
    """The message cannot be taken; ``errors`` lists every field to fix (path and why)."""

    def __init__(self, message: str, path: str = "$", *, code: str = "invalid", status: int = 422,
                 errors: list[dict] | None = None):
        super().__init__(message, code=code, location=path, reject=status == 400)
        self.status = status
        self.errors = errors or [{"path": path, "message": message}]


@dataclass(frozen=True)
class Message:
    """A checked message: the JSON as sent, and what the mapping derives from it."""

    data: dict
    sent: datetime
    person_system: str  # personnummer or samordningsnummer (HL7 Sweden base systems)
    person_value: str  # 12 digits

    @property
    def message_id(self) -> str:
        return self.data["messageId"]

    @property
    def case_id(self) -> str:
        return self.data["caseId"]


@cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def message_id_of(raw: bytes) -> str | None:
    """The messageId of a message as far as it can be read (for the reply to a refused message)."""
    try:
        value = orjson.loads(raw).get("messageId")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value[:64] if isinstance(value, str) else None


def read_message(raw: bytes) -> Message:
    try:
        data = orjson.loads(raw)  # strict JSON, nesting bounded (1024) before anything recursive sees it
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"The message is not JSON: {str(exc)[:MAX_TEXT]}", "$", code="invalid-json",
                           status=400) from None
    errors = [_error(e) for e in sorted(validator().iter_errors(data), key=lambda e: list(e.absolute_path))]
    if errors:
        raise MessageError(errors[0]["message"], errors[0]["path"], code="schema", errors=errors[:MAX_ERRORS])
    sent = _instant(data["sent"], "$.sent")
    person = data["person"]
    system, key = (PERSONNUMMER, "personnummer") if "personnummer" in person else (SAMORDNINGSNUMMER,
                                                                                   "samordningsnummer")
    value, problem = check_person_number(person[key], samordning=key == "samordningsnummer")
    if problem:
        raise MessageError(f"person.{key}: {problem}.", f"$.person.{key}")
    _check_items(data)
    return Message(data, sent, system, value)


def instant(text: str) -> datetime:
    """A dateTime the schema let through (offset required), as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _instant(text: str, path: str) -> datetime:
    try:
        return instant(text)
    except ValueError:
        raise MessageError(f"'{text[:40]}' is not a real date and time.", path) from None


def _check_items(data: dict) -> None:
    for kind, key in (("decisions", "id"), ("actions", "id"), ("needs", "icf")):
        seen: set[str] = set()
        for i, item in enumerate(data.get(kind) or []):
            if item[key] in seen:
                raise MessageError(f"{kind}[{i}].{key} '{item[key]}' occurs twice in the message; send each once.",
                                   f"$.{kind}[{i}].{key}")
            seen.add(item[key])
    for kind in ("decisions", "actions"):
        for i, item in enumerate(data.get(kind) or []):
            start = item.get("start") or (item.get("time", "")[:10] if kind == "actions" else None)
            if item.get("end") and start and date.fromisoformat(item["end"]) < date.fromisoformat(start[:10]) \
                    and (kind == "decisions" or item["status"] in ("completed", "cancelled")):
                raise MessageError(f"{kind}[{i}].end {item['end']} is before its start {start[:10]}.",
                                   f"$.{kind}[{i}].end")
        for i, item in enumerate(data.get("actions") or [] if kind == "actions" else []):
            _instant(item["time"], f"$.actions[{i}].time")


def _error(e: ValidationError) -> dict:
    """One schema error as {path, message}: the path names the field to fix, also a missing one."""
    path = e.json_path
    if e.validator == "required":
        named = _REQUIRED.match(e.message)  # one error per missing property, named in its message
        missing = named.group(1) if named else next((p for p in e.validator_value if p not in e.instance), "")
        return {"path": f"{path}.{missing}", "message": f"{_label(path, missing)} is required."}
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = set((e.schema.get("properties") or {}))
        extra = next((k for k in e.instance if k not in allowed), "")
        return {"path": f"{path}.{extra}",
                "message": f"{_label(path, extra)} is not a field of this format (see mappings/README.md)."}
    if e.validator == "oneOf" and path == "$.person":
        return {"path": path, "message": "person needs exactly one of personnummer or samordningsnummer."}
    if e.validator == "anyOf" and path.startswith("$.decisions["):
        return {"path": f"{path}.end", "message": "A granted decision states end or followUp: until when it "
                                                  "applies, or when it is followed up (the Task's deadline)."}
    if e.validator == "pattern":
        return {"path": path, "message": f"{_label(path)} does not have the form this field needs "
                                         f"({e.schema.get('description') or e.validator_value})."}
    if e.validator == "format":
        return {"path": path, "message": f"{_label(path)} is not a real {e.validator_value} (YYYY-MM-DD)."}
    return {"path": path, "message": f"{_label(path)}: {e.message[:MAX_TEXT]}"}


def _label(path: str, child: str = "") -> str:
    text = path[2:] if path.startswith("$.") else "the message"
    return f"{text}.{child}" if child and text != "the message" else child or text
