"""The write path timed in process (no HTTP): create and update of ~2 KB Patients and Observations
through the FHIR router, as the CRUD mix sends them, on a fresh SQLite (or PostgreSQL) database.

Reports per operation the mean wall time, the SQL statements run per request (counted at the
driver) and, with ``--profile``, the functions where the time goes (cProfile, cumulative). A
quick, repeatable A/B check of write-path changes: the HTTP benchmarks on this shared machine
drift more from run to run than most changes move them.

    .venv/bin/python bench/write_local.py --n 500
    .venv/bin/python bench/write_local.py --n 500 --db postgres --profile create_patient
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_calibration
from data import observation_2k, patient_2k
from sqlalchemy import event

from carnet.auth.principal import Principal
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import upgrade
from carnet.fhir import jsonio
from carnet.fhir.router import FhirRequest
from carnet.wiring import build_router

HEADERS = {"content-type": "application/fhir+json"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="requests per operation")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--profile", default="", help="operation to profile (cProfile, top 30 cumulative)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env: dict[str, Any] = {"data_dir": Path(d)}
        if args.db == "postgres":
            from common import PG_URL, pg_create

            pg_create("carnet_write_local")
            env["database_url"] = PG_URL.format(db="carnet_write_local")
        settings = Settings(**env)
        engine = make_engine(settings)
        upgrade(engine)
        router = build_router(settings, engine)
        principal = Principal.system()
        statements = [0]

        def count(*_: Any) -> None:
            statements[0] += 1

        event.listen(engine, "before_cursor_execute", count)
        rng = random.Random(3)

        def post(path: str, body: dict[str, Any], method: str = "POST") -> dict[str, Any]:
            resp = router.handle(FhirRequest(method, path, [], HEADERS, jsonio.dumps(body)), principal)
            assert resp.status in (200, 201), resp.json_bytes()[:300]
            return jsonio.loads(resp.json_bytes())  # type: ignore[no-any-return]

        patients = [post("Patient", patient_2k(rng))["id"] for _ in range(50)]
        observations = [post("Observation", observation_2k(rng, f"Patient/{p}"))["id"] for p in patients]

        def make(op: str) -> list[Callable[[], Any]]:
            calls: list[Callable[[], Any]] = []
            for i in range(args.n):
                if op == "create_patient":
                    b = patient_2k(rng)
                    calls.append(lambda b=b: post("Patient", b))
                elif op == "create_observation":
                    b = observation_2k(rng, f"Patient/{patients[i % len(patients)]}")
                    calls.append(lambda b=b: post("Observation", b))
                elif op == "update_patient":
                    rid = patients[i % len(patients)]
                    b = {**patient_2k(rng), "id": rid}
                    calls.append(lambda b=b, rid=rid: post(f"Patient/{rid}", b, "PUT"))
                else:
                    rid = observations[i % len(observations)]
                    b = {**observation_2k(rng, f"Patient/{patients[i % len(patients)]}"), "id": rid}
                    calls.append(lambda b=b, rid=rid: post(f"Observation/{rid}", b, "PUT"))
            return calls

        print(f"cpu calibration {cpu_calibration()} s; {args.db}; {args.n} requests per operation")
        for op in ("create_patient", "create_observation", "update_patient", "update_observation"):
            calls = make(op)
            statements[0] = 0
            prof = cProfile.Profile() if op == args.profile else None
            t = time.perf_counter()
            if prof:
                prof.enable()
            for c in calls:
                c()
            if prof:
                prof.disable()
            took = (time.perf_counter() - t) / len(calls) * 1e3
            print(f"{op:<20} {took:6.2f} ms/request  {statements[0] / len(calls):5.1f} statements/request")
            if prof:
                pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        engine.dispose()


if __name__ == "__main__":
    main()
