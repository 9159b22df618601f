"""FHIRPath cost per write: fhirpathpy against gateway.fhirpath, per expression class and per resource.

    python bench/fhirpath_bench.py [--rounds 5] [--verbose]

1. Every expression the gateway compiles (tests/fhirpath_inventory.py records them while the
   Validator, SearchRegistry and TopicCatalog load), evaluated on the example resource of its type
   (fixtures/profiles/, and the Patient/Encounter/Provenance the HL7 v2 ADT mapping makes of a
   corpus A01): µs per evaluation with fhirpathpy and natively, summed per class (profile
   constraints, R4 base invariants, search extraction, subscription triggers).
2. Whole steps through the gateway's own objects, built twice — once with ``gateway.fhirpath.compile``
   replaced by ``fhirpathpy.compile`` (before), once as they are (after): ``Validator.issues`` of the
   lusen-encounter Encounter, the se-patient Patient and the samverkan Task; and one ADT message's
   CPU work on its three resources (validation, index extraction, topic triggers): an A01 admission
   with the LUSEN segment ZLU (may need municipal and primary care, planned discharge date) as
   tests/adt_messages.py builds it, mapped by mappings/hl7v2_adt. Last, the Encounter's validation
   with every FHIRPath evaluation replaced by a constant: what is left without any engine.

Times are CPU time of this process (``time.process_time``), best of the rounds, before and after
measured alternately: on a shared machine wall time measures the neighbours.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fhirpathpy  # noqa: E402

import gateway.fhirpath  # noqa: E402
from fhirpath_inventory import USES, gateway_expressions  # noqa: E402
from gateway.events.topics import TopicCatalog  # noqa: E402
from gateway.fhir.types import SUPPORTED_TYPES  # noqa: E402
from gateway.search.extract import index_resource  # noqa: E402
from gateway.search.registry import SearchRegistry  # noqa: E402
from gateway.settings import REPO_PROFILES  # noqa: E402
from gateway.validation.validator import Validator  # noqa: E402

EXAMPLES = {"Encounter": "lusen-encounter-example", "Patient": "se-patient-example", "Task": "samverkan-task-example",
            "CarePlan": "sip-careplan-example", "Consent": "samverkan-consent-example",
            "CareTeam": "samverkan-careteam-example", "Organization": "se-organization-example"}


def cpu_us(fn: Callable[[], Any], rounds: int, min_seconds: float = 0.05) -> float:
    """µs of CPU per call, best of ``rounds`` batches of at least ``min_seconds`` each."""
    n = 1
    while True:
        t0 = time.process_time()
        for _ in range(n):
            fn()
        spent = time.process_time() - t0
        if spent >= min_seconds:
            break
        n *= 4
    best = spent / n
    for _ in range(rounds - 1):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def adt_resources() -> list[dict]:
    """Patient, Encounter (lusen-encounter) and Provenance of a LUSEN admission (A01 with ZLU)."""
    from adt_messages import HOSPITAL, adt
    from mappings.hl7v2_adt import Hl7v2AdtMapping

    class NoMatches:
        organization = HOSPITAL

        async def search(self, rtype: str, query: str) -> list[dict]:
            return []
    message = adt("A01", zlu={1: "Y", 2: "Y", 3: "20240502160000+0200"}, pv2={9: "20240508"})
    translation = asyncio.run(Hl7v2AdtMapping().translate(message, NoMatches()))
    return [e["resource"] for e in translation.bundle["entry"]]


def recorded_calls(workload: Callable[[tuple], None]) -> list[tuple[str, str, Any, Any, Any]]:
    """(class, expression, model, focus, variables) of every evaluation ``workload`` makes with
    the gateway's objects: the constraints on the elements they apply to, the search expressions
    of the resource's type, the triggers of its topics."""
    calls: list[tuple[str, str, Any, Any, Any]] = []
    real = gateway.fhirpath.compile

    def recording(expression: str, model: Any = None) -> Callable:
        use = USES.get(sys._getframe(1).f_globals.get("__name__", ""), "other")
        compiled = real(expression, model)

        def evaluate(resource: Any, variables: Any = None) -> list:
            calls.append((use, expression, model, resource, variables))
            return compiled(resource, variables)
        return evaluate
    with mock.patch.object(gateway.fhirpath, "compile", recording):
        objects = built(False)
    workload(objects)
    return calls


def replay(calls: list[tuple[str, str, Any, Any, Any]], compiled: dict[tuple[str, int], Callable]) -> None:
    for _, expression, model, focus, variables in calls:
        try:
            compiled[expression, id(model)](focus, variables)
        except Exception:  # noqa: BLE001 -- an evaluation the gateway reports as an issue
            pass


