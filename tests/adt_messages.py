"""Builders of HL7 v2 ADT messages for the mapping's tests: a Swedish hospital's stay, event by event.

Segments are given as lists of fields (index = field number; MSH from MSH-3), so a test changes
exactly the field it is about. All persons are Skatteverket's test personnummer.
"""
from __future__ import annotations

PNR_OID = "1.2.752.129.2.1.3.1"
SAMORDNING_OID = "1.2.752.129.2.1.3.3"
HOSPITAL = "SE2321000016-HSH"  # MSH-4, the sending facility
WARD = "SE2321000016-MED1"
VC = "SE2321000016-VC01"
PNR = "191212121212"


def segment(name: str, fields: dict[int, str]) -> str:
    if not fields:
        return name
    last = max(fields)
    return "|".join([name] + [fields.get(i, "") for i in range(1, last + 1)])


def adt(event: str, *, control: str = "MSG0001", at: str = "20240502142000+0200", version: str = "2.5.1",
        pid: dict[int, str] | None = None, pv1: dict[int, str] | None = None, pv2: dict[int, str] | None = None,
        zlu: dict[int, str] | None = None, pd1: dict[int, str] | None = None, mrg: dict[int, str] | None = None,
        evn: dict[int, str] | None = None, msh: dict[int, str] | None = None, kind: str = "ADT",
        extra: list[str] = ()) -> bytes:
    header = {3: "COSMIC", 4: HOSPITAL, 5: "SAMVERKAN", 6: "SE", 7: at, 9: f"{kind}^{event}^ADT_A01",
              10: control, 11: "P", 12: version}
    header.update(msh or {})
    lines = ["MSH|^~\\&|" + "|".join(header.get(i, "") for i in range(3, max(header) + 1))]
    if evn is not False:
        lines.append(segment("EVN", {1: event, 2: at, **(evn or {})}))
    lines.append(segment("PID", {1: "1", 3: f"{PNR}^^^{PNR_OID}^PI~4711^^^{HOSPITAL}^MR",
                                 5: "Tolvansson^Tolvan^^^^^L", 7: "19121212", 8: "M",
                                 11: "Exempelgatan 12^^Halmstad^^30250^SE^L^^1380", 13: "070-1234567",
                                 **(pid or {})}))
    if pd1 is not None:
        lines.append(segment("PD1", pd1))
    if mrg is not None:
        lines.append(segment("MRG", mrg))
    if pv1 is not False:
        lines.append(segment("PV1", {1: "1", 2: "I", 3: f"MED1^12^1^{WARD}", 19: f"VN123^^^{HOSPITAL}^VN",
                                     44: "20240502142000+0200", **(pv1 or {})}))
    if pv2 is not None:
        lines.append(segment("PV2", pv2))
    if zlu is not None:
        lines.append(segment("ZLU", zlu))
    lines += list(extra)
    return "\r".join(lines).encode("utf-8")


def fields(ack: bytes) -> dict[str, list[str]]:
    """An ACK's segments by ID (the first of each), split into fields (index = field number)."""
    out: dict[str, list[str]] = {}
    for line in ack.decode("utf-8").split("\r"):
        if line:
            parts = line.split("|")
            out.setdefault(parts[0], [parts[0], "|", *parts[1:]] if parts[0] == "MSH" else parts)
    return out
