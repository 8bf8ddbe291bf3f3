"""The write path timed in process (no HTTP): create and update of ~2 KB Patients and Observations
through the FHIR router, as the CRUD mix sends them, on a fresh SQLite (or PostgreSQL) database.

Reports per operation the mean wall time (the fastest of ``--repeat`` runs), with ``--count`` the
SQL statements run per request (on SQLite counted by the driver, each row of an executemany) and,
with ``--profile``, the functions where the time goes (cProfile; ``SORT=tottime`` and ``TOP=N`` in
the environment change the listing). A quick, repeatable A/B check of write-path changes: the HTTP
benchmarks on this shared machine drift more from run to run than most changes move them.

    .venv/bin/python bench/write_local.py --n 500 --repeat 5
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
    ap.add_argument("--count", action="store_true",
                    help="count the SQL statements per request (slows the run: time it without)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each operation; the fastest is reported (the machine is shared)")
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

        if args.count and engine.dialect.name == "sqlite":
            # at the driver (statements run on its cursor too; each row of an executemany counts)
            event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.set_trace_callback(count))
            engine.dispose()
        elif args.count:  # PostgreSQL: those run through SQLAlchemy only
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
            took = float("inf")
            for _ in range(args.repeat):
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
                took = min(took, (time.perf_counter() - t) / len(calls) * 1e3)
            counted = f"  {statements[0] / len(calls):5.1f} statements/request" if args.count else ""
            print(f"{op:<20} {took:6.2f} ms/request{counted}")
            if prof:
                pstats.Stats(prof).sort_stats(__import__("os").environ.get("SORT","cumulative")).print_stats(int(__import__("os").environ.get("TOP","30")))
        engine.dispose()


if __name__ == "__main__":
    main()
