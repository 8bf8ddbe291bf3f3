"""The transparency log's targets: sequencer throughput, inclusion proofs at 10M leaves, ``carnet
verify`` throughput, and what auditing costs reads.

Targets (the ledger issue): sequencer >= 20,000 leaves/s; inclusion proof p99 < 5 ms at 10 million
leaves; ``carnet verify`` >= 200,000 leaves/s; reads with auditing on / off >= 0.8 (throughput).

    .venv/bin/python bench/ledger.py sequencer --db sqlite --leaves 200000 [--repeat 3] [--profile]
    .venv/bin/python bench/ledger.py proofs --db sqlite --leaves 10000000
    .venv/bin/python bench/ledger.py verify --db sqlite --leaves 1000000 [--profile]
    .venv/bin/python bench/ledger.py reads --db sqlite [--profile 20]
    .venv/bin/python bench/ledger.py report            # Markdown tables from results/ledger-*.json

``sequencer``: N pending audit rows (built with ``LedgerAudit.rows`` for practitioners reading
DocumentReferences: one AuditEvent each, ~1.8 KB of canonical JSON) are inserted in bulk on a
fresh database (not timed), then ``Sequencer.drain()`` is timed in process. ``--breakdown`` adds a
second, instrumented drain that times each statement kind (SQLAlchemy cursor events) and the
commits; ``--profile`` samples the timed drain with py-spy.

``proofs``: a tree of N leaves built straight into ``ledger_nodes`` (random leaf hashes through
``merkle.Appender``, executemany on SQLite, binary COPY on PostgreSQL; no audit rows), one signed
checkpoint of size N, kept under ``/tmp/ledger-bench-proofs-<db>-<N>`` (and a PostgreSQL database
named after it) and reused by later runs. Proofs at random indices against size N: in process
(``inclusion_proof(DbNodes(conn), i, N)``) with the node cache emptied before every proof (cold)
and after a warm-up (warm), then over HTTP against ``carnet serve --workers 2`` on that database
(one connection, httpx), next to a bare-GET ceiling with the same client.

``verify``: N audit rows sequenced by the real ``Sequencer`` (not timed; kept and reused like the
proofs' tree), then ``verify_database`` timed ``--repeat`` times, with its parts measured alone
(the streamed join through SQLAlchemy, the same SQL through the driver, hashing and appending).

``reads``: 2,000 patients with 19 Observations each loaded over HTTP, then ``carnet serve
--workers 2`` started alternately with auditing on and off (``CARNET_AUDIT=false``) on the same
data, reads by id of random Patients and Observations with wrk (64 connections), ``--rounds``
times, and one run of ``Observation?patient=<id>`` each way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    LUA,
    PG_URL,
    REPO,
    RESULTS,
    Server,
    base_env,
    ceiling_server,
    free_port,
    log,
    machine,
    machine_busy_seconds,
    pg_create,
    pg_drop,
    python,
    ratio,
    save,
    workdir,
    wrk,
)
from sqlalchemy import Engine, event, func, insert, select, text

from carnet.audit import AuditRecord
from carnet.audit.sink import LedgerAudit, insert_rows
from carnet.auth.principal import Kind, Principal
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import analyze, seed_sqlite_statistics, upgrade
from carnet.db.tables import audit_events, audit_pending, ledger_checkpoints, ledger_nodes
from carnet.fhir.store import new_id
from carnet.fhir.values import now_us
from carnet.ledger import store as ledger_store
from carnet.ledger.keys import load_signer, origin_of
from carnet.ledger.merkle import Appender, inclusion_proof, leaf_hash, root, verify_inclusion
from carnet.ledger.note import NoteVerifier, format_checkpoint
from carnet.ledger.sequencer import Sequencer
from carnet.ledger.verify import verify_database

TARGET_SEQUENCER = 20_000  # leaves/s
TARGET_PROOF_P99_MS = 5.0
TARGET_VERIFY = 200_000  # leaves/s
TARGET_READS_RATIO = 0.8
ORIGIN = "bench.carnet.invalid/ledger"
PY_SPY = Path(sys.executable).parent / "py-spy"
KEEP_ROOT = Path("/tmp")


STARTED: dict[str, Any] = {}  # run_info() when the command started, before carnet's code ran


def run_info() -> dict[str, Any]:
    """common.machine(), plus which files under src/ differ from the commit (others edit them)."""
    info = machine()
    got = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    )
    info["src_status"] = got.stdout.splitlines()
    return info


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k != "func"}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p * len(s)))], 3) if s else 0.0


def latency_summary(ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 0.50),
        "p90_ms": pct(ms, 0.90),
        "p99_ms": pct(ms, 0.99),
        "max_ms": round(max(ms), 3) if ms else 0.0,
        "mean_ms": round(statistics.fmean(ms), 3) if ms else 0.0,
    }


# -- stores: a data folder and, for PostgreSQL, a database ------------------------------------
@dataclass
class Store:
    db: str
    data: Path
    pg_db: str | None = None

    @property
    def url(self) -> str | None:
        return PG_URL.format(db=self.pg_db) if self.pg_db else None

    def settings(self, **kw: Any) -> Settings:
        return Settings(data_dir=self.data, database_url=self.url, ledger_origin=ORIGIN, **kw)

    def engine(self) -> Engine:
        return make_engine(self.settings())

    def env(self) -> dict[str, str]:
        env = {"CARNET_LEDGER_ORIGIN": ORIGIN}
        if self.url:
            env["CARNET_DATABASE_URL"] = self.url
        return env


@contextlib.contextmanager
def fresh_store(db: str, work: Path) -> Iterator[Store]:
    pg_db = None
    if db == "postgres":
        pg_db = "bench_" + uuid.uuid4().hex[:10]
        pg_create(pg_db)
    try:
        yield Store(db, work / "data", pg_db)
    finally:
        if pg_db:
            pg_drop(pg_db)


def _pg_exists(name: str) -> bool:
    import psycopg
    from common import PG_ADMIN_DSN

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def kept_store(db: str, tag: str) -> tuple[Store, Path]:
    """A store kept between runs: ``/tmp/ledger-bench-<tag>`` and the PostgreSQL database
    ``bench_<hash of tag>``; returns it and the marker file a finished build writes."""
    folder = KEEP_ROOT / f"ledger-bench-{tag}"
    pg_db = "bench_" + hashlib.sha1(tag.encode()).hexdigest()[:12] if db == "postgres" else None
    return Store(db, folder / "data", pg_db), folder / "built.json"


def wipe(store: Store, marker: Path) -> None:
    shutil.rmtree(marker.parent, ignore_errors=True)
    if store.pg_db and _pg_exists(store.pg_db):
        pg_drop(store.pg_db)
    marker.parent.mkdir(parents=True)
    if store.pg_db:
        pg_create(store.pg_db)


def schema_fingerprint() -> str:
    """The tables' shape in carnet.db.tables: a kept store built under another schema is rebuilt."""
    from carnet.db.migrate import HEAD
    from carnet.db.tables import metadata

    shape = [HEAD, *((t.name, [(c.name, str(c.type)) for c in t.columns]) for t in metadata.sorted_tables)]
    return hashlib.sha1(json.dumps(shape).encode()).hexdigest()[:12]


