"""Identity matching and directory search at national-directory sizes (issue: INS and directory).

Starts ``carnet serve --workers 2`` on a fresh data folder (or PostgreSQL database), loads
``--patients`` FR Core Patient INS resources (test INS, random French traits, 500 per transaction
Bundle) and ``--practitioners`` Practitioners each with a PractitionerRole (profession, RPPS,
PS_IdNat), then measures with wrk, next to the same run's bare-Starlette ceiling:

- ``POST Patient/$match`` with the traits of sampled patients, as typed at a hospital desk (mixed
  case and accents, one variant in four with a typo in the first given name or a day off in the
  birth date);
- directory searches: ``Practitioner?name=`` (accent-insensitive prefix), ``Practitioner?identifier=``
  (RPPS), ``PractitionerRole?role=<profession>&practitioner.name=`` (a chain).

    .venv/bin/python bench/identity.py                       # 1M patients, 500k practitioners
    .venv/bin/python bench/identity.py --patients 100000 --practitioners 50000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LUA, carnet_server, log, machine, measure_ceiling, ratio, save, workdir, wrk
from data import Loader, q

from carnet import demo
from carnet.directory import fhir as dfhir
from carnet.directory import keys
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import IdentityStatus, Traits

TARGET_P99_MS = 20.0
PROFESSIONS = ["10", "21", "40", "50", "60", "70", "80"]
ACCENTED = {"Lea": "Léa", "Chloe": "Chloé", "Ines": "Inès", "Emilie": "Émilie", "Helene": "Hélène"}


def _traits(rng: random.Random) -> tuple[Traits, str]:
    female = rng.random() < 0.5
    given = tuple(rng.choice(demo.GIVEN_F if female else demo.GIVEN_M) for _ in range(rng.randint(1, 3)))
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 34000))
    _, insee, _ = rng.choice(demo.CITIES)
    first13 = f"{2 if female else 1}{born.year % 100:02d}{born.month:02d}{insee}{rng.randrange(1, 1000):03d}"
    family = rng.choice(demo.FAMILY) + ("-" + rng.choice(demo.FAMILY) if rng.random() < 0.15 else "")
    traits = Traits(demo_people_upper(family), tuple(demo_people_upper(g) for g in given), born,
                    "female" if female else "male", insee)
    return traits, nir.make_matricule(first13)


def demo_people_upper(text: str) -> str:
    from carnet.demo_people import ins_text

    return ins_text(text)


class IdentityLoader(Loader):
    """Patients (FR Core Patient INS) or practitioners with their role, in transaction Bundles."""

    def __init__(self, base: str, kind: str, **kw: Any) -> None:
        super().__init__(base, **kw)
        self.kind = kind
        self.kept: list[dict[str, Any]] = []

    def bundles(self, count: int, stage: int) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed + 7919 * stage + (1 if self.kind == "practitioner" else 0))
        entries: list[dict[str, Any]] = []
        for n in range(count):
            if self.kind == "patient":
                traits, matricule = _traits(rng)
                p = insfhir.build_patient(traits, matricule=matricule, oid=nir.OID_INS_NIR_TEST,
                                          status=IdentityStatus.PROV)
                entries.append({"resource": p, "request": {"method": "POST", "url": "Patient"}})
            else:
                rpps = keys.make_rpps(f"1{rng.randrange(10**9):09d}")
                ps = keys.parse_ps_idnat("8" + rpps)
                profession = rng.choice(PROFESSIONS)
                prac = dfhir.practitioner(ps, family=rng.choice(demo.FAMILY).upper(),
                                          given=rng.choice(demo.GIVEN_F + demo.GIVEN_M),
                                          professions=[profession])
                role = dfhir.practitioner_role(ps, profession)
                for r in (prac, role):
                    entries.append({"resource": r, "request": {"method": "PUT",
                                                               "url": f"{r['resourceType']}/{r['id']}"}})
            if (n + 1) % self.per_bundle == 0 or n == count - 1:
                yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}
                entries = []

    def _keep(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        for req_e in request["entry"]:
            res = req_e["resource"]
            if res["resourceType"] not in ("Patient", "Practitioner"):
                continue
            with self._lock:  # reservoir sample of what was loaded
                self.seen += 1
                if len(self.kept) < self.sample_size:
                    self.kept.append(res)
                else:
                    j = self.rng.randrange(self.seen)
                    if j < self.sample_size:
                        self.kept[j] = res


def _as_typed(patient: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The traits as a hospital desk types them: title case, accents, sometimes a typo or a day off."""
    t = insfhir.read_traits(patient)
    given = [g.title() for g in t.birth_given_names]
    given = [ACCENTED.get(g, g) for g in given]
    born = t.birth_date
    variant = rng.randrange(4)
    if variant == 1 and len(given[0]) > 3:
        given[0] = given[0][:-2] + given[0][-1] + given[0][-2]  # swapped letters
    elif variant == 2:
        born = born + timedelta(days=1)
    return {"resourceType": "Patient", "name": [{"family": t.birth_family_name.title(), "given": given}],
            "gender": t.sex, "birthDate": born.isoformat()}