def built(with_fhirpathpy: bool) -> tuple[Validator, SearchRegistry, TopicCatalog]:
    """The gateway's compiled objects, with fhirpathpy (before) or gateway.fhirpath (after)."""
    patch = mock.patch.object(gateway.fhirpath, "compile", fhirpathpy.compile) if with_fhirpathpy else mock.MagicMock()
    with patch:
        return (Validator.load(REPO_PROFILES), SearchRegistry.load(REPO_PROFILES, SUPPORTED_TYPES),
                TopicCatalog.load(REPO_PROFILES / "subscription-topics"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="batches per figure (the best is shown)")
    parser.add_argument("--verbose", action="store_true", help="one line per expression")
    args = parser.parse_args()

    examples = {rtype: json.loads((ROOT / "fixtures" / "profiles" / f"{name}.json").read_text(encoding="utf-8"))
                for rtype, name in EXAMPLES.items()}
    adt = adt_resources()
    examples.update({r["resourceType"]: r for r in adt if r["resourceType"] == "Provenance"})

    resources = [examples[t] for t in EXAMPLES] + adt

    def workload(objects: tuple) -> None:
        validator, registry, topics = objects
        for r in resources:
            validator.issues(copy.deepcopy(r), r["resourceType"])
            index_resource(registry, r["resourceType"], r)
            topics.fired(r["resourceType"], "create", None, r)
            topics.fired(r["resourceType"], "update", r, r)
    calls = recorded_calls(workload)
    expressions = gateway_expressions()
    old = {(e.expression, id(e.model)): fhirpathpy.compile(e.expression, e.model) for e in expressions}
    new = {(e.expression, id(e.model)): gateway.fhirpath.compile(e.expression, e.model) for e in expressions}
    native = sum(c.native for c in new.values())
    print(f"1. the evaluations validating, indexing and triggering on {len(resources)} resources (the "
          f"fixtures/profiles examples and an ADT A01+ZLU's three) make: {len(calls)} evaluations of "
          f"{len({(c[1], id(c[2])) for c in calls})} expressions; {native} of the gateway's {len(new)} expressions compile natively")
    groups: dict[str, list] = defaultdict(list)
    for call in calls:
        groups[call[0]].append(call)
        if args.verbose:
            groups[f"  {call[1][:80]}"].append(call)
    print(f"   {'class':84s} {'calls':>5s} {'fhirpathpy':>11s} {'native':>9s} {'speed-up':>8s}")
    for label, group in sorted(groups.items(), key=lambda kv: (kv[1][0][0], kv[0].startswith(" "))):
        before = after = float("inf")
        for _ in range(args.rounds):
            before = min(before, cpu_us(lambda: replay(group, old), 1, 0.02))
            after = min(after, cpu_us(lambda: replay(group, new), 1, 0.02))
        print(f"   {label:84s} {len(group):5d} {before / len(group):8.1f} µs {after / len(group):6.2f} µs "
              f"{before / after:7.0f}x")

    print("\n2. whole steps (µs of CPU; before = the same objects built with fhirpathpy.compile)")
    old_objects, new_objects = built(True), built(False)
    steps: dict[str, Callable[[tuple], Callable[[], Any]]] = {}
    for rtype in ("Encounter", "Patient", "Task"):
        resource = examples[rtype]
        steps[f"validate {rtype} ({EXAMPLES[rtype]})"] = \
            lambda objs, r=resource, t=rtype: (lambda: objs[0].issues(copy.deepcopy(r), t))
    steps["ADT A01+ZLU: validate, index, triggers (3 resources)"] = lambda objs: (lambda: [
        (objs[0].issues(copy.deepcopy(r), r["resourceType"]), index_resource(objs[1], r["resourceType"], r),
         objs[2].fired(r["resourceType"], "create", None, r)) for r in adt])
    print(f"   {'step':58s} {'before':>9s} {'after':>9s} {'speed-up':>9s}")
    for label, make in steps.items():
        before_fn, after_fn = make(old_objects), make(new_objects)
        before = after = float("inf")
        for _ in range(args.rounds):  # alternately, so that a busy spell hits both
            before = min(before, cpu_us(before_fn, 1))
            after = min(after, cpu_us(after_fn, 1))
        print(f"   {label:58s} {before:9.0f} {after:9.0f} {before / after:8.1f}x")
    with mock.patch.object(gateway.fhirpath, "compile", lambda expression, model=None: lambda r, v=None: [True]):
        floor = Validator.load(REPO_PROFILES)
    encounter = examples["Encounter"]
    no_fhirpath = min(cpu_us(lambda: floor.issues(copy.deepcopy(encounter), "Encounter"), 1) for _ in range(args.rounds))
    print(f"   {'validate Encounter, FHIRPath as a constant (floor)':58s} {no_fhirpath:9.0f} "
          f"{no_fhirpath:9.0f}   (fhir.resources and the profile rules: no FHIRPath engine removes it)")
    print("\n(µs of CPU of this process, one core; each validation includes a deepcopy of the resource, "
          f"{cpu_us(lambda: copy.deepcopy(examples['Encounter']), args.rounds):.0f} µs for the Encounter)")


if __name__ == "__main__":
    main()