def kept_is_built(store: Store, marker: Path, leaves: int) -> dict[str, Any] | None:
    if not marker.exists():
        return None
    built = json.loads(marker.read_text())
    if built.get("leaves") != leaves or (store.pg_db and not _pg_exists(store.pg_db)):
        return None
    if built.get("schema") != schema_fingerprint():
        log(f"the kept store {marker.parent} has another schema: rebuilt")
        return None
    engine = store.engine()
    try:
        with engine.connect() as conn:
            size = conn.execute(select(func.max(ledger_checkpoints.c.size))).scalar()
    except Exception:  # a half-built store is rebuilt
        size = None
    finally:
        engine.dispose()
    return built if size == leaves else None


# -- audit rows -------------------------------------------------------------------------------
class AuditRows:
    """Realistic pending rows: practitioners (each with a token, a client, a profession) reading
    one DocumentReference of one of many patients; ``LedgerAudit.rows`` builds them."""

    GIVEN = ("Marie", "Jean", "Camille", "Nathalie", "Pierre", "Sophie", "Luc", "Claire")
    FAMILY = ("MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND")

    def __init__(
        self, engine: Engine, seed: int = 11, practitioners: int = 50, patients: int = 20_000
    ) -> None:
        self.audit = LedgerAudit(engine)
        self.rng = random.Random(seed)
        rng = self.rng
        self.principals = [
            Principal(
                Kind.PRACTITIONER,
                f"8{rng.randrange(10**10):010d}",
                frozenset({"user/*.cruds"}),
                display=f"Dr {rng.choice(self.GIVEN)} {rng.choice(self.FAMILY)}",
                profession=rng.choice(["10", "60", "21", "40"]),
                fhir_user=f"Practitioner/{new_id()}",
                strong_auth=True,
                client_id="urn:carnet:client:bench-dpi",
                token_id=uuid.UUID(int=rng.getrandbits(128)).hex,
            )
            for _ in range(practitioners)
        ]
        self.patients = [new_id() for _ in range(patients)]

    def batch(self, n: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        rng = self.rng
        while len(rows) < n:
            doc = new_id()
            record = AuditRecord(
                "read",
                0,
                "DocumentReference",
                (doc,),
                entities=(("DocumentReference", doc, rng.choice(self.patients)),),
            )
            rows.extend(self.audit.rows(rng.choice(self.principals), record))
        return rows


def insert_pending(engine: Engine, n: int, chunk: int = 10_000) -> dict[str, Any]:
    """Insert ``n`` pending audit rows in bulk (executemany, ``chunk`` per transaction)."""
    gen = AuditRows(engine)
    t0 = time.perf_counter()
    done, size = 0, 0
    last = t0
    while done < n:
        rows = gen.batch(min(chunk, n - done))
        size += sum(len(r["content"]) for r in rows)
        with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            insert_rows(conn, rows)  # the audit sink's own: the row and its place in the queue
        done += len(rows)
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            log(f"  ... {done:,} audit rows inserted ({done / (last - t0):,.0f}/s)")
    took = time.perf_counter() - t0
    log(f"  {done:,} pending audit rows inserted in {took:.1f} s (mean {size / done:,.0f} B)")
    return {"rows": done, "seconds": round(took, 1), "mean_content_bytes": round(size / done)}


def pending_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_pending)).scalar() or 0)


def audit_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_events)).scalar() or 0)


# -- profiling ----------------------------------------------------------------------------------
@contextlib.contextmanager
def self_profile(raw: Path | None, rate: int = 250) -> Iterator[None]:
    """py-spy sampling this process while the block runs (raw collapsed stacks in ``raw``)."""
    if raw is None:
        yield
        return
    raw.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=120)
        log(f"py-spy: {err.decode().strip().splitlines()[-2] if err else ''}")


def profile_shares(raw: Path, within: str, buckets: list[tuple[str, str]], top: int = 15) -> dict[str, Any]:
    """Shares of the samples whose stack holds ``within`` (a function name), by first matching bucket
    (label, substring of a frame, innermost first), plus the top innermost frames."""
    from profile_summary import read

    stacks = [(frames, n) for frames, n in read(raw) if any(within in f for f in frames)]
    total = sum(n for _, n in stacks) or 1
    got: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, n in stacks:
        leaf[frames[-1]] += n
        for f in reversed(frames):
            hit = next((label for label, pat in buckets if pat in f), None)
            if hit:
                got[hit] += n
                break
        else:
            got["other"] += n
    return {
        "samples": total,
        "within": within,
        "buckets": [{"what": k, "share": round(v / total, 4)} for k, v in got.most_common()],
        "top_self": [{"frame": k, "share": round(v / total, 4)} for k, v in leaf.most_common(top)],
    }


# -- sequencer ---------------------------------------------------------------------------------
SEQ_BUCKETS = [
    ("hashing + Appender.append (carnet.ledger.merkle)", "carnet/ledger/merkle.py"),
    ("commit", "do_commit"),
    ("commit", "commit ("),
    ("SQL: driver execute/executemany (C)", "do_executemany"),
    ("SQL: driver execute/executemany (C)", "do_execute"),
    ("SQL: fetching the pending rows", "fetchall"),
    ("SQLAlchemy (compile, parameters, rows)", "sqlalchemy/"),
    ("checkpoint signing", "note.py"),
    ("Sequencer._append (Python: lists, dicts, bytes)", "_append (carnet/ledger/sequencer.py)"),
]


class StatementTimer:
    """Time spent in the driver per statement kind, from SQLAlchemy's cursor events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seconds: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self._t: dict[int, tuple[str, float]] = {}

    @staticmethod
    def kind(sql: str) -> str:
        s = " ".join(sql.split())[:60].upper()
        if s.startswith("SELECT P.SEQ") or s.startswith("SELECT AUDIT_EVENTS.SEQ"):
            return "select pending rows"
        if s.startswith("UPDATE AUDIT_EVENTS") or s.startswith("DELETE FROM AUDIT_PENDING"):
            return "take the batch off the queue"
        if s.startswith("INSERT INTO LEDGER_NODES"):
            return "insert ledger_nodes"
        if s.startswith("INSERT INTO LEDGER_CHECKPOINTS"):
            return "insert checkpoint"
        return "other (edge, size, checkpoint reads, locks)"

    def before(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        self._t[id(cursor)] = (self.kind(statement), time.perf_counter())

    def after(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        kind, t = self._t.pop(id(cursor), ("?", time.perf_counter()))
        self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - t
        self.calls[kind] += 1

    def wrap(self, seq: Sequencer) -> None:
        """Time the sequencer's PostgreSQL statements sent through psycopg itself (binary results
        and COPY), which SQLAlchemy's events do not see."""
        for method, kind in (("_pg_pending", "select pending rows"), ("_pg_store", "insert ledger_nodes")):
            original = getattr(seq, method)

            def timed(*a: Any, _original: Any = original, _kind: str = kind) -> Any:
                t = time.perf_counter()
                try:
                    return _original(*a)
                finally:
                    self.seconds[_kind] = self.seconds.get(_kind, 0.0) + time.perf_counter() - t
                    self.calls[_kind] += 1

            setattr(seq, method, timed)

    def __enter__(self) -> StatementTimer:
        event.listen(self.engine, "before_cursor_execute", self.before)
        event.listen(self.engine, "after_cursor_execute", self.after)
        return self

    def __exit__(self, *exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self.before)
        event.remove(self.engine, "after_cursor_execute", self.after)