def match_bodies(work: Path, patients: list[dict[str, Any]], rng: random.Random) -> Path:
    folder = work / "match"
    folder.mkdir(exist_ok=True)
    names = []
    for i, p in enumerate(patients):
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": _as_typed(p, rng)}, {"name": "count", "valueInteger": 5}]}
        f = folder / f"{i}.json"
        f.write_bytes(orjson.dumps(body))
        names.append(str(f))
    listing = work / "match-files.txt"
    listing.write_text("\n".join(names) + "\n")
    return listing


def directory_paths(practitioners: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"practitioner_name": [], "practitioner_rpps": [], "role_profession_name": []}
    system = dfhir.profession_system()
    for p in practitioners:
        name = p["name"][0]
        rpps = next(i["value"] for i in p["identifier"] if i["system"] == dfhir.RPPS_SYSTEM)
        profession = dfhir.professions_of(p)[0]
        given = ACCENTED.get(name["given"][0], name["given"][0])
        out["practitioner_name"].append(f"/fhir/Practitioner?name={q(given.lower())}&family={q(name['family'])}")
        out["practitioner_rpps"].append(f"/fhir/Practitioner?identifier={q(dfhir.RPPS_SYSTEM + '|' + rpps)}")
        out["role_profession_name"].append(
            f"/fhir/PractitionerRole?role={q(system + '|' + profession)}"
            f"&practitioner.family={q(name['family'].title())}&practitioner.given={q(name['given'][0])}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--practitioners", type=int, default=500_000)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=1, help="wrk connections for the latency runs")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients loading Bundles")
    ap.add_argument("--sample", type=int, default=500)
    ap.add_argument("--name", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the data folder for later runs")
    args = ap.parse_args()
    name = args.name or f"identity-{args.db}"
    out: dict[str, Any] = {"benchmark": "identity", "db": args.db, "machine": machine(),
                           "settings": {k: v for k, v in vars(args).items() if k != "keep"},
                           "target_p99_ms": TARGET_P99_MS}
    rng = random.Random(11)
    with workdir(args.keep) as work, carnet_server(args.db, work) as srv:
        loads: dict[str, Any] = {}
        samples: dict[str, list[dict[str, Any]]] = {}
        for kind, count, per in (("patient", args.patients, 500), ("practitioner", args.practitioners, 250)):
            loader = IdentityLoader(srv.base, kind, clients=args.clients, per_bundle=per,
                                    sample_size=args.sample, disk=work)
            log(f"loading {count:,} {kind}s")
            stats = loader.load(count, server_cpu=srv.cpu_seconds)
            loads[kind] = stats.as_dict()
            log(f"loaded in {stats.seconds:,.0f} s ({loads[kind]['resources_per_s']:,} resources/s), "
                f"errors {stats.errors} {stats.first_error or ''}")
            if stats.errors or stats.aborted:
                out["loads"] = loads
                save(name, out)
                raise SystemExit(f"load failed: {stats.first_error or stats.aborted}")
            samples[kind] = loader.kept
        out["loads"] = loads
        ceiling = measure_ceiling(work, duration=args.duration, connections=args.connections,
                                  threads=min(2, args.connections))
        out["ceiling"] = ceiling["get"]
        kw: dict[str, Any] = {"connections": args.connections, "threads": min(2, args.connections)}
        results: dict[str, Any] = {}
        listing = match_bodies(work, samples["patient"], rng)
        runs: list[tuple[str, Path, list[str]]] = [("patient_match", LUA / "post_files.lua",
                                                    [str(listing), "/fhir/Patient/$match"])]
        for qname, plist in directory_paths(samples["practitioner"]).items():
            pfile = work / f"{qname}.txt"
            pfile.write_text("\n".join(plist) + "\n")
            runs.append((qname, LUA / "paths.lua", [str(pfile)]))
        for qname, script, wargs in runs:
            wrk(srv.base, script, duration=args.warmup, args=wargs, **kw)
            res = wrk(srv.base, script, duration=args.duration, args=wargs, server=srv, timeout="60s", **kw)
            d = res.as_dict()
            d["p50_ratio_to_ceiling"] = ratio(d["p50_ms"], ceiling["get"]["p50_ms"])
            d["target_met"] = d["p99_ms"] < TARGET_P99_MS and d["errors_status"] + d["errors_socket"] == 0
            results[qname] = d
            log(f"  {qname:<22} p50 {d['p50_ms']:7.2f} ms  p99 {d['p99_ms']:7.2f} ms  {d['rps']:8.1f} req/s  "
                f"non-2xx {d['errors_status']}")
        out["results"] = results
        out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        path = save(name, out)
    print(f"\nIdentity and directory ({args.db}, {args.patients:,} patients, {args.practitioners:,} "
          f"practitioners, wrk {args.connections} connection)\n")
    print("| query | p50 ms | p99 ms | req/s | target p99 < 20 ms |")
    print("|---|---|---|---|---|")
    for qname, d in results.items():
        print(f"| {qname} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} | {d['rps']:.0f} | "
              f"{'met' if d['target_met'] else 'not met'} |")
    print(f"| ceiling (bare GET) | {ceiling['get']['p50_ms']:.2f} | {ceiling['get']['p99_ms']:.2f} | "
          f"{ceiling['get']['rps']:.0f} | |")
    log(f"results in {path}")


if __name__ == "__main__":
    main()
