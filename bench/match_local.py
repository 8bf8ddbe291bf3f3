"""``Patient/$match`` timed in process (no HTTP), for quick checks of the matching path.

Loads N synthetic FR Core Patient INS resources (the same generator as bench/identity.py) through
the FHIR router into a fresh SQLite database, then times ``$match`` with hospital-desk variants of
a sample of them (accents, a typo, a day off).

    .venv/bin/python bench/match_local.py 20000
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity import _as_typed, _traits

from carnet.auth.principal import Principal
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import analyze, upgrade
from carnet.fhir import jsonio
from carnet.fhir.router import FhirRequest
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import IdentityStatus
from carnet.wiring import build_router


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as d:
        settings = Settings(data_dir=Path(d))
        engine = make_engine(settings)
        upgrade(engine)
        router = build_router(settings, engine)
        principal = Principal.system()
        rng = random.Random(5)
        kept = []
        for _ in range(max(1, n // 500)):
            entries = []
            for k in range(500):
                traits, matricule = _traits(rng)
                p = insfhir.build_patient(traits, matricule=matricule, oid=nir.OID_INS_NIR_TEST,
                                          status=IdentityStatus.PROV)
                entries.append({"resource": p, "request": {"method": "POST", "url": "Patient"}})
                if k == 0:
                    kept.append(p)
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            resp = router.handle(FhirRequest("POST", "", [], {}, jsonio.dumps(bundle)), principal)
            assert resp.status == 200, resp.json_bytes()[:300]
        analyze(engine)
        bodies = [jsonio.dumps({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": _as_typed(p, rng)}, {"name": "count", "valueInteger": 5}]})
            for p in kept]
        headers = {"content-type": "application/fhir+json"}
        t = time.perf_counter()
        for body in bodies:
            resp = router.handle(FhirRequest("POST", "Patient/$match", [], headers, body), principal)
            assert resp.status == 200, resp.json_bytes()[:300]
        took = (time.perf_counter() - t) / len(bodies) * 1e3
        print(f"{took:.2f} ms per $match at {n:,} patients (mean of {len(bodies)})")
        engine.dispose()


if __name__ == "__main__":
    main()