def timed_commits(monkey: bool) -> Any:
    """Wrap Connection.commit of the SQLAlchemy Transaction to time commits (breakdown only)."""
    from sqlalchemy.engine import base

    seconds = [0.0]
    original = base.RootTransaction._do_commit

    def wrapped(self: Any) -> None:
        t = time.perf_counter()
        try:
            original(self)
        finally:
            seconds[0] += time.perf_counter() - t

    if monkey:
        base.RootTransaction._do_commit = wrapped  # type: ignore[method-assign]

    def restore() -> float:
        base.RootTransaction._do_commit = original  # type: ignore[method-assign]
        return seconds[0]

    return restore


def in_memory_ceiling(contents: list[bytes]) -> dict[str, Any]:
    """Hashing and appending the same leaves with nothing else: what the tree costs by itself."""
    t0 = time.perf_counter()
    hashes = [leaf_hash(c) for c in contents]
    t1 = time.perf_counter()
    app = Appender()
    nodes = []
    for h in hashes:
        nodes.extend(app.append(h))
    t2 = time.perf_counter()
    app2 = Appender()
    app2.extend(hashes)
    t3 = time.perf_counter()
    n = len(contents)
    return {
        "leaves": n,
        "leaf_hash_per_s": round(n / (t1 - t0)),
        "append_per_s": round(n / (t2 - t1)),
        "hash_and_append_per_s": round(n / (t2 - t0)),
        "extend_per_s": round(n / (t3 - t2)),
    }


def cmd_sequencer(args: argparse.Namespace) -> None:
    name = args.name or f"ledger-sequencer-{args.db}"
    out: dict[str, Any] = {
        "benchmark": "ledger-sequencer",
        "db": args.db,
        "machine": STARTED,
        "settings": settings_of(args),
        "target_leaves_per_s": TARGET_SEQUENCER,
        "runs": [],
    }
    for rep in range(args.repeat):
        with workdir() as work, fresh_store(args.db, work) as store:
            engine = store.engine()
            upgrade(engine)
            log(f"[run {rep + 1}/{args.repeat}] inserting {args.leaves:,} pending audit rows ({args.db})")
            inserted = insert_pending(engine, args.leaves)
            if args.db == "postgres":
                analyze(engine)  # as autovacuum would soon after a bulk insert
            settings = store.settings()
            seq = Sequencer(engine, load_signer(settings), origin_of(settings), batch=args.batch)
            out["batch"] = seq.batch
            raw = KEEP_ROOT / "ledger-bench-profiles" / f"{name}-{rep}.txt" if args.profile else None
            load0, busy0, cpu0 = loadavg(), machine_busy_seconds(), time.process_time()
            with self_profile(raw):
                t0 = time.perf_counter()
                progress = seq.drain()
                took = time.perf_counter() - t0
            cpu, busy = time.process_time() - cpu0, machine_busy_seconds() - busy0
            run: dict[str, Any] = {
                "leaves": progress.sequenced,
                "seconds": round(took, 3),
                "leaves_per_s": round(progress.sequenced / took),
                "process_cores": round(cpu / took, 2),
                "machine_busy_cores": round(busy / took, 2),
                "loadavg_before": load0,
                "loadavg_after": loadavg(),
                "inserted": inserted,
                "checkpoint": progress.checkpoint,
            }
            run["target_met"] = run["leaves_per_s"] >= TARGET_SEQUENCER
            with engine.connect() as conn:
                nodes = conn.execute(select(func.count()).select_from(ledger_nodes)).scalar()
                assert nodes == 2 * args.leaves - bin(args.leaves).count("1"), nodes
                contents = [
                    bytes(r[0])
                    for r in conn.execute(
                        select(audit_events.c.content).order_by(audit_events.c.seq).limit(100_000)
                    )
                ]
            run["in_memory_ceiling"] = in_memory_ceiling(contents)
            if raw is not None:
                run["profile"] = profile_shares(raw, "drain (carnet/ledger/sequencer.py)", SEQ_BUCKETS)
                run["profile_raw"] = str(raw)
            log(
                f"  drain: {run['leaves_per_s']:,} leaves/s ({took:.2f} s, "
                f"process {run['process_cores']} cores, "
                f"machine {run['machine_busy_cores']} cores busy, load {load0} -> {run['loadavg_after']}); "
                f"in memory, hash + append {run['in_memory_ceiling']['hash_and_append_per_s']:,}/s"
            )
            if args.breakdown:
                run["breakdown"] = sequencer_breakdown(store, engine, args)
            out["runs"].append(run)
            engine.dispose()
        save(name, out)
    rates = [r["leaves_per_s"] for r in out["runs"]]
    out["leaves_per_s_median"] = round(statistics.median(rates))
    out["target_met"] = out["leaves_per_s_median"] >= TARGET_SEQUENCER
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print(
        f"\nSequencer ({args.db}, {args.leaves:,} leaves, batch {out.get('batch')}): runs {rates} leaves/s, "
        f"median {out['leaves_per_s_median']:,}; target {TARGET_SEQUENCER:,}: "
        f"{'met' if out['target_met'] else 'NOT met'}"
    )
    log(f"results in {path}")


def sequencer_breakdown(store: Store, engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    """A second drain over the same rows (indices reset), timing each statement kind and the commits."""
    with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(text("DELETE FROM ledger_nodes"))
        conn.execute(text("DELETE FROM ledger_checkpoints"))
        conn.execute(text("INSERT INTO audit_pending (seq) SELECT seq FROM audit_events"))
    ledger_store.forget_cached_nodes()
    if args.db == "postgres":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE audit_pending")
            conn.exec_driver_sql("VACUUM ANALYZE ledger_nodes")
    settings = store.settings()
    seq = Sequencer(engine, load_signer(settings), origin_of(settings), batch=args.batch)
    restore = timed_commits(True)
    try:
        with StatementTimer(engine) as timer:
            timer.wrap(seq)
            t0 = time.perf_counter()
            progress = seq.drain()
            took = time.perf_counter() - t0
    finally:
        commit_s = restore()
    parts = {k: round(v, 3) for k, v in sorted(timer.seconds.items(), key=lambda kv: -kv[1])}
    parts["commit"] = round(commit_s, 3)
    parts["rest (Python: hashing, appending, parameters, SQLAlchemy)"] = round(
        took - sum(timer.seconds.values()) - commit_s, 3
    )
    out = {
        "leaves": progress.sequenced,
        "seconds": round(took, 3),
        "leaves_per_s": round(progress.sequenced / took),
        "seconds_by_part": parts,
        "calls": dict(timer.calls),
        "note": "second drain of the same rows (tree emptied, rows queued again), instrumented",
    }
    log(
        f"  breakdown (instrumented drain, {out['leaves_per_s']:,} leaves/s): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
    )
    return out


# -- proofs ------------------------------------------------------------------------------------
def _saved_index_ddl(engine: Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return str(
                conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type='index' AND name='ix_ledger_leaf_hash'"
                ).scalar()
            )
        return str(
            conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname='ix_ledger_leaf_hash'"
            ).scalar()
        )


