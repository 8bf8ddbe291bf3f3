"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) into hotspot tables.

    .venv/bin/python bench/profile_summary.py bench/profiles/crud-sqlite.txt

py-spy samples every thread it does not consider idle, so threads blocked in C (the SQLite busy
handler waiting for the write lock, a pool's condition variable) still show up: those samples are
classified as "waiting" and the hotspots are given as shares of the other ("busy") samples.
"self" counts the innermost Python frame (time in C code called from it included: for
``do_execute`` that is the database engine itself), "inclusive" every sample with the function on
its stack; "areas" buckets each sample by the innermost part of the code base it is in.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (label, predicate on a normalised frame "func (file)"), first match wins per sample: ordered from
# the most specific to the most general
AREAS: list[tuple[str, str]] = [
    ("validation (carnet.fhir.validation)", "carnet/fhir/validation"),
    ("search-index extraction (indexer, searchparams, fhirpath)",
     "carnet/fhir/indexer|carnet/fhir/searchparams|fhirpathpy"),
    ("search compilation (carnet.fhir.search)", "carnet/fhir/search.py"),
    ("JSON (jsonio, orjson)", "carnet/fhir/jsonio"),
    ("bundle processing (carnet.fhir.bundles)", "carnet/fhir/bundles"),
    ("SQLAlchemy statement compile / execute / rows", "sqlalchemy/"),
    ("HTTP (uvicorn, starlette, anyio)", "uvicorn/|starlette/|anyio/|h11|httptools"),
]


def normalise(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({file})"


def read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [normalise(f) for f in stack.split(";")
                  if f and not f.startswith("process ") and not f.startswith("thread ")]
        stacks.append((frames, int(n)))
    return stacks


WAIT_LEAVES = ("Condition.wait", "Event.wait", "Connection._recv", "_PollLikeSelector.select",
               "EpollSelector.select", "Queue.get", "Lock.acquire")
DRIVER_LEAVES = ("DefaultDialect.do_execute", "DefaultDialect.do_executemany", "DefaultDialect.do_commit",
                 "DefaultDialect.do_rollback", "DefaultDialect.do_close", "DefaultDialect.connect",
                 "CursorFetchStrategy.fetch", "Cursor.execute", "Cursor.fetch")


def classify(frames: list[str]) -> str:
    leaf = frames[-1]
    if any(f.startswith("_sqlite_begin ") for f in frames):
        return "waiting: SQLite write lock (BEGIN IMMEDIATE, busy handler)"
    if leaf.startswith(WAIT_LEAVES):
        return "waiting: idle threads, connection-pool and queue waits"
    if leaf.startswith(DRIVER_LEAVES):
        return "database: statement execution / commit in the driver (C)"
    if "(psycopg/" in leaf or "(psycopg_binary/" in leaf or "(psycopg_pool/" in leaf:
        return "database: psycopg waiting on PostgreSQL (round trips, execution, commit)"
    if leaf.startswith("Runner.run ") or leaf.startswith("run ("):
        return "event loop (uvloop, C: sockets, HTTP parsing)"
    for f in reversed(frames):
        hit = next((lab for lab, pat in AREAS if re.search(pat, f)), None)
        if hit:
            return hit
    return "other Python"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    """Shares of samples by area; hotspots (self and inclusive) among non-waiting samples."""
    stacks = read(path)
    total = sum(n for _, n in stacks) or 1
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    busy = 0
    for frames, n in stacks:
        if not frames:
            continue
        label = classify(frames)
        areas[label] += n
        if label.startswith("waiting"):
            continue
        busy += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    busy = busy or 1

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "samples": c, "share_of_busy": round(c / busy, 4)}
                for f, c in counter.most_common(top)]

    interesting = Counter({f: c for f, c in incl.items() if "carnet/" in f})
    return {"samples": total, "busy_samples": busy,
            "areas": [{"area": a, "share": round(c / total, 4),
                       "share_of_busy": None if a.startswith("waiting") else round(c / busy, 4)}
                      for a, c in areas.most_common()],
            "top_self": rows(self_c), "top_inclusive_carnet": rows(interesting)}


def main() -> None:
    path = Path(sys.argv[1])
    s = summarise(path, top=int(sys.argv[2]) if len(sys.argv) > 2 else 25)
    print(f"{s['samples']:,} samples, {s['busy_samples']:,} not waiting\n")
    print("by area (share of all samples / of non-waiting samples):")
    for row in s["areas"]:
        busy = f"{row['share_of_busy']:6.1%}" if row["share_of_busy"] is not None else "     -"
        print(f"  {row['share']:6.1%} {busy}  {row['area']}")
    print("\ntop self, non-waiting samples (innermost Python frame):")
    for row in s["top_self"]:
        print(f"  {row['share_of_busy']:6.1%}  {row['frame']}")
    print("\ntop inclusive, non-waiting samples (carnet functions):")
    for row in s["top_inclusive_carnet"]:
        print(f"  {row['share_of_busy']:6.1%}  {row['frame']}")


if __name__ == "__main__":
    main()
