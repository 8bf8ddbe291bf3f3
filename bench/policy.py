"""What the access policy costs (DICAH in the data layer): read by id and ITI-67 search of
DocumentReferences as professionals (whose every query carries the policy's predicates) against
the same requests by a system client (no predicate), at ``--docs`` documents.

Starts ``carnet serve --workers 2`` on a fresh data folder (or PostgreSQL database), then seeds in
process, through the same router and store the server uses: ``--patients`` patients with qualified
identities (INSi check and ID check), a physician and a nurse in every patient's care team, and
``--docs`` DocumentReferences spread over the patients (random J07 types, one in ten ``MASQUE_PS``;
metadata only, through the store, so that seeding 100k takes minutes rather than the publish path's
hours). Tokens are issued by the server's own issuer. Measured with wrk at 1 connection (latency)
and at ``--connections`` (throughput): searches on the same sampled patients for every principal,
reads of documents each principal may see (a hidden one answers 404, another cost). The principals
take turns in ``--rounds`` short runs (the first one rotating), and a ratio is the median of the
rounds' ratios, each taken between runs a few seconds apart: on this shared machine a single run per
principal drifted by more than the effect measured.

    .venv/bin/python bench/policy.py                     # sqlite, 100k documents
    .venv/bin/python bench/policy.py --db postgres
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LUA, carnet_server, log, machine, ratio, refresh_statistics, save, workdir, wrk

from carnet import demo
from carnet.auth.issuer import TokenIssuer
from carnet.auth.principal import Kind, Principal
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.directory import keys
from carnet.fhir import jsonio
from carnet.fhir.router import FhirRequest
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import IdentityStatus, Traits
from carnet.policy.matrix import load_habilitations
from carnet.wiring import build_router

TARGET_RATIO = 1.2
TYPES = ["11490-0", "11502-2", "18748-4", "57833-6", "87273-9", "11488-4", "34133-9", "60591-5"]
MASQUE = {"system": "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                    "TRE-A07-StatutVisibiliteDocument", "code": "MASQUE_PS"}
RPPS = "urn:oid:1.2.250.1.71.4.2.1"


def _call(router: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    resp = router.handle(FhirRequest(method, path, [], {}, jsonio.dumps(body) if body is not None else None),
                         Principal.system())
    if resp.status not in (200, 201):
        raise RuntimeError(f"{method} {path}: {resp.status} {resp.json_bytes()[:400]!r}")
    return dict(jsonio.loads(resp.json_bytes()))


def _bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def seed(settings: Settings, patients: int, docs: int, rng: random.Random) -> dict[str, Any]:
    engine = make_engine(settings)
    router = build_router(settings, engine)
    t0 = time.monotonic()
    identities, bodies = [], []
    for i in range(patients):
        female = rng.random() < 0.5
        born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 25000))
        insee = demo.CITIES[(i // 999) % len(demo.CITIES)][1]  # (commune, order) distinct per patient
        first13 = f"{2 if female else 1}{born.year % 100:02d}{born.month:02d}{insee}{i % 999 + 1:03d}"
        matricule = nir.make_matricule(first13)
        family = f"BENCH{i:06d}"
        traits = Traits(family, ("CAMILLE",), born, "female" if female else "male", insee)
        bodies.append(insfhir.build_patient(traits, matricule=matricule, oid=nir.OID_INS_NIR_DEMO,
                                            status=IdentityStatus.QUAL))
        identities.append({"matricule": matricule, "oid": nir.OID_INS_NIR_DEMO, "traits": {
            "birth_family_name": family, "birth_given_names": ["CAMILLE"], "birth_date": born.isoformat(),
            "sex": traits.sex, "birthplace_code": insee}})
    insi = settings.data_dir / "insi" / "identities.json"
    insi.parent.mkdir(parents=True, exist_ok=True)
    insi.write_text(json.dumps({"identities": identities}), encoding="utf-8")
    pids: list[str] = []
    for start in range(0, patients, 250):
        entries = [{"resource": b, "request": {"method": "POST", "url": "Patient"}}
                   for b in bodies[start:start + 250]]
        out = _call(router, "POST", "", _bundle(entries))
        pids += [e["response"]["location"].split("/")[1] for e in out["entry"]]
    for pid in pids:
        _call(router, "POST", f"Patient/{pid}/$ins-verify")
        _call(router, "POST", f"Patient/{pid}/$identity-check",
              {"resourceType": "Parameters", "parameter": [{"name": "documentType", "valueCode": "PA"}]})
    log(f"  {patients:,} qualified patients in {time.monotonic() - t0:.0f} s")
    pros = {}
    for name, profession in (("physician", "10"), ("nurse", "60")):
        rpps = keys.make_rpps(f"1{rng.randrange(10**9):09d}")
        body = {"resourceType": "Practitioner", "active": True,
                "identifier": [{"system": RPPS, "value": "8" + rpps}],
                "name": [{"family": name.upper(), "given": ["Bench"]}]}
        pros[name] = (_call(router, "POST", "Practitioner", body)["id"], "8" + rpps, profession)
    members = [{"member": {"reference": f"Practitioner/{p[0]}"}} for p in pros.values()]
    for start in range(0, patients, 250):
        _call(router, "POST", "", _bundle([{"resource": {
            "resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{pid}"},
            "participant": members}, "request": {"method": "POST", "url": "CareTeam"}}
            for pid in pids[start:start + 250]]))
    log(f"  care teams in {time.monotonic() - t0:.0f} s")
    doc_ids: list[tuple[str, str]] = []
    system = Principal.system()
    batch = 1000
    for start in range(0, docs, batch):
        with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            repo = router.repository(conn, system)
            for n in range(start, min(docs, start + batch)):
                pid = pids[n % len(pids)]
                labels = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "N"}]}]
                masked = rng.random() < 0.1
                if masked:
                    labels.append({"coding": [MASQUE]})
                doc_type = rng.choice(TYPES)
                when = date(2020, 1, 1) + timedelta(days=rng.randrange(0, 2000))
                stored = repo.create({
                    "resourceType": "DocumentReference", "status": "current",
                    "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
                    "type": {"coding": [{"system": "http://loinc.org", "code": doc_type}]},
                    "subject": {"reference": f"Patient/{pid}"}, "date": f"{when.isoformat()}T10:00:00Z",
                    "securityLabel": labels,
                    "content": [{"attachment": {"contentType": "application/pdf", "size": 1000 + n % 5000,
                                                "title": "Compte rendu"}}]})
                doc_ids.append((stored.id, pid, doc_type, masked))
        if (start // batch) % 20 == 0:
            log(f"  {start + batch:,} documents in {time.monotonic() - t0:.0f} s")
    engine.dispose()
    return {"patients": pids, "docs": doc_ids, "pros": pros, "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--duration", type=float, default=20.0,
                    help="seconds of measurement per principal and query, split over the rounds")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds interleaving the principals; a ratio is the median of the rounds' ratios")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    name = args.name or f"policy-{args.db}"
    out: dict[str, Any] = {"benchmark": "policy", "db": args.db, "machine": machine(), "settings": vars(args),
                           "target_p50_ratio": TARGET_RATIO}
    rng = random.Random(5)
    with workdir() as work, carnet_server(args.db, work) as srv:
        settings = Settings(data_dir=work / "data", database_url=srv.env.get("CARNET_DATABASE_URL"),
                            port=srv.port)
        log(f"seeding {args.patients:,} patients and {args.docs:,} documents")
        world = seed(settings, args.patients, args.docs, rng)
        out["seed_seconds"] = world["seconds"]
        out["statistics"] = refresh_statistics(srv)
        engine = make_engine(settings)
        issuer = TokenIssuer(settings, engine)
        tokens = {"system": issuer.issue(Principal.system(), 3600)}
        for who, (rid, idnat, profession) in world["pros"].items():
            tokens[who] = issuer.issue(Principal(
                Kind.PRACTITIONER, idnat, frozenset({"user/*.cruds"}), profession=profession,
                fhir_user=f"Practitioner/{rid}", strong_auth=True), 3600)
        engine.dispose()
        patients = rng.sample(world["patients"], min(args.sample, len(world["patients"])))
        matrix = load_habilitations(None)
        professions = {"system": None, **{who: p[2] for who, p in world["pros"].items()}}

        def readable(who: str) -> list[str]:  # each principal reads documents it may see
            seen = [d for d, _, t, masked in world["docs"] if who == "system" or (
                not masked and matrix.may_read(professions[who], t))]
            return [f"/fhir/DocumentReference/{d}" for d in random.Random(who).sample(
                seen, min(args.sample, len(seen)))]

        queries: dict[str, Any] = {
            "read": {who: readable(who) for who in tokens},
            "iti67_patient": [f"/fhir/DocumentReference?patient={p}&status=current" for p in patients],
            "iti67_patient_type": [f"/fhir/DocumentReference?patient={p}&status=current&type=http://loinc.org|"
                                   f"{rng.choice(TYPES)}" for p in patients],
        }
        results: dict[str, Any] = {}
        for qname, paths in queries.items():
            for who in tokens:
                mine = paths[who] if isinstance(paths, dict) else paths
                (work / f"{qname}-{who}.txt").write_text("\n".join(mine) + "\n")
            for conns in (1, args.connections):
                kw: dict[str, Any] = {"connections": conns, "threads": min(2, conns)}
                wargs = {who: [str(work / f"{qname}-{who}.txt"), f"Bearer {token}"]
                         for who, token in tokens.items()}
                for who in tokens:
                    wrk(srv.base, LUA / "paths.lua", duration=args.warmup, args=wargs[who], **kw)
                rounds: dict[str, list[dict[str, Any]]] = {who: [] for who in tokens}
                order = list(tokens)
                for r in range(args.rounds):  # principals interleaved, the first one rotating
                    for who in order[r % len(order):] + order[:r % len(order)]:
                        res = wrk(srv.base, LUA / "paths.lua", duration=args.duration / args.rounds,
                                  args=wargs[who], server=srv, **kw)
                        rounds[who].append(res.as_dict())
                for who, runs in rounds.items():
                    d = {k: statistics.median(run[k] for run in runs)
                         for k in ("p50_ms", "p90_ms", "p99_ms", "rps")}
                    d["errors_status"] = sum(run["errors_status"] for run in runs)
                    d["errors_socket"] = sum(run["errors_socket"] for run in runs)
                    d["rounds"] = runs
                    results[f"{qname}/{conns}/{who}"] = d
                    log(f"  {qname:<20} c={conns:<3} {who:<9} p50 {d['p50_ms']:7.2f} ms  "
                        f"p99 {d['p99_ms']:7.2f} ms  {d['rps']:8.1f} req/s  non-2xx {d['errors_status']}"
                        f"  (medians of {args.rounds} rounds)")
        for qname in queries:
            for conns in (1, args.connections):
                base = results[f"{qname}/{conns}/system"]
                for who in world["pros"]:
                    d = results[f"{qname}/{conns}/{who}"]
                    per_round = [ratio(mine["p50_ms"], theirs["p50_ms"])
                                 for mine, theirs in zip(d["rounds"], base["rounds"], strict=True)]
                    d["p50_ratio_per_round"] = per_round
                    d["p50_ratio_to_system"] = round(statistics.median(per_round), 4)
                    d["rps_ratio_to_system"] = ratio(d["rps"], base["rps"])
                    d["target_met"] = conns == 1 and d["p50_ratio_to_system"] <= TARGET_RATIO
        out["results"] = results
        out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        path = save(name, out)
    print(f"\nPolicy overhead ({args.db}, {args.docs:,} documents, {args.patients:,} patients)\n")
    print("| query | connections | principal | p50 ms | p99 ms | req/s | p50 ratio to system |")
    print("|---|---|---|---|---|---|---|")
    for key, d in results.items():
        qname, conns, who = key.split("/")
        print(f"| {qname} | {conns} | {who} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} | {d['rps']:.0f} | "
              f"{d.get('p50_ratio_to_system', 1.0):.2f} |")
    log(f"results in {path}")


if __name__ == "__main__":
    main()