def build_tree(store: Store, leaves: int, seed: int = 3, chunk: int = 500_000) -> dict[str, Any]:
    """Every node of a tree of ``leaves`` random leaves in ``ledger_nodes``, and one signed checkpoint."""
    engine = store.engine()
    upgrade(engine)
    ddl = _saved_index_ddl(engine)
    with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.exec_driver_sql("DROP INDEX ix_ledger_leaf_hash")  # rebuilt once at the end: sorted, not random
    rng = random.Random(seed)
    app = Appender()
    t0 = time.perf_counter()
    raw = engine.raw_connection()
    dbapi: Any = raw.driver_connection
    sqlite = engine.dialect.name == "sqlite"
    done = 0
    insert_s = 0.0
    try:
        if sqlite:
            dbapi.execute("PRAGMA synchronous=OFF")  # a bulk build; durability is not measured here
        while done < leaves:
            n = min(chunk, leaves - done)
            data = rng.randbytes(32 * n)
            nodes: list[tuple[int, int, bytes]] = []
            ext = nodes.extend
            for k in range(0, 32 * n, 32):
                ext(app.append(leaf_hash(data[k : k + 32])))
            t = time.perf_counter()
            if sqlite:
                dbapi.execute("BEGIN")
                dbapi.executemany("INSERT INTO ledger_nodes (height, idx, hash) VALUES (?, ?, ?)", nodes)
                dbapi.execute("COMMIT")
            else:
                with (
                    dbapi.cursor() as cur,
                    cur.copy("COPY ledger_nodes (height, idx, hash) FROM STDIN (FORMAT BINARY)") as cp,
                ):
                    cp.set_types(["int4", "int8", "bytea"])
                    for row in nodes:
                        cp.write_row(row)
                dbapi.commit()
            insert_s += time.perf_counter() - t
            done += n
            el = time.perf_counter() - t0
            log(f"  ... {done:,} / {leaves:,} leaves ({done / el:,.0f}/s; {insert_s:.0f} s of it inserting)")
    finally:
        raw.close()
    log("  building the leaf-hash index")
    t = time.perf_counter()
    with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.exec_driver_sql(ddl)
    index_s = time.perf_counter() - t
    if sqlite:
        seed_sqlite_statistics(engine)
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE ledger_nodes")
    top = app.root()
    settings = store.settings()
    note = load_signer(settings).sign(format_checkpoint(ORIGIN, leaves, top))
    with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(insert(ledger_checkpoints).values(size=leaves, root=top, created_at=now_us(), note=note))
        stored = root(ledger_store.DbNodes(conn), leaves)
    assert stored == top, "the root recomputed from the stored nodes differs"
    engine.dispose()
    took = time.perf_counter() - t0
    log(f"  tree of {leaves:,} leaves built in {took:.0f} s (index {index_s:.0f} s)")
    return {
        "leaves": leaves,
        "root": top.hex(),
        "seconds": round(took, 1),
        "insert_seconds": round(insert_s, 1),
        "index_seconds": round(index_s, 1),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def store_bytes(store: Store) -> int | None:
    if store.db == "sqlite":
        return sum(p.stat().st_size for p in store.data.glob("carnet.db*"))
    engine = store.engine()
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() or 0)
    finally:
        engine.dispose()


class CandidateNodes(ledger_store.DbNodes):
    """A PROPOSAL for ``carnet.ledger.store.DbNodes`` (not Carnet's code; measured with ``--candidate``).

    ``DbNodes`` asks ``WHERE (height, idx) IN (VALUES (?, ?), ...)``: SQLite 3.40 plans that as a
    full scan of ``ledger_nodes`` (EXPLAIN QUERY PLAN: ``SCAN ledger_nodes``, ``LIST SUBQUERY``),
    seconds per proof at 10M leaves. Joining the wanted pairs from a VALUES list instead makes the
    planner probe the primary key once per node (``SEARCH n USING INDEX ... (height=? AND idx=?)``),
    on SQLite and PostgreSQL alike. The cache handling is DbNodes' own.
    """

    def nodes(self, wanted: Any) -> dict[tuple[int, int], bytes]:
        found: dict[tuple[int, int], bytes] = {}
        missing = []
        cache, lock = ledger_store._cache, ledger_store._cache_lock
        cached = getattr(self, "cached", True)  # False for a verifier (DbNodes(conn, cached=False))
        with lock:
            for h, i in wanted:
                got = cache.get((self.key, h, i)) if cached else None
                if got is None:
                    missing.append((h, i))
                else:
                    found[(h, i)] = got
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            params: dict[str, int] = {}
            for k, (h, i) in enumerate(chunk):
                params[f"h{k}"], params[f"i{k}"] = h, i
            pairs = ", ".join(f"(CAST(:h{k} AS INTEGER), CAST(:i{k} AS BIGINT))" for k in range(len(chunk)))
            rows = self.conn.execute(
                text(
                    f"WITH w(h, i) AS (VALUES {pairs}) SELECT n.height, n.idx, n.hash FROM w "
                    "JOIN ledger_nodes n ON n.height = w.h AND n.idx = w.i"
                ),
                params,
            ).all()
            with lock:
                for r in rows:
                    found[(r.height, r.idx)] = bytes(r.hash)
                    if cached:
                        cache[(self.key, r.height, r.idx)] = bytes(r.hash)
                while len(cache) > ledger_store.CACHE_MAX:
                    cache.popitem(last=False)
        if any(w not in found for w in wanted):
            raise LookupError("the log has fewer nodes than asked")
        return found


