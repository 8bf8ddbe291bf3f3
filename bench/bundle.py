"""Transaction-Bundle load (benchmark c): resources stored per second, a few concurrent clients.

Starts ``carnet serve --workers 2`` on a fresh data folder (or a fresh PostgreSQL database), posts
the directory Bundle (organisations, practitioners), writes ``--bundles`` distinct transaction
Bundles from ``carnet.demo.patient_bundles`` (``--per-bundle`` patients x 20 entries each; the
performer references resolved) and has wrk post them round robin to ``/fhir`` from ``--connections``
connections for ``--duration`` seconds. Every post creates new resources (the Bundles use
``urn:uuid:`` full URLs), so the database grows during the run.

Ceilings, same run, same generator and connections: the bare Starlette JSON GET, and a bare
``POST /echo`` that parses each Bundle body and serialises it back (the HTTP + JSON floor).

    .venv/bin/python bench/bundle.py --db sqlite
    .venv/bin/python bench/bundle.py --db postgres --duration 60
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

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
from data import Loader

TARGET = 1000  # resources/s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=4, help="concurrent clients (wrk connections)")
    ap.add_argument("--bundles", type=int, default=40, help="distinct Bundles posted round robin")
    ap.add_argument("--per-bundle", type=int, default=5, help="patients per Bundle (x20 entries)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--name", default=None, help="results file name (default bundle-<db>)")
    args = ap.parse_args()
    name = args.name or f"bundle-{args.db}"
    out: dict[str, Any] = {"benchmark": "bundle", "db": args.db, "machine": machine(),
                           "settings": {k: v for k, v in vars(args).items() if k != "keep"}}
    with workdir(args.keep) as work, carnet_server(args.db, work) as srv:
        loader = Loader(srv.base, per_bundle=args.per_bundle)
        loader.directory()
        files, entries = [], 0
        for i, bundle in enumerate(loader.bundles(args.bundles * args.per_bundle, stage=0)):
            f = work / f"bundle-{i:04d}.json"
            f.write_bytes(orjson.dumps(bundle))
            files.append(str(f))
            entries += len(bundle["entry"])
        per_bundle_entries = entries / len(files)
        listing = work / "bundles.txt"
        listing.write_text("\n".join(files) + "\n")
        out["bundle_entries"] = per_bundle_entries
        out["bundle_bytes"] = sum(Path(f).stat().st_size for f in files) // len(files)
        kw = {"connections": args.connections, "threads": min(2, args.connections)}
        ceiling = measure_ceiling(work, duration=min(args.duration, 20), echo_body=listing, **kw)
        out["ceiling"] = ceiling
        wrk(srv.base, LUA / "post_files.lua", duration=args.warmup, args=[str(listing), "/fhir"], **kw)
        before = _counts(srv.base)
        res = wrk(srv.base, LUA / "post_files.lua", duration=args.duration, args=[str(listing), "/fhir"],
                  server=srv, **kw)
        after = _counts(srv.base)
        stored = sum(after.values()) - sum(before.values())
        d = res.as_dict()
        ok = res.requests - res.errors_status
        d["bundles_ok_per_s"] = round(ok / res.duration_s, 2)
        d["resources_per_s"] = round(ok / res.duration_s * per_bundle_entries, 1)  # successful Bundles only
        d["stored_per_s_by_count"] = round(stored / res.duration_s, 1)  # cross-check (in-flight at the end)
        d["ratio_to_echo"] = ratio(d["bundles_ok_per_s"], ceiling["echo"]["rps"])
        d["ratio_to_get"] = ratio(d["resources_per_s"], ceiling["get"]["rps"])
        d["target_met"] = d["resources_per_s"] >= TARGET and res.errors_status + res.errors_socket == 0
        out["result"] = d
        out["counts_after"] = after
        if args.db == "sqlite":
            out["sqlite_files"] = sqlite_files(work)
        if res.errors_status:
            log(f"first error: {res.extra.get('first_error')}")
        log(f"bundle load: {d['bundles_ok_per_s']:.1f} Bundles/s = {d['resources_per_s']:,.0f} resources/s "
            f"(counted {d['stored_per_s_by_count']:,.0f}/s), p50 {res.p50_ms:.0f} ms, "
            f"p99 {res.p99_ms:.0f} ms, "
            f"non-2xx {res.errors_status}, server {d.get('server_cores')} cores")
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print_table(out)
    log(f"results in {path}")


def _counts(base: str) -> dict[str, int]:
    out = {}
    for t in ("Patient", "Observation"):
        r = httpx.get(f"{base}/fhir/{t}", params={"_summary": "count"}, timeout=600)
        r.raise_for_status()
        out[t] = int(r.json()["total"])
    return out


def print_table(out: dict[str, Any]) -> None:
    r, c = out["result"], out["ceiling"]
    echo_res = c["echo"]["rps"] * out["bundle_entries"]
    print(f"\nBundle load ({out['db']}, {out['settings']['connections']} clients, "
          f"{out['bundle_entries']:.0f} entries / {out['bundle_bytes'] // 1024} KB per Bundle)\n")
    print("| figure | value | ceiling | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    print(f"| resources/s | {r['resources_per_s']:,.0f} | echo {echo_res:,.0f} res/s "
          f"| {r['ratio_to_echo']:.3f} | ≥ {TARGET:,} | {'yes' if r['target_met'] else 'no'} |")
    print(f"| resources/s vs bare GET | {r['resources_per_s']:,.0f} | GET {c['get']['rps']:,.0f} req/s "
          f"| {r['ratio_to_get']:.3f} | | |")
    print(f"| Bundle p50 / p99 | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms | echo {c['echo']['p50_ms']:.1f} / "
          f"{c['echo']['p99_ms']:.1f} ms | | | |")
    print(f"| errors (non-2xx / socket) | {r['errors_status']} / {r['errors_socket']} | | | 0 | "
          f"{'yes' if r['errors_status'] + r['errors_socket'] == 0 else 'no'} |")


if __name__ == "__main__":
    main()
