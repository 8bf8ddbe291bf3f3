"""Search latency at growing data sizes (benchmark b), with the bulk load as a by-product.

Starts ``carnet serve --workers 2`` on a fresh data folder (or a fresh PostgreSQL database), loads
synthetic patients (``carnet.demo.patient_bundles``: 1 Patient + 19 Observations each) in
transaction Bundles over HTTP up to each scale, then measures four selective searches with wrk
(each query cycles over a uniform sample of the loaded patients), next to the ceiling (a bare
Starlette JSON GET, same server settings, same generator and connections) measured at each scale.

    .venv/bin/python bench/search.py --db sqlite                      # 1k, 10k, 100k patients
    .venv/bin/python bench/search.py --db postgres --scales 1000,10000

A scale whose load would exceed ``--max-load-minutes`` (estimated from the rate so far) is skipped;
results are saved after each scale in bench/results/search-<db>.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    LUA,
    carnet_server,
    log,
    machine,
    measure_ceiling,
    ratio,
    save,
    sqlite_files,
    workdir,
    wrk,
)
from data import QUERY_TEXT, Loader, query_paths


def db_size(server: Any, db: str, work: Path) -> int:
    if db == "sqlite":
        return sum(p.stat().st_size for p in (work / "data").glob("carnet.db*"))  # WAL included
    url = server.env["CARNET_DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atc",
                          f"select pg_database_size('{name}')"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def count(base: str, rtype: str) -> int:
    r = httpx.get(f"{base}/fhir/{rtype}", params={"_summary": "count"}, timeout=600)
    r.raise_for_status()
    return int(r.json()["total"])


def slow_query(base: str, paths: list[str], budget: float) -> dict[str, Any]:
    """p50/p99 of queries sent one at a time (at least 3, until ``budget`` seconds are spent)."""
    times: list[float] = []
    errors = 0
    start = time.perf_counter()
    with httpx.Client(timeout=600) as client:
        for p in paths:
            t = time.perf_counter()
            r = client.get(base + p)
            times.append((time.perf_counter() - t) * 1000)
            errors += r.status_code >= 300
            if len(times) >= 3 and time.perf_counter() - start > budget:
                break
    times.sort()
    return {"method": "sequential httpx requests (too slow for the wrk window)", "requests": len(times),
            "p50_ms": round(times[len(times) // 2], 2), "p99_ms": round(times[-1], 2),
            "rps": round(len(times) / (time.perf_counter() - start), 3), "errors_status": errors,
            "errors_socket": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--scales", default="1000,10000,100000", help="patients, comma-separated, increasing")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per query measurement")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per query")
    ap.add_argument("--connections", type=int, default=1, help="wrk connections for the latency runs")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients loading Bundles")
    ap.add_argument("--per-bundle", type=int, default=5, help="patients per transaction Bundle (x20 entries)")
    ap.add_argument("--sample", type=int, default=500, help="patients sampled to build the queries")
    ap.add_argument("--max-load-minutes", type=float, default=150.0,
                    help="skip a scale whose estimated load time exceeds this")
    ap.add_argument("--slow-budget", type=float, default=120.0,
                    help="seconds spent timing a query too slow for wrk (sequential requests)")
    ap.add_argument("--min-free-gb", type=float, default=20.0,
                    help="stop loading when the data disk has less free space than this")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument("--name", default=None, help="results file name (default search-<db>)")
    args = ap.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    name = args.name or f"search-{args.db}"
    out: dict[str, Any] = {"benchmark": "search", "db": args.db, "machine": machine(),
                           "settings": {k: v for k, v in vars(args).items() if k != "keep"},
                           "queries": QUERY_TEXT, "scales": []}
    with workdir(args.keep) as work, carnet_server(args.db, work) as srv:
        loader = Loader(srv.base, clients=args.clients, per_bundle=args.per_bundle, sample_size=args.sample,
                        disk=work, min_free_bytes=int(args.min_free_gb * 2**30))
        loader.directory()
        loaded, load_seconds, load_resources = 0, 0.0, 0
        for stage, scale in enumerate(scales):
            delta = scale - loaded
            if load_resources:
                estimate = delta * 20 / (load_resources / load_seconds) / 60
                if estimate > args.max_load_minutes:
                    log(f"skipping {scale:,} patients: the load would take ~{estimate:.0f} min "
                        f"(> {args.max_load_minutes:g})")
                    out["skipped"] = {"scale": scale, "estimated_minutes": round(estimate)}
                    break
            log(f"loading {delta:,} patients ({delta * 20:,} resources) to reach {scale:,}")
            stats = loader.load(delta, stage=stage, server_cpu=srv.cpu_seconds)
            loaded = scale
            load_seconds += stats.seconds
            load_resources += stats.resources
            load = stats.as_dict()
            log(f"loaded in {stats.seconds:,.0f} s: {load['resources_per_s']:,} resources/s, "
                f"bundle p50 {load['bundle_p50_ms']} ms p99 {load['bundle_p99_ms']} ms, "
                f"errors {stats.errors}")
            if stats.errors:
                log(f"first load error: {stats.first_error}")
            if stats.aborted or stats.errors:
                log(f"load incomplete ({stats.aborted or 'errors'}): not measuring this scale")
                out["incomplete"] = {"scale": scale, "load": load, "reached_resources": stats.resources,
                                     **(sqlite_files(work) if args.db == "sqlite" else {})}
                save(name, out)
                break
            entry: dict[str, Any] = {"patients": scale, "load": load,
                                     "counts": {t: count(srv.base, t) for t in ("Patient", "Observation")},
                                     "db_bytes": db_size(srv, args.db, work)}
            if args.db == "sqlite":
                entry.update(sqlite_files(work))
            paths = query_paths(loader.sample)
            # sanity: each query answers 200 and finds its patient's data
            hits = {}
            for qname, plist in paths.items():
                found = 0
                for p in plist[:20]:
                    r = httpx.get(srv.base + p, timeout=120)
                    r.raise_for_status()
                    found += bool(r.json().get("entry"))
                hits[qname] = f"{found}/20 sampled queries found data"
            entry["sanity"] = hits
            ceiling = measure_ceiling(work, duration=args.duration, connections=args.connections,
                                      threads=min(2, args.connections))
            entry["ceiling"] = ceiling["get"]
            entry["queries"] = {}
            for qname, plist in paths.items():
                pfile = work / f"{qname}.txt"
                pfile.write_text("\n".join(plist) + "\n")
                kw = {"connections": args.connections, "threads": min(2, args.connections),
                      "args": [str(pfile)]}
                wrk(srv.base, LUA / "paths.lua", duration=args.warmup, **kw)
                res = wrk(srv.base, LUA / "paths.lua", duration=args.duration, server=srv,
                          timeout="120s", **kw)
                d = res.as_dict()
                if res.requests < 20:  # too slow for the wrk window: time a few queries one by one
                    d = slow_query(srv.base, plist, budget=args.slow_budget) | {"wrk": d}
                d["p50_ratio_to_ceiling"] = ratio(d["p50_ms"], ceiling["get"]["p50_ms"])
                d["rps_ratio_to_ceiling"] = ratio(d["rps"], ceiling["get"]["rps"])
                entry["queries"][qname] = d
                log(f"  {scale:>7,} patients  {qname:<26} p50 {d['p50_ms']:7.2f} ms  "
                    f"p99 {d['p99_ms']:7.2f} ms "
                    f"{d['rps']:8.1f} req/s  errors {d['errors_status'] + d['errors_socket']}")
            out["scales"].append(entry)
            save(name, out)
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print_table(out)
    log(f"results in {path}")


def print_table(out: dict[str, Any]) -> None:
    scales = out["scales"]
    if not scales:
        return
    print(f"\nSearch latency ({out['db']}, wrk {out['settings']['connections']} connection(s))\n")
    head = " | ".join(f"{s['patients']:,} p50 / p99 ms" for s in scales)
    print(f"| query | {head} | p50 ratio last/first |")
    print("|---|" + "---|" * (len(scales) + 1))
    for qname in scales[0]["queries"]:
        cells = [f"{s['queries'][qname]['p50_ms']:.2f} / {s['queries'][qname]['p99_ms']:.2f}" for s in scales]
        r = scales[-1]["queries"][qname]["p50_ms"] / scales[0]["queries"][qname]["p50_ms"]
        print(f"| {qname} | " + " | ".join(cells) + f" | {r:.2f} |")
    cells = [f"{s['ceiling']['p50_ms']:.2f} / {s['ceiling']['p99_ms']:.2f}" for s in scales]
    print("| ceiling (bare GET) | " + " | ".join(cells) + " | |")
    print("\nLoad: " + "; ".join(f"to {s['patients']:,}: {s['load']['resources_per_s']:,} res/s"
                                 for s in scales))


if __name__ == "__main__":
    main()