def cmd_proofs(args: argparse.Namespace) -> None:
    name = (
        args.name or f"ledger-proofs-{args.db}-{args.leaves // 1_000_000}m"
        if args.leaves >= 1_000_000
        else args.name or f"ledger-proofs-{args.db}-{args.leaves}"
    )
    n = args.leaves
    store, marker = kept_store(args.db, f"proofs-{args.db}-{n}")
    built = kept_is_built(store, marker, n)
    if built is None:
        log(f"building a tree of {n:,} leaves in {marker.parent} ({args.db})")
        wipe(store, marker)
        built = build_tree(store, n)
        built["schema"] = schema_fingerprint()
        marker.write_text(json.dumps(built))
        reused = False
    else:
        log(f"reusing the tree of {n:,} leaves in {marker.parent} (built {built['built']})")
        reused = True
    out: dict[str, Any] = {
        "benchmark": "ledger-proofs",
        "db": args.db,
        "machine": STARTED,
        "settings": settings_of(args),
        "target_p99_ms": TARGET_PROOF_P99_MS,
        "tree": {
            **built,
            "reused": reused,
            "store_bytes": store_bytes(store),
            "folder": str(marker.parent),
            "pg_db": store.pg_db,
        },
    }
    rng = random.Random(args.seed)
    engine = store.engine()
    root_hash = bytes.fromhex(built["root"])
    readers: dict[str, type[ledger_store.DbNodes]] = {"": ledger_store.DbNodes}
    if args.candidate:
        readers["_candidate"] = CandidateNodes
    res: dict[str, Any] = {}
    with engine.connect() as conn:
        # correctness first (not timed): proofs at random indices verify against the signed root
        for k, i in enumerate([0, n - 1, *(rng.randrange(n) for _ in range(30))]):
            leaf = conn.execute(
                select(ledger_nodes.c.hash).where(ledger_nodes.c.height == 0, ledger_nodes.c.idx == i)
            ).scalar()
            for reader in readers.values() if k < 2 else list(readers.values())[-1:]:
                ledger_store.forget_cached_nodes()
                proof = inclusion_proof(reader(conn), i, n)
                assert verify_inclusion(bytes(leaf or b""), i, n, proof, root_hash), (reader, i)

        def measure(reader: type[ledger_store.DbNodes], count: int, cold: bool) -> list[float]:
            ms: list[float] = []
            deadline = time.perf_counter() + args.budget
            while len(ms) < count and time.perf_counter() < deadline:
                i = rng.randrange(n)
                if cold:
                    ledger_store.forget_cached_nodes()
                t = time.perf_counter()
                inclusion_proof(reader(conn), i, n)
                ms.append((time.perf_counter() - t) * 1000)
            return ms

        for suffix, reader in readers.items():
            label = "DbNodes" if not suffix else "CandidateNodes (a proposal, see its docstring)"
            load0 = loadavg()
            measure(reader, 50, True)  # warm-up: the connection, the statement cache
            cold = measure(reader, args.proofs, True)
            res["in_process_cold" + suffix] = {
                **latency_summary(cold),
                "loadavg": [load0, loadavg()],
                "reader": label,
                "what": "node cache emptied before every proof: every node read from the database",
            }
            ledger_store.forget_cached_nodes()
            load0 = loadavg()
            measure(reader, args.warmup, False)
            warm = measure(reader, args.proofs, False)
            res["in_process_warm" + suffix] = {
                **latency_summary(warm),
                "loadavg": [load0, loadavg()],
                "reader": label,
                "warmup_proofs": args.warmup,
                "cached_nodes": len(ledger_store._cache),
                "what": f"node cache kept, after up to {args.warmup:,} proofs at other random indices",
            }
            for key in ("in_process_cold" + suffix, "in_process_warm" + suffix):
                r = res[key]
                log(
                    f"  {key} ({label}): {r['n']:,} proofs, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms "
                    f"(load {r['loadavg'][0]})"
                )
    engine.dispose()
    out["results"] = res
    with workdir() as work:
        res["http"] = http_proofs(store, work, n, rng, args)
        with ceiling_server(work) as srv, httpx.Client(base_url=srv.base, timeout=30) as client:
            for _ in range(200):
                client.get("/json")
            ms = []
            load0 = loadavg()
            for _ in range(args.http_proofs):
                t = time.perf_counter()
                client.get("/json").raise_for_status()
                ms.append((time.perf_counter() - t) * 1000)
            res["ceiling_bare_get"] = {**latency_summary(ms), "loadavg": [load0, loadavg()]}
        log(
            f"  ceiling (bare GET /json, httpx, 1 connection): p50 {res['ceiling_bare_get']['p50_ms']} ms, "
            f"p99 {res['ceiling_bare_get']['p99_ms']} ms"
        )
    cases = {k: v for k, v in res.items() if k.startswith("in_process")}
    cases.update({"http_first": res["http"]["first"], "http_warm": res["http"]["warm"]})
    for r in cases.values():
        r["target_met"] = r["p99_ms"] < TARGET_PROOF_P99_MS
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print(f"\nInclusion proofs ({args.db}, {n:,} leaves)\n")
    print("| path | proofs | p50 ms | p99 ms | met |")
    print("|---|---|---|---|---|")
    for label, r in [*cases.items(), ("ceiling: bare GET", res["ceiling_bare_get"])]:
        met = "" if "target_met" not in r else ("met" if r["target_met"] else "not met")
        print(f"| {label} | {r['n']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {met} |")
    log(f"results in {path}")


@contextlib.contextmanager
def serve(
    store: Store, work: Path, name: str, extra: dict[str, str] | None = None, workers: int = 2
) -> Iterator[Server]:
    port = free_port()
    env = base_env(workers)
    env["CARNET_LOG_LEVEL"] = "warning"
    env.update(store.env())
    env.update(extra or {})
    cmd = [
        python(),
        "-m",
        "carnet.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data",
        str(store.data),
        "--workers",
        str(workers),
    ]
    server = Server(name, cmd, port, env, "/healthz", work)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def http_proofs(
    store: Store, work: Path, n: int, rng: random.Random, args: argparse.Namespace
) -> dict[str, Any]:
    import base64

    out: dict[str, Any] = {}
    with serve(store, work, "carnet-proofs") as srv, httpx.Client(base_url=srv.base, timeout=600) as client:
        r = client.get("/ledger/checkpoint")
        r.raise_for_status()
        assert f"\n{n}\n" in r.text, r.text[:200]

        def run(count: int) -> tuple[list[float], int]:
            ms: list[float] = []
            bad = 0
            deadline = time.perf_counter() + args.budget
            while len(ms) < count and time.perf_counter() < deadline:
                i = rng.randrange(n)
                t = time.perf_counter()
                resp = client.get("/ledger/proof/inclusion", params={"index": i, "size": n})
                ms.append((time.perf_counter() - t) * 1000)
                if resp.status_code != 200 or len(resp.json()["hashes"]) < 20:
                    bad += 1
            return ms, bad

        load0 = loadavg()
        cpu0 = srv.cpu_seconds()
        t0 = time.perf_counter()
        first, bad1 = run(args.http_first)
        out["first"] = {
            **latency_summary(first),
            "errors": bad1,
            "loadavg": [load0, loadavg()],
            "what": f"the first {len(first):,} requests after the server started (cold caches)",
        }
        load0 = loadavg()
        warm, bad2 = run(args.http_proofs)
        took = time.perf_counter() - t0
        out["warm"] = {
            **latency_summary(warm),
            "errors": bad2,
            "loadavg": [load0, loadavg()],
            "what": f"the next {len(warm):,} requests",
        }
        out["server_cores"] = round((srv.cpu_seconds() - cpu0) / took, 3)
        # one answer checked end to end
        i = rng.randrange(n)
        got = client.get("/ledger/proof/inclusion", params={"index": i, "size": n}).json()
        engine = store.engine()
        with engine.connect() as conn:
            leaf = bytes(
                conn.execute(
                    select(ledger_nodes.c.hash).where(ledger_nodes.c.height == 0, ledger_nodes.c.idx == i)
                ).scalar()
                or b""
            )
        engine.dispose()
        out["checked"] = verify_inclusion(
            leaf, i, n, [base64.b64decode(h) for h in got["hashes"]], root_of(store)
        )
        assert out["checked"]
    log(
        f"  HTTP, first {len(first):,} requests: p50 {out['first']['p50_ms']} ms, "
        f"p99 {out['first']['p99_ms']} ms; "
        f"next {len(warm):,}: p50 {out['warm']['p50_ms']} ms, p99 {out['warm']['p99_ms']} ms "
        f"(errors {bad1 + bad2})"
    )
    return out


