"""``gateway profiles snapshot``: write the snapshot of every StructureDefinition in profiles/.

Profiles are authored as differentials; the snapshot (base elements from the R4 models with
the differential applied) is generated, committed, and kept in step by a test.
"""
from __future__ import annotations

import json
from pathlib import Path

from gateway.validation.snapshot import generate_snapshot


def with_snapshot(sd: dict) -> dict:
    """The StructureDefinition with a fresh snapshot, placed before the differential (FHIR order)."""
    out = {k: v for k, v in sd.items() if k not in ("snapshot", "differential")}
    out["snapshot"] = {"element": generate_snapshot(sd)}
    out["differential"] = sd.get("differential", {"element": []})
    return out


def write_snapshots(profiles_dir: Path) -> list[Path]:
    changed = []
    for path in sorted(profiles_dir.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text(encoding="utf-8"))
        text = json.dumps(with_snapshot(sd), indent=2, ensure_ascii=False) + "\n"
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
