"""What a statement costs inside a SQLite savepoint as the savepoint's changes grow, with the
sub-journal in memory (``temp_store=MEMORY``) and in a temporary file (the default, which
:mod:`carnet.db.engine` keeps).

Inside a savepoint SQLite keeps the original of every page changed in a sub-journal. A statement
that may change several rows (``INSERT ... SELECT``, ``DELETE``, ``UPDATE``) opens a statement
savepoint and, when it ends, truncates the sub-journal back to where it began; an in-memory
journal is a chain of chunks, walked from its start to the cut. Carnet runs every job of a group
commit (carnet.db.engine.GroupCommit) in a savepoint, so a write transaction holding several
requests paid that walk on every such statement.

    .venv/bin/python bench/sqlite_subjournal.py            # results/sqlite-subjournal.json
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import log, machine, save


def build(path: Path, rows: int) -> None:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, version INTEGER, v BLOB)")
    c.execute("CREATE TABLE q (id INTEGER PRIMARY KEY)")
    c.execute("CREATE TABLE r (k TEXT NOT NULL, n INTEGER NOT NULL)")  # an index table: rows by key
    c.execute("CREATE INDEX r_k ON r (k)")
    c.execute("BEGIN")
    c.executemany("INSERT INTO t (k, version, v) VALUES (?, 0, ?)",
                  ((f"k{i:09d}", os.urandom(900)) for i in range(rows)))
    c.execute("COMMIT")
    c.close()


def measure(path: Path, store: str, steps: list[int], probes: int) -> list[dict[str, Any]]:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute(f"PRAGMA temp_store={store}")
    c.execute("PRAGMA cache_size=-65536")
    out = []
    c.execute("BEGIN IMMEDIATE")
    c.execute("SAVEPOINT job")
    done = 0
    for changed in steps:
        c.executemany("UPDATE t SET version = version + 1 WHERE id = ?",
                      ((i + 1,) for i in range(done, changed)))
        done = changed
        c.execute("DELETE FROM q")
        t = time.perf_counter()
        for i in range(probes):
            c.execute("INSERT INTO q (id) SELECT id FROM t WHERE k = ?", (f"k{i:09d}",))
        multi = (time.perf_counter() - t) / probes * 1e6
        t = time.perf_counter()
        for i in range(probes):
            c.execute("INSERT OR IGNORE INTO q (id) VALUES (?)", (10**9 + i,))
        single = (time.perf_counter() - t) / probes * 1e6
        c.executemany("INSERT INTO r (k, n) VALUES (?, ?)",
                      ((f"r{i}", j) for i in range(probes) for j in range(3)))
        t = time.perf_counter()
        for i in range(probes):
            c.execute("DELETE FROM r WHERE k = ?", (f"r{i}",))
        deleted = (time.perf_counter() - t) / probes * 1e6
        out.append({"temp_store": store, "rows_changed_in_savepoint": changed,
                    "insert_select_us": round(multi, 1), "insert_values_us": round(single, 1),
                    "delete_by_key_us": round(deleted, 1)})
        log(f"  temp_store={store:<6} {changed:>7,} rows changed: INSERT ... SELECT {multi:9.1f} us, "
            f"INSERT ... VALUES {single:6.1f} us, DELETE of 3 rows by key {deleted:9.1f} us")
    c.execute("ROLLBACK")
    c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--name", default="sqlite-subjournal")
    args = ap.parse_args()
    steps = [0, 2_000, 10_000, 40_000]
    with tempfile.TemporaryDirectory(prefix="carnet-subjournal-") as tmp:
        path = Path(tmp) / "t.db"
        build(path, max(args.rows, steps[-1]))
        results = [r for store in ("MEMORY", "FILE") for r in measure(path, store, steps, args.probes)]
    save(args.name, {"benchmark": "sqlite-subjournal", "machine": machine(), "sqlite": sqlite3.sqlite_version,
                     "settings": vars(args), "results": results})


if __name__ == "__main__":
    main()
