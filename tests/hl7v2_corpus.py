"""Loader for the public HL7 v2 ADT corpus in fixtures/hl7v2/ (see its README.md).

Files hold one message each with segments on separate lines (LF).  ``corpus()``
turns them into wire form: segments separated by CR, no trailing separator.
Files named ``*.raw.hl7`` are returned byte for byte instead: they exist for
the cases the LF convention cannot express (LF or mixed separators, binary
junk, embedded MLLP frame bytes).
"""

from __future__ import annotations

import re
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
CORPUS_DIR = FIXTURES / "corpus"
SOURCES_MD = FIXTURES / "SOURCES.md"
RAW_SUFFIX = ".raw.hl7"


def to_wire(data: bytes) -> bytes:
    """LF-separated file content -> CR-separated message, no trailing separator."""
    data = data.replace(b"\r\n", b"\n")  # tolerate a checkout that added CRLF
    if data.endswith(b"\n"):
        data = data[:-1]
    return data.replace(b"\n", b"\r")


def corpus() -> list[tuple[str, bytes]]:
    """(file name, message bytes) for every corpus file, sorted by file name."""
    out = []
    for path in sorted(CORPUS_DIR.glob("*.hl7")):
        data = path.read_bytes()
        out.append((path.name, data if path.name.endswith(RAW_SUFFIX) else to_wire(data)))
    return out


def sources() -> dict[str, dict[str, str]]:
    """The rows of SOURCES.md keyed by file name: event, version, kind, source, license, notes."""
    rows: dict[str, dict[str, str]] = {}
    for line in SOURCES_MD.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 7 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        rows[name] = dict(zip(("event", "version", "kind", "source", "license", "notes"), cells[1:]))
    return rows


def malformed() -> set[str]:
    """File names SOURCES.md marks as deliberately malformed."""
    return {name for name, row in sources().items() if row["kind"] == "malformed"}
