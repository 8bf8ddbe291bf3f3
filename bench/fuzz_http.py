"""The long run of the HTTP fuzzers: hostile FHIR requests on /fhir (tests/support/fhir_fuzz.py) and
schemathesis on /openapi.json (the endpoints outside /fhir), against a real ``carnet serve`` on a
fresh data folder, per database.

    .venv/bin/python bench/fuzz_http.py --db sqlite --fhir-examples 3000 --schemathesis-examples 50
    .venv/bin/python bench/fuzz_http.py --db postgres --fhir-examples 3000

Every example is run (no shrinking): what breaks the property — a 5xx, a 4xx that is not an
OperationOutcome with issue severity and code, no answer within the timeout — is counted and the
first request of each kind printed, so that it can be replayed and turned into a regression test
(tests/functional/test_fhir_hostile.py). Results in results/fuzz-http-<db>.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import carnet_server, log, machine, save, workdir

from tests.support.fhir_fuzz import FuzzRequest, fhir_requests, problems, seed, send

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def fuzz_fhir(base: str, examples: int, seed_value: int, timeout: float) -> dict[str, Any]:
    statuses: collections.Counter[str] = collections.Counter()
    found: dict[str, dict[str, str]] = {}
    failures = 0
    with httpx.Client(timeout=timeout) as client:
        seed(client, base)

        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(request=fhir_requests())
        def run(request: FuzzRequest) -> None:
            nonlocal failures
            try:
                response = send(client, base, request)
            except httpx.TimeoutException:
                statuses["timeout"] += 1
                failures += 1
                found.setdefault("timeout", {"problem": "no answer in time", "request": repr(request)[:3000]})
                return
            statuses[str(response.status_code)] += 1
            wrong = problems(request, response)
            if wrong:
                failures += 1
                key = re.sub(r"\d+", "N", wrong[0][:50])
                found.setdefault(key, {"problem": wrong[0][:1000], "request": repr(request)[:3000]})

        start = time.monotonic()
        hypothesis_seed(seed_value)(run)()
        seconds = time.monotonic() - start
    return {"examples": sum(statuses.values()), "seconds": round(seconds, 1), "statuses": dict(statuses),
            "failures": failures, "kinds": found}


def run_schemathesis(base: str, examples: int, work: Path) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe), "run", base + "/openapi.json", "--checks", CHECKS, "--mode", "positive",
           "--phases", "examples,coverage,fuzzing", "--max-examples", str(examples),
           "--generation-deterministic", "--request-timeout", "30", "--max-redirects", "0",
           "--workers", "2", "--no-color", "--warnings", "off"]
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - start
    out = done.stdout + done.stderr
    counts = re.search(r"(\d+) generated, (?:(\d+) passed|(\d+) found (\d+) unique failures)", out)
    failures = out[out.find("FAILURES"):out.find("SUMMARY")] if "FAILURES" in out else ""
    return {"exit": done.returncode, "seconds": round(seconds, 1),
            "generated": int(counts.group(1)) if counts else None,
            "passed": int(counts.group(2)) if counts and counts.group(2) else None,
            "failures": failures[:20000]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--fhir-examples", type=int, default=3000)
    parser.add_argument("--schemathesis-examples", type=int, default=50, help="0: no schemathesis run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds without an answer that count as a hang")
    args = parser.parse_args()
    info = machine()
    with workdir() as work, carnet_server(args.db, work, workers=1) as server:
        log(f"fuzzing /fhir on {args.db}: {args.fhir_examples} examples")
        fhir = fuzz_fhir(server.base, args.fhir_examples, args.seed, args.timeout)
        log(f"/fhir: {fhir['examples']} examples in {fhir['seconds']} s, {fhir['failures']} failing; "
            f"statuses {dict(sorted(fhir['statuses'].items()))}")
        for kind in fhir["kinds"].values():
            log(f"  {kind['problem'][:300]}\n    {kind['request'][:600]}")
        st: dict[str, Any] = {}
        if args.schemathesis_examples:
            log(f"schemathesis on /openapi.json: {args.schemathesis_examples} examples an operation")
            st = run_schemathesis(server.base, args.schemathesis_examples, work)
            log(f"schemathesis: exit {st['exit']}, {st['generated']} generated, {st['passed']} passed, "
                f"{st['seconds']} s")
            if st["failures"]:
                log(st["failures"][:5000])
        if fhir["failures"] or (st and st["exit"]):
            log("the server's log:\n" + server.log_tail(200))
    info["loadavg_at_end"] = os.getloadavg()
    path = save(f"fuzz-http-{args.db}", {"benchmark": "fuzz_http", "db": args.db, "machine": info,
                                         "settings": vars(args), "fhir": fhir, "schemathesis": st})
    log(f"saved {path}")
    if fhir["failures"] or (st and st["exit"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
