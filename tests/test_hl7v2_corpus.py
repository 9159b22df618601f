"""The public HL7 v2 ADT corpus (fixtures/hl7v2) is well-formed where it claims to be.

These checks guard the corpus itself; the MLLP listener test sends every message and
expects an ACK.  A file may fail to parse only if SOURCES.md marks it `malformed`, and
every malformed file must actually be broken in a way a structural check can see.
"""

from __future__ import annotations

import hl7
import pytest

from hl7v2_corpus import CORPUS_DIR, RAW_SUFFIX, corpus, sources

MESSAGES = corpus()
SOURCES = sources()
FRAME_BYTES = (b"\x0b", b"\x1c")
CHARSETS = {"8859/1": "latin-1", "ASCII": "ascii", "UNICODE UTF-8": "utf-8"}


def header(data: bytes) -> list[str]:
    """MSH fields, numbered so that header(data)[n] is MSH-n (MSH-1 is the field separator)."""
    first = data.split(b"\r")[0].split(b"\n")[0].decode("latin-1")
    sep = first[3]
    return ["MSH", sep] + first[4:].split(sep)


def structural_problems(data: bytes) -> list[str]:
    """What keeps a message from being a single well-formed HL7 v2 message (empty: nothing)."""
    problems = []
    if not data.startswith(b"MSH"):
        return ["does not start with MSH"]
    if any(b in data for b in FRAME_BYTES):
        problems.append("contains MLLP frame bytes")
    if len(data) < 8:
        return problems + ["too short for MSH-1 and MSH-2"]
    fields = header(data)
    sep, enc = fields[1], fields[2]
    if sep.isalnum() or sep in "\r\n":
        problems.append(f"field separator {sep!r} is not a delimiter")
    if len(enc) not in (4, 5) or len(set(enc + sep)) != len(enc) + 1:
        problems.append(f"encoding characters {enc!r} are not 4-5 distinct delimiters")
    if len(fields) <= 12 or not fields[9] or not fields[12]:
        problems.append("no MSH-9 and MSH-12")
    return problems


def decode(data: bytes) -> str:
    fields = header(data)
    charset = fields[18].split(fields[2][0])[0] if len(fields) > 18 else ""
    return data.decode(CHARSETS.get(charset, "utf-8"))


def test_corpus_size_and_sources_table_match_the_files():
    names = [name for name, _ in MESSAGES]
    assert len(names) >= 40
    assert set(names) == set(SOURCES), "every corpus file needs exactly one row in SOURCES.md"
    public = [n for n in names if not SOURCES[n]["source"].startswith(("written for", "derived by us"))]
    assert len(public) >= 30, "issue 14 asks for at least 30 public messages"
    assert {row["kind"] for row in SOURCES.values()} <= {"adt", "non-adt", "malformed"}


@pytest.mark.parametrize("name,data", MESSAGES, ids=[n for n, _ in MESSAGES])
def test_file_format(name, data):
    path = CORPUS_DIR / name
    if name.endswith(RAW_SUFFIX):
        assert data == path.read_bytes()
    else:
        assert b"\r" not in path.read_bytes(), "store segments on LF lines; only *.raw.hl7 keeps CR"
        assert not data.endswith((b"\r", b"\n"))
        assert b"\n" not in data


@pytest.mark.parametrize("name,data", MESSAGES, ids=[n for n, _ in MESSAGES])
def test_message(name, data):
    row = SOURCES[name]
    problems = structural_problems(data)
    if row["kind"] == "malformed":
        assert problems, f"{name} is marked malformed but looks well-formed"
        try:  # allowed to fail: the point is that nothing else may
            hl7.parse(data.decode("latin-1"))
        except Exception:
            pass
        return
    assert problems == [], f"{name}: {problems}"
    fields = header(data)
    assert fields[0] == "MSH" and fields[1] == data[3:4].decode()
    comp = fields[2][0]
    msg_type, _, rest = fields[9].partition(comp)
    event = rest.split(comp)[0]
    version = fields[12].split(comp)[0]
    if row["kind"] == "adt":
        assert msg_type == "ADT"
        assert event == row["event"], "SOURCES.md event must be MSH-9.2"
    else:
        assert msg_type and msg_type != "ADT"
    assert version == row["version"], "SOURCES.md version must be MSH-12"
    assert f"-{row['event']}-{row['version']}." in name
    message = hl7.parse(decode(data))
    # message[0], not message.segment("MSH"): python-hl7 0.4.5's segment lookup raises
    # IndexError on an empty segment (file 27), so the ADT mapping drops blank segments first.
    assert str(message[0][0]) == "MSH" and str(message[0][9]) == fields[9]