def root_of(store: Store) -> bytes:
    engine = store.engine()
    try:
        with engine.connect() as conn:
            return bytes(
                conn.execute(
                    select(ledger_checkpoints.c.root).order_by(ledger_checkpoints.c.size.desc()).limit(1)
                ).scalar()
                or b""
            )
    finally:
        engine.dispose()


# -- verify ------------------------------------------------------------------------------------
VERIFY_BUCKETS = [
    ("hashing + Appender.append (carnet.ledger.merkle)", "carnet/ledger/merkle.py"),
    ("streaming the join: driver fetch (C)", "fetch"),
    ("streaming the join: SQLAlchemy row processing", "sqlalchemy/"),
    ("rows(): bytes(...) copies of content and hash", "rows (carnet/ledger/verify.py)"),
    ("check_leaves loop (Python)", "check_leaves (carnet/ledger/verify.py)"),
]


def process_and_children_cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the verifier's workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def verify_parts(engine: Engine, limit: int) -> dict[str, Any]:
    """The verifier's parts alone over the first ``limit`` leaves: the streamed join through
    SQLAlchemy (iteration only), the same SQL through the driver, and hashing + appending in memory."""
    from carnet.ledger.verify import FETCH

    a, n = audit_events.c, ledger_nodes.c
    stmt = (  # verify_database's statement (carnet.ledger.verify), bounded to the first leaves
        select(n.idx, a.content, n.hash)
        .select_from(ledger_nodes.outerjoin(audit_events, a.seq == n.seq))
        .where(n.height == 0, n.idx < limit)
        .order_by(n.idx)
    )
    out: dict[str, Any] = {"leaves": limit}
    with engine.connect() as conn:
        t = time.perf_counter()
        count = 0
        contents: list[bytes] = []
        for r in conn.execution_options(stream_results=True, yield_per=FETCH).execute(stmt):
            count += 1
            if len(contents) < 200_000:
                contents.append(bytes(r[1]))
        out["scan_sqlalchemy_per_s"] = round(count / (time.perf_counter() - t))
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        raw = engine.raw_connection()
        dconn: Any = raw.driver_connection
        try:
            cur = dconn.cursor(name="bench_scan") if engine.dialect.name == "postgresql" else dconn.cursor()
            if engine.dialect.name == "postgresql":
                cur.itersize = FETCH
            t = time.perf_counter()
            cur.execute(sql)
            count = 0
            while True:
                batch = cur.fetchmany(FETCH)
                if not batch:
                    break
                count += len(batch)
            out["scan_driver_per_s"] = round(count / (time.perf_counter() - t))
            cur.close()
            if engine.dialect.name == "postgresql":
                dconn.rollback()
        finally:
            raw.close()
    out["hash_append_in_memory"] = in_memory_ceiling(contents)
    return out


