"""Print the latest figures of every benchmark in bench/results as Markdown (for bench/README.md).

    .venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _when(d: dict[str, Any]) -> str:
    m = d.get("machine", {})
    modified = " (modified)" if m.get("src_modified") else ""
    return f"{m.get('date', '?')}, commit {m.get('commit', '?')}{modified}"


def crud() -> list[str]:
    out = ["### CRUD mix (64 connections, 2 workers; target ≥ 1,500 req/s with p99 < 100 ms)", "",
           "| database | req/s | p50 ms | p99 ms | errors | ceiling req/s | ratio | run |",
           "|---|---|---|---|---|---|---|---|"]
    rows: list[dict[str, Any]] = []
    for db in ("sqlite", "postgres"):
        d = _load(f"crud-{db}")
        if d is None:
            continue
        r = d["mix_result"]
        out.append(f"| {db} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{r['errors_status'] + r['errors_socket']} | {d['ceiling']['rps']:,.0f} | "
                   f"{r['rps_ratio_to_ceiling']} | {_when(d)} |")
        rows.append(d)
    for d in rows:
        if "breakdown" not in d:
            continue
        out += ["", f"Each operation alone ({d['db']}):", "", "| operation | req/s | p50 ms | p99 ms |",
                "|---|---|---|---|"]
        out += [f"| {k} | {v['rps']:,.0f} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} |"
                for k, v in d["breakdown"].items()]
    return out


def bundle() -> list[str]:
    out = ["### Transaction-Bundle load (target ≥ 1,000 resources/s)", "",
           "| database | resources/s | bundle p50 / p99 ms | ratio to echo ceiling | ratio to GET ceiling "
           "| run |",
           "|---|---|---|---|---|---|"]
    for db in ("sqlite", "postgres"):
        d = _load(f"bundle-{db}")
        if d is None:
            continue
        r = d["result"]
        out.append(f"| {db} | {r['resources_per_s']:,.0f} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} | "
                   f"{r['ratio_to_echo']} | {r['ratio_to_get']} | {_when(d)} |")
    return out


def search() -> list[str]:
    out: list[str] = []
    for db in ("sqlite", "postgres"):
        d = _load(f"search-{db}")
        if d is None or not d.get("scales"):
            continue
        scales = d["scales"]
        out += [f"### Search latency ({db}, 1 connection; target p50 at 100k ≤ 1.3 × p50 at 1k, p99 < 50 ms)",
                "", "| query | " + " | ".join(f"{s['patients']:,} patients p50 / p99 ms" for s in scales)
                + " | p50 last ÷ first |", "|---|" + "---|" * (len(scales) + 1)]
        for q in scales[0]["queries"]:
            cells = [f"{s['queries'][q]['p50_ms']:.2f} / {s['queries'][q]['p99_ms']:.2f}" for s in scales]
            ratio = scales[-1]["queries"][q]["p50_ms"] / scales[0]["queries"][q]["p50_ms"]
            out.append(f"| `{d['queries'][q]}` | " + " | ".join(cells) + f" | {ratio:.2f} |")
        cells = [f"{s['ceiling']['p50_ms']:.2f} / {s['ceiling']['p99_ms']:.2f}" for s in scales]
        out.append("| ceiling (bare GET) | " + " | ".join(cells) + " | |")
        sizes = "; ".join(f"{s['patients']:,} patients: {s['db_bytes'] / 2**30:.1f} GiB" for s in scales)
        out += ["", f"Database size: {sizes}. Run: {_when(d)}."]
        if d.get("incomplete") or d.get("skipped"):
            out.append(f"Not measured: {d.get('incomplete') or d.get('skipped')}")
    return out


def identity() -> list[str]:
    d = _load("identity-sqlite")
    if d is None:
        return []
    s = d["settings"]
    out = [f"### Identity matching and directory search (sqlite, {s['patients']:,} patients, "
           f"{s['practitioners']:,} practitioners, 1 connection; target p99 < 20 ms)", "",
           "| query | p50 ms | p99 ms | req/s | met |", "|---|---|---|---|---|"]
    for q, r in d["results"].items():
        out.append(f"| {q} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:,.0f} | "
                   f"{'yes' if r['target_met'] else 'no'} |")
    c = d["ceiling"]
    out.append(f"| ceiling (bare GET) | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {c['rps']:,.0f} | |")
    loads = d.get("loads", {})
    out += ["", "Load: " + "; ".join(f"{k}s {v['resources_per_s']:,} resources/s" for k, v in loads.items())
            + f". Run: {_when(d)}."]
    return out


def validation() -> list[str]:
    d = _load("validation")
    if d is None:
        return []
    out = ["### Validation cost (one core, in process)", "",
           "| resources | mean size | parse µs | validate µs | µs per KB | validations/s |",
           "|---|---|---|---|---|---|"]
    for name, r in d["results"].items():
        out.append(f"| {name} | {r['mean_bytes']:,} B | {r['parse_us']} | {r['validate_us']} | "
                   f"{r['validate_us_per_kb']} | {r['validations_per_s_one_core']:,} |")
    return out


def crash() -> list[str]:
    rows = [(db, d) for db in ("sqlite", "postgres") if (d := _load(f"crash-{db}")) is not None]
    if not rows:
        return []
    out = ["### Crash safety (SIGKILL of `carnet serve` under concurrent ITI-65 / ITI-105 publishing)", "",
           "| database | workers | kills | acknowledged documents (requests) "
           "| in flight at the kill: present / absent | verify passed | full scans "
           "| orphan blobs (of cut publications) | violations | restart p50 / max s | cycles/min | run |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for db, d in rows:
        c, scan, st = d["counts"], d.get("last_full_scan", {}), d.get("startup_s", {})
        partial = " (partial)" if d.get("partial") else ""
        out.append(f"| {db} | {d['settings']['workers']} | {c['kills']}{partial} | {c['acked_documents']:,} "
                   f"({c['acked_requests']:,}) | {c['in_flight_present']} / {c['in_flight_absent']} | "
                   f"{c['verify_passes']}/{c['verify_runs']} | {c['full_scans']} | "
                   f"{scan.get('orphan_blobs', 0)} ({scan.get('orphan_blobs_of_in_flight_documents', 0)}) | "
                   f"{c['violations']} | {st.get('p50', 0):.1f} / {st.get('max', 0):.1f} | "
                   f"{d.get('cycles_per_minute', 0)} | {_when(d)} |")
    return out


def soak() -> list[str]:
    rows = [(db, d) for db in ("sqlite", "postgres")
            if (d := _load(f"soak-{db}")) is not None and "soak" in d]
    if not rows:
        return []
    out = ["### Load and soak (open-loop mix; targets: RSS growth < 10 %, no error, p99 stable)", "",
           "| database | capacity req/s | rate req/s | minutes | requests | errors | p50 / p99 / max ms "
           "| per-minute p99 max ÷ min | p99 trend %/min | RSS MiB (growth) | load 1 min | run |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for db, d in rows:
        s, st, rss = d["soak"], d["soak"]["p99_stability"], d["soak"]["rss"]
        loads = [m["loadavg_1m"] for m in s["per_minute"] if "loadavg_1m" in m]
        cap = d.get("ramp", {}).get("capacity_per_s", "")
        out.append(f"| {db} | {cap} | {s['rate']:g} | {s['seconds'] / 60:g} | {s['requests']:,} "
                   f"| {s['errors']} | "
                   f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} / {s['max_ms']:.1f} | {st['max_over_min']} | "
                   f"{st['slope_pct_of_mean_per_minute']:+.2f} | {rss['at_mib']:.1f} → {rss['end_mib']:.1f} "
                   f"({rss['growth_pct']:+.2f} %) | {min(loads):.1f}–{max(loads):.1f} | {_when(d)} |")
    return out


def main() -> None:
    for part in (crud, bundle, search, identity, validation, crash, soak):
        lines = part()
        if lines:
            print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
