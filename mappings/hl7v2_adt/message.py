"""An HL7 v2 message as the ADT mapping reads it: python-hl7 underneath, safe field access on top.

python-hl7 is the parser (``hl7`` on PyPI): it is lenient with what vendors send (any delimiters
MSH declares, missing trailing fields, Z-segments, repetitions), parses an ADT message in tens of
microseconds, and is maintained. hl7apy validates messages against the standard's structures, but
a gateway that receives from many hospital systems needs tolerance, not a structure validator,
and hl7apy's parsing was about ten times slower here.

Fields are addressed as in the standard, 1-based: ``get("PV1", 19, comp=1)``; an absent segment,
field, component or repetition reads as ''. Text is unescaped (``\\F\\``, ``\\S\\`` …). Positions of
errors are given as HL7 error locations: segment^sequence^field (ERR-2 / ERR-1).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hl7

from gateway.mapping import MappingError

STOCKHOLM = ZoneInfo("Europe/Stockholm")  # a timestamp without offset is local time at a Swedish sender
# MSH-18 character sets → Python codecs (HL7 table 0211); without MSH-18, UTF-8 if it decodes, else Latin-1.
_CHARSETS = {"": None, "ASCII": "ascii", "8859/1": "latin-1", "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8",
             "UNICODE": "utf-8", "UTF-8": "utf-8", "8859/2": "iso8859-2", "8859/5": "iso8859-5",
             "8859/7": "iso8859-7", "8859/9": "iso8859-9", "WINDOWS-1252": "cp1252", "CP1252": "cp1252"}
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")
MAX_SEGMENTS = 500  # an ADT message has tens; more is not a message we should walk


@dataclass(frozen=True)
class Location:
    """Where in the message: segment ID, its sequence among segments of that ID (1-based), field."""

    segment: str
    sequence: int = 1
    field: int = 0

    def __str__(self) -> str:
        return f"{self.segment}^{self.sequence}^{self.field}" if self.field else f"{self.segment}^{self.sequence}"


def reject(message: str, code: str, where: Location | str = "") -> MappingError:
    """The message itself is unacceptable (HL7 AR)."""
    return MappingError(message, code=code, location=str(where), reject=True)


def error(message: str, code: str, where: Location | str = "") -> MappingError:
    """The message's content is in error (HL7 AE)."""
    return MappingError(message, code=code, location=str(where))


def decode(raw: bytes) -> str:
    """The message as text, by MSH-18 (the character set), with segments separated by CR."""
    if not raw.startswith(b"MSH") or len(raw) < 8:
        raise reject("The message does not start with an MSH segment.", "100", "MSH^1")
    if b"\x0b" in raw or b"\x1c" in raw:  # MLLP's block characters inside a message: a broken frame
        raise reject("The message contains MLLP framing bytes (0x0B, 0x1C): it was framed wrongly.", "100", "MSH^1")
    charset = _msh18(raw)
    if charset not in _CHARSETS:
        raise reject(f"MSH-18 character set '{charset}' is not supported; send UNICODE UTF-8 or 8859/1.", "203",
                     "MSH^1^18")
    codec = _CHARSETS[charset]
    try:
        text = raw.decode(codec) if codec else _utf8_or_latin1(raw)
    except UnicodeDecodeError:
        raise reject(f"The message is not valid {charset} text (MSH-18).", "102", "MSH^1^18") from None
    segments = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\r".join(s for s in segments if s.strip())  # blank lines between segments are no segments


def _utf8_or_latin1(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _msh18(raw: bytes) -> str:
    separator = raw[3:4]
    first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = first.split(separator)
    return fields[17].decode("latin-1").split("^")[0].strip().upper() if len(fields) > 17 else ""


class V2Message:
    def __init__(self, raw: bytes):
        text = decode(raw)
        if text.count("\r") >= MAX_SEGMENTS:
            raise reject(f"The message has more than {MAX_SEGMENTS} segments.", "100", "MSH^1")
        try:
            self.msg = hl7.parse(text)
        except Exception as exc:  # python-hl7 raises several types for broken delimiters and segments
            raise reject(f"The message cannot be parsed as HL7 v2 ({type(exc).__name__}).", "100", "MSH^1") from None
        self._segments: dict[str, list] = {}
        for segment in self.msg:
            name = str(segment[0]) if len(segment) else ""
            if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
                raise reject(f"'{name[:10]}' is not a segment ID.", "100", name[:3])
            self._segments.setdefault(name, []).append(segment)

    def has(self, segment: str) -> bool:
        return segment in self._segments

    def count(self, segment: str) -> int:
        return len(self._segments.get(segment, ()))

    def repetitions(self, segment: str, field: int, seq: int = 1) -> list:
        """The non-empty repetitions of a field (python-hl7 Repetitions, or plain strings). python-hl7
        keeps MSH-1 (the field separator) at index 1, so field n is at index n in every segment."""
        segs = self._segments.get(segment, [])
        if len(segs) < seq or len(segs[seq - 1]) <= field:
            return []
        value = segs[seq - 1][field]
        reps = list(value) if isinstance(value, hl7.Field) else [value]
        return [r for r in reps if str(r) != ""]

    def get(self, segment: str, field: int, comp: int = 1, sub: int = 1, rep: int = 1, seq: int = 1) -> str:
        reps = self.repetitions(segment, field, seq)
        if len(reps) < rep:
            return ""
        return self.part(reps[rep - 1], comp, sub)

    def part(self, value, comp: int = 1, sub: int = 1) -> str:
        """Component ``comp``, subcomponent ``sub`` of one repetition, unescaped ('' if absent)."""
        node = value
        for index in (comp, sub):
            if isinstance(node, list):  # a Repetition of Components, a Component of subcomponents
                node = node[index - 1] if len(node) >= index else ""
            elif index > 1:
                return ""
        text = str(node) if node is not None else ""
        return self.msg.unescape(text) if "\\" in text else text

    def timestamp(self, segment: str, field: int, comp: int = 1, seq: int = 1) -> datetime | None:
        """A TS/DTM field as an aware datetime (no offset: Stockholm time); None if empty; AE if malformed."""
        text = self.get(segment, field, comp, seq=seq)
        if not text:
            return None
        parsed = parse_ts(text)
        if parsed is None:
            raise error(f"{segment}-{field} '{text}' is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS]]]]][+ZZZZ]).",
                        "102", Location(segment, seq, field))
        return parsed


def parse_ts(text: str) -> datetime | None:
    m = _TS.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    try:
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                         int(second or 0), int(float(fraction or 0) * 1_000_000))
    except ValueError:
        return None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return naive.replace(tzinfo=timezone(sign * delta))
    return naive.replace(tzinfo=STOCKHOLM)


def fhir_datetime(value: datetime) -> str:
    """A FHIR dateTime with seconds and offset."""
    return value.isoformat(timespec="seconds")


def fhir_date(text: str) -> str | None:
    """The date part of a TS as a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)."""
    m = _TS.match(text.strip()) if text else None
    if not m:
        return None
    year, month, day = m.group(1), m.group(2), m.group(3)
    return "-".join(p for p in (year, month, day if month else None) if p)
