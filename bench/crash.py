"""Crash safety (issue 8): ``carnet serve`` killed with SIGKILL at random moments under concurrent publishing.

Starts ``carnet serve`` on a fresh data folder (and, for PostgreSQL, a fresh database), seeds a few
patients, then repeats a cycle ``--kills`` times:

1. ``--publishers`` threads publish documents (random, distinct bytes; a mix of ITI-65 transactions
   of one to three documents and ITI-105 simplified publications) as fast as the server takes them,
   each remembering exactly which requests were acknowledged (2xx, with the ids returned) and which
   were still in flight;
2. after a random delay (``--min-delay`` to ``--max-delay`` seconds), the server's whole process
   group is killed with SIGKILL: the kill lands in the middle of transactions, blob writes, the
   sequencer's batches;
3. the server is restarted on the same data, and the documents of the cycle are checked: every
   acknowledged one is found by ITI-67 search (``DocumentReference?identifier=``) with its metadata
   (id, patient, type, masterIdentifier, content type, size, SHA-1) and retrieved byte-identical
   through its ``attachment.url`` (ITI-68) with its content type, and is in its SubmissionSet List;
   an in-flight one is either fully present (the same checks) or fully absent (no DocumentReference,
   no SubmissionSet); a sample of older acknowledged documents is checked again.

Every ``--full-every`` cycles and at the end, the whole database is scanned: every DocumentReference
is one the publishers sent and is in exactly one SubmissionSet, every SubmissionSet's entries exist,
no Binary is left without its DocumentReference, every stored content row belongs to a committed
DocumentReference (a ``Binary/<id>`` URL is the only way to content) and its blob is in the store;
the blobs no row references (orphans, left by publications killed between the blob write and the
commit) are counted and must not be reachable. Every ``--verify-every`` cycles and at the end,
``carnet verify`` must exit 0. At the end every acknowledged document is retrieved once more.

    .venv/bin/python bench/crash.py --db sqlite --kills 200
    .venv/bin/python bench/crash.py --db postgres --kills 200

Results in bench/results/crash-<db>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PG_URL,
    REPO,
    base_env,
    free_port,
    log,
    machine,
    pg_create,
    pg_drop,
    python,
    save,
    session_pids,
    workdir,
)
from mhd import PDF_FORMAT, RFC3986, TYPES, Pdf, patient_body, submission, when_text

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
MAX_VIOLATIONS = 200  # kept in the results (all are counted)

# With --preload: a process that imports Carnet once, then forks one child per start; each child is
# a new session (killed as a group, as a `carnet serve` of its own) running the `carnet serve` command
# (carnet.cli.main) with the harness's environment and its output in the server log. Children are
# reaped by the kernel (SIGCHLD ignored), so a killed server leaves no zombie.
ZYGOTE = r"""
import json, os, signal, sys
import carnet.app, carnet.cli.main
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fd = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(0)
        os.environ.clear()
        os.environ.update(req["env"])
        code = 0
        try:
            carnet.cli.main.main(req["args"], prog_name="carnet")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code = 1
        sys.stdout.flush()
        os._exit(code)
    print(pid, flush=True)
