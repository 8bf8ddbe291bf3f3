"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) into hotspot tables.

    .venv/bin/python bench/profile_summary.py bench/profiles/crud-sqlite.txt

Shares are of all samples taken in the server processes (idle threads excluded by py-spy).
"self" counts the innermost Python frame, "inclusive" every sample that has the function on its
stack; "areas" buckets inclusive time by the part of the code base it is spent in.
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


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    stacks = read(path)
    total = sum(n for _, n in stacks) or 1
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        label = "other"
        # innermost area on the stack: walk from the leaf up
        for f in reversed(frames):
            hit = next((lab for lab, pat in AREAS if re.search(pat, f)), None)
            if hit:
                label = hit
                break
        areas[label] += n

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "samples": c, "share": round(c / total, 4)} for f, c in counter.most_common(top)]

    interesting = Counter({f: c for f, c in incl.items()
                           if "carnet/" in f or "sqlalchemy/engine" in f or "execute" in f})
    return {"samples": total, "top_self": rows(self_c), "top_inclusive_carnet": rows(interesting),
            "areas_innermost": [{"area": a, "share": round(c / total, 4)} for a, c in areas.most_common()]}


def main() -> None:
    path = Path(sys.argv[1])
    s = summarise(path, top=int(sys.argv[2]) if len(sys.argv) > 2 else 25)
    print(f"{s['samples']:,} samples\n\nby area (innermost recognised frame):")
    for row in s["areas_innermost"]:
        print(f"  {row['share']:6.1%}  {row['area']}")
    print("\ntop self (innermost Python frame):")
    for row in s["top_self"]:
        print(f"  {row['share']:6.1%}  {row['frame']}")
    print("\ntop inclusive (carnet, SQL execution):")
    for row in s["top_inclusive_carnet"]:
        print(f"  {row['share']:6.1%}  {row['frame']}")


if __name__ == "__main__":
    main()
