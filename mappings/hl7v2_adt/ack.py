"""Original-mode acknowledgements: AA, AE or AR, with an ERR segment saying where and why.

Built from the received MSH read leniently (``Header``), so that even a message the parser
refuses gets an ACK addressed back to its sender with its control id. The ERR segment has the
shape of the message's version: ERR-1 (ELD: segment^sequence^field^code&text&HL70357) before
2.5, ERR-2 (ERL), ERR-3 (HL7 table 0357), ERR-4 (severity) and ERR-8 (the message) from 2.5.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

# HL7 table 0357, message error condition codes.
TABLE_0357 = {"0": "Message accepted", "100": "Segment sequence error", "101": "Required field missing",
              "102": "Data type error", "103": "Table value not found", "200": "Unsupported message type",
              "201": "Unsupported event code", "202": "Unsupported processing id", "203": "Unsupported version id",
              "204": "Unknown key identifier", "205": "Duplicate key identifier", "206": "Application record locked",
              "207": "Application internal error"}
MAX_TEXT = 200


@dataclass(frozen=True)
class Header:
    """The MSH of a received message as far as it can be read, with defaults for what cannot."""

    field: str = "|"
    component: str = "^"
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    event: str = ""
    version: str = "2.5.1"

    @classmethod
    def read(cls, raw: bytes) -> "Header":
        text = raw[:4096].decode("latin-1").replace("\n", "\r").split("\r", 1)[0]
        if not text.startswith("MSH") or len(text) < 8:
            return cls()
        fs = text[3]
        fields = text.split(fs)  # fields[n] is MSH-(n+1): MSH-1 is the separator itself
        encoding = fields[1] if len(fields) > 1 else "^~\\&"
        comp = encoding[0] if encoding and encoding[0] not in (fs, "\\") else "^"

        def f(n: int) -> str:
            return fields[n - 1] if len(fields) >= n else ""
        version = f(12).split(comp)[0].strip()
        return cls(fs, comp, f(3), f(4), f(5), f(6), f(10)[:199], f(9).split(comp)[1] if comp in f(9) else "",
                   version if version[:2] == "2." and len(version) <= 8 else "2.5.1")


def ack(header: Header, code: str, text: str = "", error_code: str | None = None, location: str = "",
        severity: str = "E", now: datetime | None = None) -> bytes:
    """An ACK for ``header``'s message: ``code`` AA, AE or AR; with ``error_code`` an ERR segment."""
    fs, cs = header.field, header.component
    stamp = (now or datetime.now(timezone.utc)).astimezone(ZoneInfo("Europe/Stockholm")).strftime("%Y%m%d%H%M%S%z")
    msh = fs.join(["MSH", "^~\\&", header.receiving_app, header.receiving_facility, header.sending_app,
                   header.sending_facility, stamp, "", f"ACK{cs}{header.event}{cs}ACK" if header.event else "ACK",
                   "A" + uuid.uuid4().hex[:19], "P", header.version])
    segments = [msh, fs.join(["MSA", code, header.control_id] + ([_escape(text[:MAX_TEXT], fs, cs)]
                                                                   if text and _before_25(header.version) else []))]
    if error_code is not None:
        segments.append(_err(header, error_code, location, text, severity))
    return ("\r".join(segments) + "\r").encode("utf-8")


def _err(header: Header, code: str, location: str, text: str, severity: str) -> str:
    fs, cs = header.field, header.component
    where = location.split("^") if location else []
    label = TABLE_0357.get(code, TABLE_0357["207"])
    message = _escape(text[:MAX_TEXT], fs, cs)
    if _before_25(header.version):  # ERR-1 ELD: segment ^ sequence ^ field ^ code & text & table
        eld = cs.join([*(where + ["", "", ""])[:3], f"{code}&{label}&HL70357"])
        return fs.join(["ERR", eld])
    erl = cs.join(where)
    return fs.join(["ERR", "", erl, cs.join([code, label, "HL70357"]), severity, "", "", "", message])


def _before_25(version: str) -> bool:
    parts = [int(p) for p in version.split(".")[1:3] if p.isdigit()]
    return (parts or [5]) < [5]


def _escape(text: str, fs: str, cs: str) -> str:
    """HL7 escapes for the delimiters a free text must not contain."""
    out = text.replace("\\", "\\E\\").replace(fs, "\\F\\").replace(cs, "\\S\\").replace("~", "\\R\\")
    return out.replace("&", "\\T\\").replace("\r", " ").replace("\n", " ")