"""


# -- what the publishers sent -------------------------------------------------------------------
@dataclass
class Doc:
    uid: str  # masterIdentifier (urn:oid:...)
    patient: str
    pdf: Pdf
    type_code: str
    when: str
    content_type: str = "application/pdf"
    dr_id: str | None = None  # from the acknowledgement
    binary_id: str | None = None
    sha256: str = ""

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.pdf.data).hexdigest()


@dataclass
class Sent:
    """One publication request and what became of it."""

    kind: str  # iti65 | iti105
    cycle: int
    docs: list[Doc]
    ss_uid: str | None = None  # ITI-65 only: ITI-105's SubmissionSet is built by the server
    state: str = "sending"  # acked | in_flight | refused
    status: int | None = None
    error: str | None = None
    list_id: str | None = None
    outcome: str | None = None  # in-flight ones after the restart: present | absent


def _doc_bytes(rng: random.Random, uid: str, size: int) -> bytes:
    """Distinct, incompressible bytes shaped like a PDF (the content type they are published with)."""
    head = b"%PDF-1.4\n% " + uid.encode() + b"\n"
    body = rng.randbytes(max(size - len(head) - 7, 16))
    return head + body + b"\n%%EOF\n"


class Publisher(threading.Thread):
    def __init__(self, run: CrashRun, n: int, seed: int, client: httpx.Client, start: threading.Barrier
                 ) -> None:
        super().__init__(daemon=True, name=f"publisher-{n}")
        self.run_ = run
        self.n = n
        self.client = client
        self.start_line = start
        self.rng = random.Random(seed)
        self.counter = 0

    def _new(self, cycle: int) -> tuple[Sent, dict[str, Any], str]:
        run, rng = self.run_, self.rng
        self.counter += 1
        root = f"urn:oid:1.2.250.1.999.8.{run.nonce}.{cycle}.{self.n}.{self.counter}"
        patient = rng.choice(run.patients)
        roll = rng.random()
        count = 1 if roll < 0.7 else rng.randint(2, 3)
        docs = []
        for k in range(count):
            uid = f"{root}.{k + 1}"
            size = int(2 ** rng.uniform(9, run.max_exponent))
            docs.append(Doc(uid, patient, Pdf(_doc_bytes(rng, uid, size)), rng.choice(TYPES),
                            when_text(rng.randrange(3000), rng.randrange(1440))))
        if roll < 0.35:
            d = docs[0]
            body = {"resourceType": "DocumentReference", "status": "current",
                    "masterIdentifier": {"system": RFC3986, "value": d.uid},
                    "subject": {"reference": f"Patient/{patient}"},
                    "type": {"coding": [{"system": "http://loinc.org", "code": d.type_code}]}, "date": d.when,
                    "content": [{"format": PDF_FORMAT, "attachment": {
                        "contentType": d.content_type, "data": d.pdf.b64, "hash": d.pdf.sha1_b64}}]}
            return Sent("iti105", cycle, docs), body, "/DocumentReference"
        ss_uid = f"{root}.0"
        body = submission(patient, ss_uid, [(d.uid, d.pdf, d.type_code, d.when) for d in docs])
        return Sent("iti65", cycle, docs, ss_uid=ss_uid), body, ""

    def run(self) -> None:
        run, client = self.run_, self.client
        sent, body, path = self._new(run.cycle)
        self.start_line.wait()  # every publisher has its first request ready: the kill's clock starts
        while not run.killing.is_set():
            with run.lock:
                run.sent.append(sent)
            try:
                r = client.post(path, json=body)
            except httpx.HTTPError as exc:
                sent.state, sent.error = "in_flight", type(exc).__name__
                if not run.killing.is_set():  # not the kill: the server failed us
                    run.violation(sent.cycle, "request-failed", f"{sent.docs[0].uid}: {exc!r}")
                return
            sent.status = r.status_code
            if 200 <= r.status_code < 300:
                try:
                    _acknowledged(sent, r)
                except (KeyError, IndexError, ValueError) as exc:
                    run.violation(sent.cycle, "bad-acknowledgement", f"{exc!r}: {r.text[:300]}")
                sent.state = "acked"
                run.first_ack.set()
            else:
                sent.state, sent.error = "refused", r.text[:300]
                run.violation(sent.cycle, "refused", f"{r.status_code} {r.text[:300]}")
            sent, body, path = self._new(run.cycle)


def _id_of(location: str) -> str:
    parts = location.split("/")
    i = max(i for i, p in enumerate(parts) if p in ("DocumentReference", "Binary", "List"))
    return parts[i + 1]


def _acknowledged(sent: Sent, r: httpx.Response) -> None:
    body = r.json()
    if sent.kind == "iti105":
        d = sent.docs[0]
        d.dr_id = body["id"]
        d.binary_id = _id_of(body["content"][0]["attachment"]["url"])
        return
    entries = body["entry"]
    sent.list_id = _id_of(entries[0]["response"]["location"])
    for k, d in enumerate(sent.docs):
        d.dr_id = _id_of(entries[1 + 2 * k]["response"]["location"])
        d.binary_id = _id_of(entries[2 + 2 * k]["response"]["location"])


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Counts:
    kills: int = 0
    requests: int = 0
    acked_requests: int = 0
    acked_documents: int = 0
    in_flight_requests: int = 0
    in_flight_present: int = 0
    in_flight_absent: int = 0
    refused: int = 0
    documents_checked: int = 0  # retrievals compared byte for byte (a document may be checked again)
    full_scans: int = 0
    verify_runs: int = 0
    verify_passes: int = 0
    violations: int = 0


@dataclass
class CrashRun:
    db: str  # sqlite | postgres
    work: Path
    workers: int = 1
    publishers: int = 4
    patients_n: int = 3
    min_delay: float = 0.2
    preload: bool = False  # fork each server from a process that imported Carnet (see ZYGOTE)
    early: float = 0.2  # share of the kills timed from the start of publishing, not from a first ack
    max_delay: float = 2.0
    max_exponent: float = 19.0  # document sizes 2^9 .. 2^max_exponent bytes, log-uniform
    sample: int = 5
    full_every: int = 20
    verify_every: int = 5
    seed: int = 8
    quiet: bool = False
    counts: Counts = field(default_factory=Counts)
    violations: list[dict[str, Any]] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    startups: list[float] = field(default_factory=list)
    verify_seconds: list[float] = field(default_factory=list)
    scan: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.nonce = self.rng.randrange(10**6)
        self.data = self.work / "data"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = base_env(self.workers)
        self.env["CARNET_LOG_LEVEL"] = "warning"
        self.env["CARNET_BASE_URL"] = self.base  # the tokens' issuer: the same port across restarts
        self.pg_db: str | None = None
        self.db_url: str | None = None
        self.lock = threading.Lock()
        self.killing = threading.Event()
        self.first_ack = threading.Event()
        self.clients: list[httpx.Client] = []
        self.sent: list[Sent] = []
        self.cycle = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.zygote: subprocess.Popen[str] | None = None
        self.headers = dict(FHIR_JSON)
        self.patients = [f"crash-{k + 1}" for k in range(self.patients_n)]
        self.engine: Any = None
        self.log_path = self.work / "carnet.log"

    def say(self, msg: str) -> None:
        if not self.quiet:
            log(msg)

    def violation(self, cycle: int, kind: str, detail: str) -> None:
        with self.lock:
            self.counts.violations += 1
            if len(self.violations) < MAX_VIOLATIONS:
                self.violations.append({"cycle": cycle, "kind": kind, "detail": detail})
        self.say(f"VIOLATION cycle {cycle} {kind}: {detail}")

    # -- server ---------------------------------------------------------------------------------
    def setup(self) -> None:
        if self.db == "postgres":
            self.pg_db = "bench_" + uuid.uuid4().hex[:10]
            pg_create(self.pg_db)
            self.db_url = PG_URL.format(db=self.pg_db)
            self.env["CARNET_DATABASE_URL"] = self.db_url
        self.start()
        from carnet.auth.issuer import TokenIssuer
        from carnet.auth.principal import Principal
        from carnet.config import Settings
        from carnet.db.engine import make_engine

        self.settings = Settings(data_dir=self.data, database_url=self.db_url, base_url=self.base)
        self.engine = make_engine(self.settings)
        # what `carnet token --as system` prints, without the start of a process
        issuer = TokenIssuer(self.settings, self.engine)
        token = issuer.issue(Principal.system(), 86400, client_id="carnet-cli")
        self.headers["Authorization"] = f"Bearer {token}"
        prng = random.Random(self.seed)
        with self.client() as c:
            for pid in self.patients:
                r = c.put(f"/Patient/{pid}", json=patient_body(pid, prng))
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"seeding Patient/{pid}: {r.status_code} {r.text[:300]}")
        self.clients = [self.client() for _ in range(self.publishers)]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base + "/fhir", headers=self.headers, timeout=120)

    def start(self, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--data", str(self.data),
                "--workers", str(self.workers)]
        if self.preload:
            self.pid = self._zygote_start(args)
        else:
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen([python(), "-m", "carnet.cli.main", *args], env=self.env,
                                             cwd=REPO, stdout=logf, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            self.pid = self.proc.pid
        with httpx.Client(timeout=2) as probe:
            while time.monotonic() - t0 < timeout:
                if not session_pids(self.pid):
                    raise RuntimeError(f"carnet serve exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if probe.get(self.base + "/healthz").status_code == 200:
                        if not session_pids(self.pid):  # another program answered on the port
                            raise RuntimeError(f"carnet serve exited:\n{self.log_tail()}")
                        seconds = time.monotonic() - t0
                        self.startups.append(round(seconds, 3))
                        return seconds
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"carnet serve did not answer within {timeout} s:\n{self.log_tail()}")

    def _zygote_start(self, args: list[str]) -> int:
        """``carnet serve`` in a child forked from a process that has imported Carnet once (the imports
        are most of a start's CPU); the child is a session of its own, killed the same way."""
        if self.zygote is None or self.zygote.poll() is not None:
            self.zygote = subprocess.Popen([python(), "-c", ZYGOTE], env=self.env, cwd=REPO, text=True,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.zygote.stdin is not None
        assert self.zygote.stdout is not None
        self.zygote.stdin.write(json.dumps({"args": args, "env": self.env, "log": str(self.log_path)}) + "\n")
        self.zygote.stdin.flush()
        return int(self.zygote.stdout.readline())

    def kill(self) -> None:
        """SIGKILL the server's process group (the supervisor and its workers) and wait until all are gone."""
        if self.pid is None:
            return
        pgid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while session_pids(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.proc = None
        self.pid = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        self.kill()
        if self.zygote is not None:
            self.zygote.kill()
            self.zygote.wait()
            for stream in (self.zygote.stdin, self.zygote.stdout):
                if stream is not None:
                    stream.close()
        for c in self.clients:
            c.close()
        if self.engine is not None:
            self.engine.dispose()
        if self.pg_db:
            pg_drop(self.pg_db)

    # -- a cycle --------------------------------------------------------------------------------
    def crash_cycle(self) -> None:
        self.cycle += 1
        first = len(self.sent)
        self.killing.clear()
        self.first_ack.clear()
        line = threading.Barrier(self.publishers + 1)
        threads = [Publisher(self, k, self.rng.randrange(2**32), self.clients[k], line)
                   for k in range(self.publishers)]
        for t in threads:
            t.start()
        early = self.rng.random() < self.early
        delay = self.rng.uniform(self.min_delay, self.max_delay)
        line.wait(timeout=60)
        if not early:  # most kills: once the server acknowledges (it is warm), at a random moment
            self.first_ack.wait(timeout=60)
        time.sleep(delay)
        self.killing.set()
        self.kill()
        self.counts.kills += 1
        for t in threads:
            t.join(timeout=60)
        with self.lock:
            mine = self.sent[first:]
        for s in mine:
            if s.state == "sending":  # the thread had not started its request when it saw the kill
                s.state, s.error = "in_flight", "not sent"
        startup = self.start()
        acked = [s for s in mine if s.state == "acked"]
        flying = [s for s in mine if s.state == "in_flight"]
        self.counts.requests += len(mine)
        self.counts.acked_requests += len(acked)
        self.counts.acked_documents += sum(len(s.docs) for s in acked)
        self.counts.in_flight_requests += len(flying)
        self.counts.refused += sum(1 for s in mine if s.state == "refused")
        older = [s for s in self.sent[:first] if s.state == "acked"]
        with self.client() as c:
            for s in mine + self.rng.sample(older, min(self.sample, len(older))):
                try:
                    self.check_sent(c, s)
                except (RuntimeError, httpx.HTTPError) as exc:  # a search or a read that failed
                    self.violation(s.cycle, "check-failed", f"{s.kind} {s.docs[0].uid}: {exc}")
        present = sum(1 for s in flying if s.outcome == "present")
        self.cycles.append({"cycle": self.cycle, "early": early, "delay_s": round(delay, 3),
                            "requests": len(mine),
                            "acked": len(acked), "in_flight": len(flying), "in_flight_present": present,
                            "startup_s": round(startup, 3)})
        self.say(f"cycle {self.cycle}: killed {delay:.2f} s after {'the start' if early else 'an ack'}, "
                 f"{len(acked)} acknowledged, "
                 f"{len(flying)} in flight ({present} present), restart {startup:.2f} s, "
                 f"{self.counts.violations} violations so far")

    # -- checks ---------------------------------------------------------------------------------
    def check_sent(self, c: httpx.Client, s: Sent) -> None:
        found = [self.find(c, s.cycle, d) for d in s.docs]
        there = [f is not None for f in found]
        if s.state == "acked":
            for d, f in zip(s.docs, found, strict=True):
                if f is None:
                    self.violation(s.cycle, "acknowledged-missing",
                                   f"{s.kind} {d.uid} (DocumentReference/{d.dr_id})")
                else:
                    self.check_doc(c, s.cycle, d, f, acked=True)
            if all(there):
                self.check_submission(c, s, found)
            return
        if any(there) and not all(there):
            self.violation(s.cycle, "half-transaction", f"{s.kind} {s.ss_uid}: documents present {there}")
        if all(there):
            for d, f in zip(s.docs, found, strict=True):
                assert f is not None
                self.check_doc(c, s.cycle, d, f, acked=False)
            self.check_submission(c, s, found)
        elif s.ss_uid is not None:
            lists = self.search(c, f"List?identifier={RFC3986}|{s.ss_uid}")
            if lists:
                self.violation(s.cycle, "half-transaction", f"SubmissionSet {s.ss_uid} without its documents")
        if s.state == "in_flight" and s.outcome is None:
            s.outcome = "present" if all(there) else "absent"
            if all(there):
                self.counts.in_flight_present += 1
            else:
                self.counts.in_flight_absent += 1
        if s.state == "refused" and any(there):
            self.violation(s.cycle, "refused-but-stored", f"{s.kind} {s.docs[0].uid} (status {s.status})")

    def search(self, c: httpx.Client, query: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        url: str | None = query
        while url:
            r = c.get(url)
            if r.status_code != 200:
                raise RuntimeError(f"search {query}: {r.status_code} {r.text[:300]}")
            page = r.json()
            out += [e["resource"] for e in page.get("entry", [])
                    if e.get("search", {}).get("mode") == "match"]
            nxt = [ln["url"] for ln in page.get("link", []) if ln["relation"] == "next"]
            url = _fhir_path(nxt[0]) if nxt else None
        return out

    def find(self, c: httpx.Client, cycle: int, d: Doc) -> dict[str, Any] | None:
        """ITI-67 search by masterIdentifier: the DocumentReference, None when absent."""
        hits = self.search(c, f"DocumentReference?identifier={RFC3986}|{d.uid}")
        if len(hits) > 1:
            self.violation(cycle, "duplicate", f"{d.uid}: {len(hits)} DocumentReferences")
        return hits[0] if hits else None

    def check_doc(self, c: httpx.Client, cycle: int, d: Doc, dr: dict[str, Any], *, acked: bool) -> None:
        problems = []
        att = (dr.get("content") or [{}])[0].get("attachment", {})
        expect = {"masterIdentifier": d.uid, "subject": f"Patient/{d.patient}", "type": d.type_code,
                  "status": "current", "contentType": d.content_type, "size": len(d.pdf.data),
                  "hash": d.pdf.sha1_b64}
        got = {"masterIdentifier": (dr.get("masterIdentifier") or {}).get("value"),
               "subject": (dr.get("subject") or {}).get("reference"),
               "type": ((dr.get("type") or {}).get("coding") or [{}])[0].get("code"),
               "status": dr.get("status"),
               "contentType": att.get("contentType"), "size": att.get("size"), "hash": att.get("hash")}
        problems += [f"{k} {got[k]!r} instead of {v!r}" for k, v in expect.items() if got[k] != v]
        if acked and dr.get("id") != d.dr_id:
            problems.append(f"id {dr.get('id')} instead of the acknowledged {d.dr_id}")
        url = att.get("url")
        if not url:
            problems.append("no attachment.url")
        else:
            binary = _id_of(url)
            if acked and binary != d.binary_id:
                problems.append(f"attachment.url names Binary/{binary}, acknowledged Binary/{d.binary_id}")
            r = c.get(_fhir_path(url), headers={"Accept": "*/*"})
            self.counts.documents_checked += 1
            if r.status_code != 200:
                problems.append(f"GET {url}: {r.status_code} {r.text[:200]}")
            else:
                if r.content != d.pdf.data:
                    problems.append(f"content differs ({len(r.content)} bytes, {len(d.pdf.data)} sent)")
                if not r.headers.get("content-type", "").startswith(d.content_type):
                    problems.append(f"content type {r.headers.get('content-type')}")
        if problems:
            kind = "acknowledged-wrong" if acked else "in-flight-partial"
            self.violation(cycle, kind, f"{d.uid} DocumentReference/{dr.get('id')}: " + "; ".join(problems))

    def check_submission(self, c: httpx.Client, s: Sent, found: list[dict[str, Any] | None]) -> None:
        ids = {f["id"] for f in found if f is not None}
        if s.ss_uid is not None:
            lists = self.search(c, f"List?identifier={RFC3986}|{s.ss_uid}")
        else:
            lists = self.search(c, f"List?item=DocumentReference/{next(iter(ids))}")
        if len(lists) != 1:
            self.violation(s.cycle, "submission-set",
                           f"{s.kind} {s.docs[0].uid}: {len(lists)} SubmissionSets")
            return
        items = {e["item"]["reference"].rsplit("/", 1)[-1] for e in lists[0].get("entry", [])}
        if items != ids:
            self.violation(s.cycle, "submission-set", f"{s.kind} {s.docs[0].uid}: entries {sorted(items)}, "
                                                      f"documents {sorted(ids)}")
        if s.state == "acked" and s.list_id is not None and lists[0]["id"] != s.list_id:
            self.violation(s.cycle, "submission-set", f"List/{lists[0]['id']} instead of the acknowledged "
                                                      f"List/{s.list_id}")

    def full_scan(self, *, every_document: bool) -> dict[str, Any]:
        """The whole database against what was sent; the blob store against the database."""
        from sqlalchemy import select

        from carnet.blobs.encrypted import address
        from carnet.crypto.keyfiles import load_keyring
        from carnet.crypto.sqlstore import SqlDataKeyStore
        from carnet.db.tables import document_contents
        from carnet.documents.storage import open_document_store

        cycle = self.cycle
        self.counts.full_scans += 1
        by_uid = {d.uid: (s, d) for s in self.sent for d in s.docs}
        with self.client() as c:
            drs = self.search(c, "DocumentReference?_count=1000")
            lists = self.search(c, "List?_count=1000")
            binaries = self.search(c, "Binary?_count=1000")
            seen: dict[str, str] = {}
            dr_binary: dict[str, str] = {}
            for dr in drs:
                uid = (dr.get("masterIdentifier") or {}).get("value")
                if uid not in by_uid:
                    self.violation(cycle, "unknown-document", f"DocumentReference/{dr['id']} {uid}")
                elif by_uid[uid][0].state == "in_flight" and by_uid[uid][0].outcome != "present":
                    self.violation(cycle, "appeared-later", f"{uid} was absent after its crash")
                if uid in seen:
                    self.violation(cycle, "duplicate",
                                   f"{uid}: DocumentReference/{seen[uid]} and /{dr['id']}")
                seen[str(uid)] = dr["id"]
                url = ((dr.get("content") or [{}])[0].get("attachment") or {}).get("url")
                if url:
                    dr_binary[_id_of(url)] = dr["id"]
            listed: dict[str, int] = {}
            for lst in lists:
                entries = lst.get("entry", [])
                if not entries:
                    self.violation(cycle, "empty-submission-set", f"List/{lst['id']}")
                for e in entries:
                    ref = e["item"]["reference"].rsplit("/", 1)[-1]
                    listed[ref] = listed.get(ref, 0) + 1
            dr_ids = {dr["id"] for dr in drs}
            for ref in set(listed) - dr_ids:
                self.violation(cycle, "half-transaction",
                               f"a SubmissionSet lists DocumentReference/{ref}, absent")
            for dr_id in dr_ids:
                if listed.get(dr_id, 0) != 1:
                    self.violation(cycle, "half-transaction",
                                   f"DocumentReference/{dr_id} in {listed.get(dr_id, 0)} SubmissionSets")
            for b in binaries:
                if b["id"] not in dr_binary:
                    self.violation(cycle, "orphan-binary", f"Binary/{b['id']} named by no DocumentReference")
            missing = [d.uid for s in self.sent if s.state == "acked" for d in s.docs if d.uid not in seen]
            for uid in missing:
                self.violation(cycle, "acknowledged-missing", uid)
            # content rows and the blob store
            t = document_contents.c
            with self.engine.connect() as conn:
                rows = conn.execute(select(t.binary_id, t.patient_id, t.blob_key)).all()
            store = open_document_store(self.settings, self.engine)
            stored = {b.key for b in store.objects.list()}
            referenced = {r.blob_key for r in rows}
            for r in rows:
                if r.binary_id not in dr_binary:
                    served = c.get(f"Binary/{r.binary_id}", headers={"Accept": "*/*"}).status_code
                    self.violation(cycle, "orphan-served",
                                   f"content of Binary/{r.binary_id} named by no DocumentReference "
                                   f"(GET answers {served})")
                if r.blob_key not in stored:
                    self.violation(cycle, "missing-blob",
                                   f"Binary/{r.binary_id}: blob {r.blob_key[:16]}… absent")
            orphans = stored - referenced
            # orphans left by publications killed after their blob write: recognised by their address
            keyring = load_keyring(self.settings.keys_path, create=False)
            keys = SqlDataKeyStore(self.engine)
            expected: dict[str, str] = {}
            for pid in self.patients:
                with contextlib.suppress(Exception):
                    dk = keyring.data_key(pid, keys)
                    for s in self.sent:
                        for d in s.docs:
                            if d.patient == pid:
                                expected[address(dk, d.sha256)] = d.uid
            absent_uids = {d.uid for s in self.sent if s.outcome == "absent" for d in s.docs}
            from_in_flight = sum(1 for k in orphans if expected.get(k) in absent_uids)
            for k in orphans:
                uid = expected.get(k)
                if uid is not None and uid in seen:
                    self.violation(cycle, "orphan-of-stored", f"{uid}: a second blob for a stored document")
            staging = self.data / "blobs" / ".staging"
            retrieved = 0
            by_id = {dr["id"]: dr for dr in drs}
            if every_document:
                for s in self.sent:
                    if s.state == "acked" or s.outcome == "present":
                        for d in s.docs:
                            if d.uid in seen:
                                self.check_doc(c, cycle, d, by_id[seen[d.uid]], acked=s.state == "acked")
                                retrieved += 1
        self.scan = {"cycle": cycle, "document_references": len(drs), "submission_sets": len(lists),
                     "binaries": len(binaries), "content_rows": len(rows), "blobs_stored": len(stored),
                     "orphan_blobs": len(orphans), "orphan_blobs_of_in_flight_documents": from_in_flight,
                     "staging_files": len(list(staging.iterdir())) if staging.exists() else 0,
                     "documents_retrieved": retrieved}
        self.say(f"full scan after cycle {cycle}: {self.scan}")
        return self.scan

    def verify(self) -> bool:
        """``carnet verify --data DIR`` (the database named by CARNET_DATABASE_URL for PostgreSQL) exits 0.
        With ``preload`` the command runs in this process (no start of a process), its node cache
        emptied first so that every node is read from the database."""
        t0 = time.monotonic()
        args = ["verify", "--data", str(self.data)]
        if self.preload:
            from click.testing import CliRunner

            from carnet.cli.main import main as cli
            from carnet.ledger.store import forget_cached_nodes

            forget_cached_nodes()
            env = {k: v for k, v in self.env.items() if k.startswith("CARNET_")}
            res = CliRunner().invoke(cli, args, env=env)
            code, text = res.exit_code, res.output + (repr(res.exception) if res.exception else "")
        else:
            r = subprocess.run([python(), "-m", "carnet.cli.main", *args], env=self.env, cwd=REPO,
                               capture_output=True, text=True)
            code, text = r.returncode, r.stdout + r.stderr
        self.verify_seconds.append(round(time.monotonic() - t0, 2))
        self.counts.verify_runs += 1
        if code == 0:
            self.counts.verify_passes += 1
            return True
        self.violation(self.cycle, "verify-failed", f"exit {code}: {text[-600:]}")
        return False

    def results(self) -> dict[str, Any]:
        c = self.counts
        present = [x for x in self.cycles if x["in_flight_present"]]
        return {"counts": dict(c.__dict__), "violations": self.violations, "last_full_scan": self.scan,
                "startup_s": _stats(self.startups), "verify_s": _stats(self.verify_seconds),
                "cycles_with_in_flight_present": len(present), "cycles": self.cycles}


def _fhir_path(url: str) -> str:
    """A URL the server gave (absolute, on its FHIR base) as a path relative to the base."""
    parts = urlsplit(url)
    path = parts.path.split("/fhir/", 1)[-1] if parts.scheme else url
    return path + (f"?{parts.query}" if parts.query else "")


def _stats(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    s = sorted(xs)
    return {"n": len(s), "mean": round(sum(s) / len(s), 3), "p50": s[len(s) // 2], "max": s[-1]}


def run_crashes(db: str, work: Path, kills: int, *, progress: Callable[[CrashRun], None] | None = None,
                **options: Any) -> dict[str, Any]:
    """The whole harness: setup, ``kills`` crash cycles with their checks, the final scan and verify."""
    run = CrashRun(db, work, **options)
    t0 = time.monotonic()
    try:
        run.setup()
        for k in range(1, kills + 1):
            run.crash_cycle()
            if k % run.verify_every == 0 and k != kills:
                run.verify()
            if k % run.full_every == 0 and k != kills:
                run.full_scan(every_document=False)
            if progress:
                progress(run)
        run.full_scan(every_document=True)
        run.verify()
    finally:
        run.close()
    out = run.results()
    minutes = (time.monotonic() - t0) / 60
    out["wall_minutes"] = round(minutes, 2)
    out["cycles_per_minute"] = round(run.counts.kills / minutes, 2) if minutes else 0.0
    return out


def snapshot() -> None:
    """Re-run this command on a copy of the last commit's src (``git archive HEAD``), first on the
    path: a run restarts the server hundreds of times, and the checkout may be edited meanwhile."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    import tempfile

    dest = Path(tempfile.mkdtemp(prefix="carnet-crash-src-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True,
                             check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(dest / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["CARNET_CRASH_SOURCE"] = f"commit {commit[:12]} ({dest / 'src'})"
    log(f"running on a snapshot of commit {commit[:12]} in {dest}")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="carnet serve --workers")
    ap.add_argument("--publishers", type=int, default=4, help="concurrent publishing threads")
    ap.add_argument("--patients", type=int, default=3)
    ap.add_argument("--min-delay", type=float, default=0.2,
                    help="shortest time from restart to kill, seconds")
    ap.add_argument("--max-delay", type=float, default=2.0,
                    help="longest time from restart to kill, seconds")
    ap.add_argument("--preload", action="store_true",
                    help="fork each server from a process that imported Carnet once (faster restarts)")
    ap.add_argument("--early", type=float, default=0.2,
                    help="share of the kills timed from the restart (others: from a first acknowledgement)")
    ap.add_argument("--max-exponent", type=float, default=19.0,
                    help="documents are 2^9 to 2^N bytes (log-uniform)")
    ap.add_argument("--sample", type=int, default=5,
                    help="older acknowledged documents checked again per cycle")
    ap.add_argument("--full-every", type=int, default=20,
                    help="full database and blob store scan every N kills")
    ap.add_argument("--verify-every", type=int, default=5, help="carnet verify every N kills")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument("--name", default=None, help="results file name (default crash-<db>)")
    ap.add_argument("--working-tree", action="store_true",
                    help="run the checkout's src as it is, not a snapshot of its last commit")
    args = ap.parse_args()
    if not args.working_tree and "CARNET_CRASH_SOURCE" not in os.environ:
        snapshot()  # does not return
    name = args.name or f"crash-{args.db}"
    out: dict[str, Any] = {"benchmark": "crash", "db": args.db, "machine": machine(),
                           "source": os.environ.get("CARNET_CRASH_SOURCE", "working tree"),
                           "settings": {k: v for k, v in vars(args).items() if k != "keep"}}
    def progress(run: CrashRun) -> None:
        if run.counts.kills % 10 == 0:
            save(name, {**out, "partial": True, **run.results()})

    with workdir(args.keep, prefix="carnet-crash-") as work:
        res = run_crashes(args.db, work, args.kills, progress=progress, workers=args.workers,
                          publishers=args.publishers, patients_n=args.patients, min_delay=args.min_delay,
                          max_delay=args.max_delay, early=args.early, preload=args.preload,
                          max_exponent=args.max_exponent, sample=args.sample, full_every=args.full_every,
                          verify_every=args.verify_every, seed=args.seed)
    out.update(res)
    out["loadavg_at_end"] = os.getloadavg()
    path = save(name, out)
    c = res["counts"]
    log(f"{args.db}: {c['kills']} kills, {c['acked_documents']} acknowledged documents "
        f"({c['acked_requests']} requests), in flight {c['in_flight_requests']} "
        f"({c['in_flight_present']} present, {c['in_flight_absent']} absent), refused {c['refused']}, "
        f"verify {c['verify_passes']}/{c['verify_runs']}, violations {c['violations']}; "
        f"startup p50 {res['startup_s'].get('p50')} s, {res['cycles_per_minute']} cycles/min")
    log(f"results in {path}")
    if c["violations"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
