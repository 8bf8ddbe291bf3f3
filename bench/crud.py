"""CRUD mix on Patient and Observation (benchmark a), 64 concurrent connections, with wrk.

Starts ``carnet serve --workers 2`` on a fresh data folder (or a fresh PostgreSQL database), seeds
``--patients`` patients with 19 Observations each (transaction Bundles), then runs the mix with wrk
(bench/lua/crud.lua) for ``--duration`` seconds after a warm-up. The ceiling, a bare Starlette JSON
GET under the same uvicorn settings, is measured in the same run with the same generator and the
same number of connections.

The mix (20 slots walked round robin per wrk thread; ~2 KB bodies):
  20 % create   10 % POST Patient, 10 % POST Observation (subject: a seeded patient)
  50 % read     20 % GET Patient/<id>, 30 % GET Observation/<id> (half seeded, half created in the run)
  10 % update    5 % PUT Patient/<id>, 5 % PUT Observation/<id> (seeded resources)
  20 % search   10 % Observation?subject=Patient/<id>&code=http://loinc.org|29463-7,
                 5 % Patient?family=<F>&birthdate=<D>, 5 % Patient?identifier=<INS system>|<INS>

    .venv/bin/python bench/crud.py --db sqlite
    .venv/bin/python bench/crud.py --db postgres --breakdown --profile 20
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    LUA,
    carnet_server,
    log,
    machine,
    measure_ceiling,
    ratio,
    refresh_statistics,
    save,
    sqlite_files,
    workdir,
    wrk,
)
from data import Loader, lua_list, lua_str, observation_2k, patient_2k, q

from carnet import demo

MIX = "rp,ro,cp,ro,so,rp,ro,up,co,ro,sn,rp,ro,cp,si,rp,uo,ro,co,so"
BREAKDOWN = {"create": "cp,co", "read": "rp,ro,ro", "update": "up,uo", "search": "so,so,sn,si",
             "read_patient": "rp", "read_observation": "ro", "create_patient": "cp",
             "create_observation": "co", "update_patient": "up", "update_observation": "uo",
             "search_obs_subject_code": "so", "search_patient_family_birthdate": "sn",
             "search_patient_identifier": "si"}
TARGET_RPS, TARGET_P99_MS = 1500, 100


def write_lua_data(path: Path, loader: Loader, seed: int = 7) -> dict[str, int]:
    rng = random.Random(seed)
    patients = [p.id for p in loader.sample]
    observations, obs_subject = [], []
    for p in loader.sample:
        for o in p.observations:
            observations.append(o)
            obs_subject.append(p.id)
    patient_bodies, patient_put, obs_bodies, obs_put = [], [], [], []
    for _ in range(100):
        pb = patient_2k(rng)
        patient_bodies.append(orjson.dumps(pb).decode())
        patient_put.append(orjson.dumps({"resourceType": "Patient", "id": "@@I@@", **{
            k: v for k, v in pb.items() if k != "resourceType"}}).decode())
        performer = rng.choice(loader.performers) if loader.performers else None
        ob = observation_2k(rng, "Patient/@@P@@", performer)
        obs_bodies.append(orjson.dumps(ob).decode())
        obs_put.append(orjson.dumps({"resourceType": "Observation", "id": "@@I@@", **{
            k: v for k, v in ob.items() if k != "resourceType"}}).decode())
    s = loader.sample
    search_obs = [f"/fhir/Observation?subject=Patient%2F{p.id}&code={q(demo.LOINC + '|29463-7')}" for p in s]
    search_name = [f"/fhir/Patient?family={q(p.family)}&birthdate={p.birthdate}" for p in s]
    search_ident = [f"/fhir/Patient?identifier={q(demo.INS_TEST_OID + '|' + p.ins)}" for p in s]
    parts = [
        f"mix = {lua_str(MIX)}",
        f"patients = {lua_list(patients)}",
        f"observations = {lua_list(observations)}",
        f"obs_subject = {lua_list(obs_subject)}",
        f"patient_bodies = {lua_list(patient_bodies)}",
        f"patient_put = {lua_list(patient_put)}",
        f"obs_bodies = {lua_list(obs_bodies)}",
        f"obs_put = {lua_list(obs_put)}",
        f"search_obs = {lua_list(search_obs)}",
        f"search_name = {lua_list(search_name)}",
        f"search_ident = {lua_list(search_ident)}",
    ]
    path.write_text("return {\n" + ",\n".join(parts) + "\n}\n")
    return {"patients": len(patients), "observations": len(observations),
            "patient_body_bytes": sum(map(len, patient_bodies)) // len(patient_bodies),
            "observation_body_bytes": sum(map(len, obs_bodies)) // len(obs_bodies)}


def run_profile(server: Any, seconds: float, out_raw: Path) -> subprocess.Popen[bytes]:
    """py-spy on the uvicorn master and its workers, sampling while the mix runs."""
    spy = Path(sys.executable).parent / "py-spy"
    cmd = [str(spy), "record", "--pid", str(server.sid), "--subprocesses", "--format", "raw",
           "--rate", "200", "--duration", str(int(seconds)), "--nonblocking", "-o", str(out_raw)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measured mix")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--patients", type=int, default=1000,
                    help="patients seeded before the run (x20 resources)")
    ap.add_argument("--breakdown", action="store_true", help="also run each operation alone (10 s each)")
    ap.add_argument("--breakdown-duration", type=float, default=10.0)
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="after the measured runs, profile the server with py-spy for SECONDS per op set")
    ap.add_argument("--profile-ops", default="mix,create,read,update,search",
                    help="op sets to profile: mix or names from the breakdown")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument("--name", default=None, help="results file name (default crud-<db>)")
    args = ap.parse_args()
    name = args.name or f"crud-{args.db}"
    out: dict[str, Any] = {"benchmark": "crud", "db": args.db, "machine": machine(),
                           "settings": {k: v for k, v in vars(args).items() if k != "keep"}, "mix": MIX}
    with workdir(args.keep) as work, carnet_server(args.db, work) as srv:
        loader = Loader(srv.base, keep_all=True)
        loader.directory()
        log(f"seeding {args.patients:,} patients ({args.patients * 20:,} resources)")
        seed = loader.load(args.patients, server_cpu=srv.cpu_seconds)
        out["seed_load"] = seed.as_dict()
        log(f"seeded at {seed.as_dict()['resources_per_s']:,} resources/s")
        out["statistics_refreshed"] = refresh_statistics(srv)
        data_file = work / "crud-data.lua"
        out["data"] = write_lua_data(data_file, loader)
        kw = {"connections": args.connections, "threads": args.threads}
        ceiling = measure_ceiling(work, duration=args.duration, **kw)["get"]
        out["ceiling"] = ceiling
        script = LUA / "crud.lua"
        wrk(srv.base, script, duration=args.warmup, args=[str(data_file)], **kw)
        res = wrk(srv.base, script, duration=args.duration, args=[str(data_file)], server=srv, **kw)
        mix = res.as_dict()
        mix["rps_ratio_to_ceiling"] = ratio(res.rps, ceiling["rps"])
        mix["target_met"] = res.rps >= TARGET_RPS and res.p99_ms < TARGET_P99_MS \
            and res.errors_status + res.errors_socket == 0
        out["mix_result"] = mix
        if args.db == "sqlite":
            out["sqlite_files_after_mix"] = sqlite_files(work)
        log(f"CRUD mix: {res.rps:,.0f} req/s (ceiling {ceiling['rps']:,.0f}, "
            f"ratio {mix['rps_ratio_to_ceiling']}), "
            f"p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms, non-2xx {res.errors_status}, "
            f"socket errors {res.errors_socket}, statuses {res.extra.get('statuses')}, "
            f"first error {res.extra.get('first_error')}, "
            f"server {mix.get('server_cores')} cores, wrk {mix['generator_cores']} cores")
        save(name, out)
        if args.breakdown:
            out["breakdown"] = {}
            for label, ops in BREAKDOWN.items():
                r = wrk(srv.base, script, duration=args.breakdown_duration, args=[str(data_file), ops],
                        server=srv, **kw)
                out["breakdown"][label] = r.as_dict()
                log(f"  {label:<32} {r.rps:8,.0f} req/s  p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  "
                    f"non-2xx {r.errors_status}  server {r.as_dict().get('server_cores')} cores")
            save(name, out)
        if args.profile:
            out["profile"] = {}
            for label in args.profile_ops.split(","):
                ops = MIX if label == "mix" else BREAKDOWN[label]
                raw = BENCH / "profiles" / f"crud-{args.db}-{label}.txt"
                raw.parent.mkdir(exist_ok=True)
                srv.wait_idle()
                spy = run_profile(srv, args.profile, raw)
                result: dict[str, Any] = {}
                t = threading.Thread(target=lambda ops=ops, result=result: result.update(r=wrk(
                    srv.base, script, duration=args.profile + 2, args=[str(data_file), ops], **kw)))
                t.start()
                _, err = spy.communicate(timeout=args.profile + 300)
                t.join()
                log(f"py-spy {label}: {err.decode().strip().splitlines()[-1] if err else ''}")
                from profile_summary import summarise

                out["profile"][label] = {"raw": str(raw.relative_to(BENCH.parent)),
                                         "rps_while_profiling": result["r"].rps, **summarise(raw)}
                save(name, out)
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print_table(out)
    log(f"results in {path}")


def print_table(out: dict[str, Any]) -> None:
    m, c = out["mix_result"], out["ceiling"]
    print(f"\nCRUD mix ({out['db']}, {out['settings']['connections']} connections, "
          f"{out['settings']['duration']:g} s, {out['data']['patients']:,} seeded patients)\n")
    print("| figure | value | ceiling (bare GET) | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    print(f"| throughput | {m['rps']:,.0f} req/s | {c['rps']:,.0f} req/s | {m['rps_ratio_to_ceiling']:.3f} "
          f"| ≥ {TARGET_RPS:,} req/s | {'yes' if m['rps'] >= TARGET_RPS else 'no'} |")
    print(f"| p50 | {m['p50_ms']:.1f} ms | {c['p50_ms']:.2f} ms "
          f"| {ratio(m['p50_ms'], c['p50_ms']):.1f} | | |")
    print(f"| p99 | {m['p99_ms']:.1f} ms | {c['p99_ms']:.2f} ms | {ratio(m['p99_ms'], c['p99_ms']):.1f} "
          f"| < {TARGET_P99_MS} ms | {'yes' if m['p99_ms'] < TARGET_P99_MS else 'no'} |")
    print(f"| errors (non-2xx / socket) | {m['errors_status']} / {m['errors_socket']} | | | 0 | "
          f"{'yes' if m['errors_status'] + m['errors_socket'] == 0 else 'no'} |")
    if "breakdown" in out:
        print("\n| operation alone | req/s | p50 ms | p99 ms | non-2xx |")
        print("|---|---|---|---|---|")
        for label, r in out["breakdown"].items():
            print(f"| {label} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                  f"| {r['errors_status']} |")
    for label, prof in out.get("profile", {}).items():
        print(f"\nProfile under '{label}' (share of samples: all / not waiting):")
        for row in prof["areas"]:
            busy = f"{row['share_of_busy']:6.1%}" if row["share_of_busy"] is not None else "     -"
            print(f"  {row['share']:6.1%} {busy}  {row['area']}")
        for row in prof["top_self"][:10]:
            print(f"  self {row['share_of_busy']:6.1%}  {row['frame']}")


if __name__ == "__main__":
    main()
