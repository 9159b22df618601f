"""Validation throughput: resources validated per second, base R4 alone and with profiles.

    python bench/validation_bench.py [--seconds 3]

Uses the example instances in fixtures/profiles/ (a SIP CarePlan and a Task), validated by
the same Validator every write goes through. Prints resources/s and µs per resource for:
the base model validation (fhir.resources), the whole base step (identifiers, JSON shape,
required bindings), the R4 base invariants alone, and a whole write's validation (base,
invariants and the profile the instance claims).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.settings import REPO_PROFILES  # noqa: E402
from gateway.validation.base import _model, base_issues  # noqa: E402
from gateway.validation.validator import Validator  # noqa: E402

CASES = {
    "SIP CarePlan": ROOT / "fixtures" / "profiles" / "sip-careplan-example.json",
    "Task": ROOT / "fixtures" / "profiles" / "samverkan-task-example.json",
}


def measure(fn, resource: dict, seconds: float) -> tuple[float, float]:
    copies = [copy.deepcopy(resource) for _ in range(2000)]
    fn(copy.deepcopy(resource))  # warm caches (compiled profiles, value set expansions)
    n, spent = 0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        for r in copies:
            fn(r)
        spent += time.perf_counter() - t0
        n += len(copies)
        copies = [copy.deepcopy(resource) for _ in range(2000)]
    return n / spent, spent / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per figure")
    args = parser.parse_args()
    validator = Validator.load(REPO_PROFILES)
    print(f"{'resource':14s} {'step':38s} {'per s':>10s} {'µs each':>9s}")
    results = {}
    for label, path in CASES.items():
        if not path.exists():
            print(f"{label:14s} (missing {path.relative_to(ROOT)})")
            continue
        resource = json.loads(path.read_text(encoding="utf-8"))
        rtype = resource["resourceType"]
        issues = [i for i in validator.issues(copy.deepcopy(resource), rtype) if i.severity == "error"]
        if issues:
            raise SystemExit(f"{path.name} is not valid: {issues}")
        steps = {
            "fhir.resources model_validate": lambda r, t=rtype: _model(t).model_validate(r),
            "base (model, identifiers, bindings)": lambda r, t=rtype: base_issues(r, t),
            "R4 base invariants": lambda r, t=rtype: validator.base_invariants.issues(r, t),
            "base + invariants + profile (a write)": lambda r, t=rtype: validator.validate(r, t),
        }
        for step, fn in steps.items():
            per_s, us = measure(fn, resource, args.seconds)
            results[f"{label} / {step}"] = {"per_s": round(per_s), "us": round(us, 1)}
            print(f"{label:14s} {step:38s} {per_s:10,.0f} {us:9.1f}")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
