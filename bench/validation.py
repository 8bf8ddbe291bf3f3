"""What validation costs per resource: the R4 structural validator (carnet.fhir.validation) on the
benchmark bodies (~2 KB Patient and Observation) and on every R4 spec example in tests/fixtures.

    .venv/bin/python bench/validation.py

Single-threaded, in-process; reports microseconds per resource and per KB next to the cost of
parsing the same bytes (orjson via carnet.fhir.jsonio), the floor any server pays.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import log, machine, save
from data import observation_2k, patient_2k

from carnet.fhir import jsonio
from carnet.fhir.validation import validate

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "tests" / "fixtures" / "fhir-r4-examples"


def per_resource(bodies: list[bytes], repeat: int = 3) -> dict[str, Any]:
    parsed = [jsonio.loads(b) for b in bodies]
    best_parse = best_validate = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for b in bodies:
            jsonio.loads(b)
        best_parse = min(best_parse, time.perf_counter() - t)
        t = time.perf_counter()
        for r in parsed:
            validate(r)
        best_validate = min(best_validate, time.perf_counter() - t)
    kb = sum(len(b) for b in bodies) / 1024
    n = len(bodies)
    return {"resources": n, "mean_bytes": round(kb * 1024 / n),
            "parse_us": round(best_parse / n * 1e6, 1), "validate_us": round(best_validate / n * 1e6, 1),
            "validate_us_per_kb": round(best_validate / kb * 1e6, 1),
            "validations_per_s_one_core": round(n / best_validate)}


def main() -> None:
    rng = random.Random(7)
    sets = {
        "patient_2k": [jsonio.dumps(patient_2k(rng)) for _ in range(2000)],
        "observation_2k": [jsonio.dumps(observation_2k(rng, "Patient/x")) for _ in range(2000)],
        "r4_examples": [p.read_bytes() for p in sorted(EXAMPLES.rglob("*.json"))
                        if b'"resourceType": "Bundle"' not in p.read_bytes()[:200]],
    }
    out: dict[str, Any] = {"benchmark": "validation", "machine": machine(), "results": {}}
    for name, bodies in sets.items():
        res = per_resource(bodies)
        out["results"][name] = res
        log(f"{name:<16} {res['resources']:>5} resources, {res['mean_bytes']:>6} B: "
            f"parse {res['parse_us']} µs, "
            f"validate {res['validate_us']} µs ({res['validate_us_per_kb']} µs/KB, "
            f"{res['validations_per_s_one_core']:,}/s on one core)")
    save("validation", out)


if __name__ == "__main__":
    main()