def cmd_verify(args: argparse.Namespace) -> None:
    name = args.name or f"ledger-verify-{args.db}"
    n = args.leaves
    store, marker = kept_store(args.db, f"verify-{args.db}-{n}")
    built = kept_is_built(store, marker, n)
    if built is None:
        log(f"building a log of {n:,} audit rows in {marker.parent} ({args.db})")
        wipe(store, marker)
        engine = store.engine()
        upgrade(engine)
        inserted = insert_pending(engine, n)
        if args.db == "postgres":
            analyze(engine)
        settings = store.settings()
        t = time.perf_counter()
        load0 = loadavg()
        progress = Sequencer(engine, load_signer(settings), origin_of(settings)).drain()
        took = time.perf_counter() - t
        if args.db == "postgres":
            analyze(engine)
        engine.dispose()
        built = {
            "leaves": progress.size,
            "inserted": inserted,
            "sequencer_seconds": round(took, 1),
            "sequencer_leaves_per_s": round(progress.size / took),
            "sequencer_loadavg": [load0, loadavg()],
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        log(f"  sequenced {progress.size:,} leaves in {took:.0f} s ({built['sequencer_leaves_per_s']:,}/s)")
        built["schema"] = schema_fingerprint()
        marker.write_text(json.dumps(built))
        built["reused"] = False
    else:
        log(f"reusing the log of {n:,} leaves in {marker.parent} (built {built['built']})")
        built["reused"] = True
    out: dict[str, Any] = {
        "benchmark": "ledger-verify",
        "db": args.db,
        "machine": STARTED,
        "settings": settings_of(args),
        "target_leaves_per_s": TARGET_VERIFY,
        "log": {**built, "store_bytes": store_bytes(store)},
        "runs": [],
    }
    settings = store.settings()
    verifier = NoteVerifier.from_key(load_signer(settings).verifier_key())
    engine = store.engine()
    for rep in range(args.repeat):
        raw = KEEP_ROOT / "ledger-bench-profiles" / f"{name}-{rep}.txt" if args.profile and rep == 0 else None
        load0, busy0, cpu0 = loadavg(), machine_busy_seconds(), process_and_children_cpu()
        with self_profile(raw):
            t = time.perf_counter()
            report = verify_database(engine, verifier, ORIGIN, workers=args.workers)
            took = time.perf_counter() - t
        cpu, busy = process_and_children_cpu() - cpu0, machine_busy_seconds() - busy0
        run: dict[str, Any] = {
            "leaves": report.leaves,
            "checkpoints": report.checkpoints,
            "ok": report.ok,
            "problems": [str(p) for p in report.problems[:5]],
            "seconds": round(took, 3),
            "leaves_per_s": round(report.leaves / took),
            "process_cores": round(cpu / took, 2),  # the verifier and its worker processes
            "workers": args.workers or os.cpu_count(),
            "machine_busy_cores": round(busy / took, 2),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
        run["target_met"] = report.ok and run["leaves_per_s"] >= TARGET_VERIFY
        if raw is not None:
            run["profile"] = profile_shares(raw, "verify_database (carnet/ledger/verify.py)", VERIFY_BUCKETS)
            run["profile_raw"] = str(raw)
        out["runs"].append(run)
        log(
            f"  verify_database: {run['leaves_per_s']:,} leaves/s ({took:.2f} s, ok {report.ok}, "
            f"{report.checkpoints} checkpoints, process {run['process_cores']} cores, load {load0})"
        )
        save(name, out)
    out["parts"] = verify_parts(engine, min(n, args.parts_leaves))
    log(f"  parts: {out['parts']}")
    engine.dispose()
    rates = [r["leaves_per_s"] for r in out["runs"]]
    out["leaves_per_s_median"] = round(statistics.median(rates))
    out["target_met"] = all(r["ok"] for r in out["runs"]) and out["leaves_per_s_median"] >= TARGET_VERIFY
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print(
        f"\nverify_database ({args.db}, {n:,} leaves): runs {rates} leaves/s, median "
        f"{out['leaves_per_s_median']:,}; target {TARGET_VERIFY:,}: "
        f"{'met' if out['target_met'] else 'NOT met'}"
    )
    log(f"results in {path}")


# -- reads with auditing on / off --------------------------------------------------------------
READ_BUCKETS = [
    ("sequencer (LedgerWorker thread)", "carnet/ledger/sequencer.py"),
    ("audit rows written through the group committer", "write (carnet/audit/sink.py)"),
    ("building AuditEvents (carnet.audit.events)", "carnet/audit/events.py"),
    ("audit record (carnet.audit.sink)", "carnet/audit/sink.py"),
]


def cmd_reads(args: argparse.Namespace) -> None:
    from data import Loader

    name = args.name or f"ledger-reads-{args.db}"
    out: dict[str, Any] = {
        "benchmark": "ledger-reads",
        "db": args.db,
        "machine": STARTED,
        "settings": settings_of(args),
        "target_ratio": TARGET_READS_RATIO,
        "runs": [],
    }
    kw = {"connections": args.connections, "threads": 2}
    with workdir() as work, fresh_store(args.db, work) as store:
        with serve(store, work, "carnet-load") as srv:
            loader = Loader(srv.base, keep_all=True)
            loader.directory()
            log(f"loading {args.patients:,} patients with their Observations over HTTP (auditing on)")
            stats = loader.load(args.patients, server_cpu=srv.cpu_seconds)
            out["load"] = stats.as_dict()
            engine = store.engine()
            t = time.monotonic()
            while pending_count(engine) and time.monotonic() - t < 600:
                time.sleep(1)
            out["load"]["audit_rows"] = audit_count(engine)
        if args.db == "postgres":
            analyze(engine)
        rng = random.Random(4)
        reads = [f"/fhir/Patient/{p.id}" for p in loader.sample] + [
            f"/fhir/Observation/{o}" for p in loader.sample for o in p.observations
        ]
        rng.shuffle(reads)
        (work / "reads.txt").write_text("\n".join(reads[: args.paths]) + "\n")
        searches = [f"/fhir/Observation?patient={p.id}" for p in loader.sample]
        rng.shuffle(searches)
        (work / "search.txt").write_text("\n".join(searches) + "\n")
        out["paths"] = {"reads": min(len(reads), args.paths), "searches": len(searches)}
        extra = dict(kv.split("=", 1) for kv in args.env)
        modes = {"on": {**extra}, "off": {**extra, "CARNET_AUDIT": "false"}}
        for rnd in range(args.rounds):
            order = ["on", "off"] if rnd % 2 == 0 else ["off", "on"]
            for mode in order:
                with serve(store, work, f"carnet-audit-{mode}", modes[mode]) as srv:
                    for what in ["reads"] + (["search"] if rnd == 0 and not args.no_search else []):
                        paths = str(work / f"{what}.txt")
                        wrk(srv.base, LUA / "paths.lua", duration=args.warmup, args=[paths], **kw)
                        before = audit_count(engine)
                        res = wrk(
                            srv.base,
                            LUA / "paths.lua",
                            duration=args.duration,
                            args=[paths],
                            server=srv,
                            **kw,
                        )
                        d = res.as_dict()
                        d.update(d.pop("extra", {}))
                        d.update(
                            round=rnd, mode=mode, what=what, audit_rows_written=audit_count(engine) - before
                        )
                        d["pending_at_end"] = pending_count(engine)
                        if mode == "on":
                            d["audit_rows_per_request"] = round(
                                d["audit_rows_written"] / max(res.requests, 1), 3
                            )
                        out["runs"].append(d)
                        log(
                            f"  round {rnd} audit {mode:<3} {what:<6} {res.rps:8,.0f} req/s  "
                            f"p50 {res.p50_ms:6.1f} ms  "
                            f"p99 {res.p99_ms:6.1f} ms  non-2xx {res.errors_status}  "
                            f"server {d.get('server_cores')} "
                            f"cores, machine {d['machine_busy_cores']}, load {d['loadavg_1m']}, "
                            f"audit rows {d['audit_rows_written']:,}, pending at end {d['pending_at_end']:,}"
                        )
                    save(name, out)
        if args.profile:
            from profile_summary import summarise

            out["profile"] = {}
            for mode in args.profile_modes.split(","):
                raw = KEEP_ROOT / "ledger-bench-profiles" / f"{name}-{mode}.txt"
                raw.parent.mkdir(parents=True, exist_ok=True)
                with serve(store, work, f"carnet-audit-{mode}-profile", modes[mode]) as srv:
                    reads_file = [str(work / "reads.txt")]
                    wrk(srv.base, LUA / "paths.lua", duration=args.warmup, args=reads_file, **kw)
                    cmd = [str(PY_SPY), "record", "--pid", str(srv.sid), "--subprocesses", "--format", "raw"]
                    cmd += [
                        "--rate",
                        "200",
                        "--duration",
                        str(int(args.profile)),
                        "--nonblocking",
                        "-o",
                        str(raw),
                    ]
                    cmd += ["--gil"] if args.profile_gil else []
                    cmd += ["--idle"] if args.profile_idle else []
                    if args.profile_native:  # C frames too: py-spy must pause the process
                        cmd = [c for c in cmd if c != "--nonblocking"] + ["--native"]
                    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    result: dict[str, Any] = {}
                    th = threading.Thread(
                        target=lambda srv=srv, result=result, reads_file=reads_file: result.update(
                            r=wrk(
                                srv.base,
                                LUA / "paths.lua",
                                duration=args.profile + 2,
                                args=reads_file,
                                server=srv,
                                **kw,
                            )
                        )
                    )
                    th.start()
                    spy.communicate(timeout=args.profile + 300)
                    th.join()
                spied = summarise(raw)
                requests = result["r"].rps * args.profile
                out["profile"][mode] = {
                    "raw": str(raw),
                    "gil_only": args.profile_gil,
                    "idle_sampled": args.profile_idle,
                    "rps_while_profiling": result["r"].rps,
                    "server_cores_while_profiling": result["r"].as_dict().get("server_cores"),
                    "samples_per_request": round(spied["samples"] / requests, 3),
                    **spied,
                    "audit": profile_shares(raw, "", READ_BUCKETS),
                }
                log(
                    f"  profile ({mode}): {result['r'].rps:,.0f} req/s while profiling, "
                    f"{out['profile'][mode]['samples_per_request']} samples per request"
                )
        engine.dispose()
        ceiling = wrk_ceiling(work, args)
        out["ceiling"] = ceiling
    summary: dict[str, Any] = {}
    for what in ("reads", "search"):
        on = [r["rps"] for r in out["runs"] if r["what"] == what and r["mode"] == "on"]
        off = [r["rps"] for r in out["runs"] if r["what"] == what and r["mode"] == "off"]
        if on and off:
            summary[what] = {
                "on_rps": round(statistics.fmean(on), 1),
                "off_rps": round(statistics.fmean(off), 1),
                "ratio": ratio(statistics.fmean(on), statistics.fmean(off)),
                "ratios_per_round": [ratio(a, b) for a, b in zip(on, off, strict=False)],
            }
            summary[what]["target_met"] = summary[what]["ratio"] >= TARGET_READS_RATIO
    out["summary"] = summary
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print(f"\nReads with auditing on / off ({args.db}, {args.connections} connections)\n")
    print("| round | what | audit | req/s | p50 ms | p99 ms | server cores | load 1m | audit rows/request |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out["runs"]:
        print(
            f"| {r['round']} | {r['what']} | {r['mode']} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | "
            f"{r.get('server_cores')} | {r['loadavg_1m']} | {r.get('audit_rows_per_request', '')} |"
        )
    for what, s in summary.items():
        print(
            f"\n{what}: on {s['on_rps']:,.0f} req/s, off {s['off_rps']:,.0f} req/s, ratio {s['ratio']} "
            f"(per round {s['ratios_per_round']}); target {TARGET_READS_RATIO}: "
            f"{'met' if s['target_met'] else 'NOT met'}"
        )
    log(f"results in {path}")


def wrk_ceiling(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from common import measure_ceiling

    return measure_ceiling(work, duration=min(args.duration, 15), connections=args.connections)["get"]


# -- report ------------------------------------------------------------------------------------
def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def cmd_report(_args: argparse.Namespace) -> None:
    lines = ["| figure | database | value | target | met | load 1m | run |", "|---|---|---|---|---|---|---|"]

    def run_of(d: dict[str, Any]) -> str:
        return f"{d['machine']['date']}, commit {d['machine']['commit']}"

    for db in ("sqlite", "postgres"):
        d = _load(f"ledger-sequencer-{db}")
        if d:
            r = d["runs"]
            lines.append(
                f"| sequencer, leaves/s ({d['settings']['leaves']:,} leaves, median of {len(r)}) | {db} | "
                f"{d['leaves_per_s_median']:,} ({', '.join(format(x['leaves_per_s'], ',') for x in r)}) | "
                f"≥ {TARGET_SEQUENCER:,} | {'met' if d['target_met'] else '**not met**'} | "
                f"{', '.join(str(x['loadavg_before'][0]) for x in r)} | {run_of(d)} |"
            )
    for db, suffix in (("sqlite", ""), ("sqlite", "-rerun"), ("postgres", ""), ("postgres", "-rerun")):
        d = _load(f"ledger-proofs-{db}-10m{suffix}")
        if d:
            res = d["results"]
            for label, r in (
                ("proof in process, cold node cache", res["in_process_cold"]),
                ("proof in process, warm node cache", res["in_process_warm"]),
                ("proof over HTTP, first requests", res["http"]["first"]),
                ("proof over HTTP, warm", res["http"]["warm"]),
            ):
                lines.append(
                    f"| {label}, p50 / p99 ms (10M leaves) | {db} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
                    f"p99 < {TARGET_PROOF_P99_MS:g} | {'met' if r['target_met'] else '**not met**'} | "
                    f"{r['loadavg'][0][0]} | {run_of(d)} |"
                )
            c = res["ceiling_bare_get"]
            lines.append(
                f"| ceiling: bare GET (httpx, 1 connection), p50 / p99 ms | {db} | {c['p50_ms']:.2f} / "
                f"{c['p99_ms']:.2f} | | | {c['loadavg'][0][0]} | {run_of(d)} |"
            )
    for db in ("sqlite", "postgres"):
        d = _load(f"ledger-verify-{db}")
        if d:
            r = d["runs"]
            lines.append(
                f"| `verify_database`, leaves/s ({d['log']['leaves']:,} leaves, median of {len(r)}) | {db} | "
                f"{d['leaves_per_s_median']:,} ({', '.join(format(x['leaves_per_s'], ',') for x in r)}) | "
                f"≥ {TARGET_VERIFY:,} | {'met' if d['target_met'] else '**not met**'} | "
                f"{', '.join(str(x['loadavg_before'][0]) for x in r)} | {run_of(d)} |"
            )
    for db in ("sqlite", "postgres"):
        d = _load(f"ledger-reads-{db}")
        if d:
            for what, s in d["summary"].items():
                loads = ", ".join(str(x["loadavg_1m"][0]) for x in d["runs"] if x["what"] == what)
                lines.append(
                    f"| {'reads by id' if what == 'reads' else '`Observation?patient=`'}, audit on / off "
                    f"req/s | {db} | {s['on_rps']:,.0f} / {s['off_rps']:,.0f} = **{s['ratio']:.2f}** "
                    f"(rounds {', '.join(f'{x:.2f}' for x in s['ratios_per_round'])}) | "
                    f"≥ {TARGET_READS_RATIO} | {'met' if s['target_met'] else '**not met**'} | {loads} | "
                    f"{run_of(d)} |"
                )
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sequencer", help="Sequencer.drain() throughput, in process")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--leaves", type=int, default=200_000)
    p.add_argument(
        "--batch", type=int, default=None, help="rows per run (default: the Sequencer's, per database)"
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="py-spy over each timed drain")
    p.add_argument(
        "--breakdown", action="store_true", help="an instrumented second drain: time per statement"
    )
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_sequencer)
    p = sub.add_parser("proofs", help="inclusion proofs at 10M leaves, in process and over HTTP")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--leaves", type=int, default=10_000_000)
    p.add_argument("--proofs", type=int, default=3000, help="proofs measured per in-process case")
    p.add_argument("--warmup", type=int, default=5000, help="proofs before the warm in-process case")
    p.add_argument("--http-first", type=int, default=1000)
    p.add_argument("--http-proofs", type=int, default=5000)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--budget", type=float, default=90.0, help="seconds at most per measured case")
    p.add_argument(
        "--candidate", action="store_true", help="also measure CandidateNodes (a proposed DbNodes query)"
    )
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_proofs)
    p = sub.add_parser("verify", help="verify_database throughput")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--leaves", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--parts-leaves", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=None, help="verifier processes (default: one per core)")
    p.add_argument("--profile", action="store_true", help="py-spy over the first timed run")
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("reads", help="reads with auditing on vs off, over HTTP with wrk")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--paths", type=int, default=20_000)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=25.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-search", action="store_true", help="reads by id only")
    p.add_argument("--profile-modes", default="on", help="which servers to profile: on, off or on,off")
    p.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only threads holding the GIL")
    p.add_argument("--profile-idle", action="store_true", help="py-spy --idle: idle threads sampled too")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native: C frames sampled too")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CARNET_X=V",
        help="a server setting for every measured server (an experiment), e.g. CARNET_THREADS=24",
    )
    p.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="then py-spy the audited server for SECONDS while reads run",
    )
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_reads)
    p = sub.add_parser("report", help="Markdown rows from results/ledger-*.json")
    p.set_defaults(func=cmd_report)
    args = ap.parse_args()
    STARTED.update(run_info())
    args.func(args)


if __name__ == "__main__":
    main()
