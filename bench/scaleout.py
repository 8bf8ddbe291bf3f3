"""Scale-out (issue 8): three `carnet serve` nodes on one PostgreSQL database and one S3 bucket.

The three nodes share only what a deployment shares: the database (``CARNET_DATABASE_URL``), the
bucket (``CARNET_BLOB_URL=s3://…`` on OpenStack Swift's S3 API, ``scripts/swift-s3``) and their
configuration (the public base URL, the session secret, and a copy of the same keys folder: master
key, token-signing key, ledger key — made once, copied to each node's own folder). Each node has its
own data folder, which holds nothing another node needs.

A mixed load runs across them, round-robin per request (ITI-65 and ITI-105 publications, ITI-67
searches, ITI-68 retrievals, DocumentReference reads), each request with an access token obtained
over OAuth from another node than the one it goes to. In the middle one node is SIGKILLed (its
whole process group: no shutdown), and later restarted; clients that fail on it retry on the next
node (a publication is retried with the same unique ids, which the server answers idempotently).

Then: every acknowledged publication is read back through each of the three nodes (metadata and
byte-identical content); the log is one gapless sequence (``carnet verify`` on the database passes;
every audit row is one leaf); the checkpoints the nodes served during and after the run are signed
by the one key, agree on every size, and consistency proofs between them, asked from yet another
node, verify; tokens issued by each node are accepted by every node, a client assertion used at one
node is refused at another, a token revoked at one node is refused by the others. Sizes of the
database's tables and of the bucket are kept for docs/deployment.md.

    .venv/bin/python bench/scaleout.py                     # results/scaleout.json
    .venv/bin/python bench/scaleout.py --before 10 --down 5 --after 10 --name scaleout-short
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import os
import random
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import (
    PG_URL,
    REPO,
    Server,
    base_env,
    free_port,
    log,
    machine,
    machine_busy_seconds,
    pg_create,
    pg_drop,
    python,
    save,
    workdir,
)
from mhd import LOINC, RFC3986, Pdf, pdf_document, submission

from carnet.auth.clients import ClientStore, ClientType
from carnet.auth.issuer import SigningKeys
from carnet.blobs.s3 import make_client
from carnet.config import Settings
from carnet.crypto.keyfiles import load_keyring
from carnet.db.engine import make_engine
from carnet.db.migrate import upgrade
from carnet.ledger.keys import load_signer
from carnet.ledger.merkle import verify_consistency
from carnet.ledger.note import NoteVerifier, parse_checkpoint

S3_ENDPOINT = os.environ.get("BENCH_S3_ENDPOINT", "http://127.0.0.1:18080")
S3_ACCESS_KEY = os.environ.get("BENCH_S3_ACCESS_KEY", "test:tester")
S3_SECRET_KEY = os.environ.get("BENCH_S3_SECRET_KEY", "testing")
PUBLIC_BASE = "http://carnet.scaleout.test"  # the load balancer's address, as every node is told
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "system/*.cruds"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
TYPES = ["11490-0", "34133-9", "18842-5", "11488-4", "28570-0"]  # LOINC document types of J07
UID_ROOT = "urn:oid:1.2.250.1.999.8"
RETRYABLE_STATUS = {502, 503, 504}


# -- the cluster ------------------------------------------------------------------------------
@dataclass
class Cluster:
    work: Path
    db_name: str
    bucket: str
    nodes: list[Server] = field(default_factory=list)
    secret: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def db_url(self) -> str:
        return PG_URL.format(db=self.db_name)

    def node_env(self, i: int, workers: int, extra: dict[str, str]) -> dict[str, str]:
        env = base_env(workers)
        env.update({
            "CARNET_LOG_LEVEL": "warning",
            "CARNET_DATABASE_URL": self.db_url,
            "CARNET_BLOB_URL": f"s3://{self.bucket}/carnet",
            "CARNET_S3_ENDPOINT_URL": S3_ENDPOINT,
            "CARNET_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "CARNET_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "CARNET_S3_REGION": "us-east-1",
            "CARNET_BASE_URL": PUBLIC_BASE,
            "CARNET_SECRET_KEY": self.secret,
            "CARNET_KEYS_DIR": str(self.work / f"node{i}" / "keys"),
            "CARNET_ACCESS_TOKEN_TTL_SECONDS": "3600",
        })
        env.update(extra)
        return env

    def settings(self) -> Settings:
        return Settings(data_dir=self.work / "keys-origin", keys_dir=self.work / "keys-origin" / "keys",
                        database_url=self.db_url, base_url=PUBLIC_BASE, secret_key=self.secret)

    def make_keys(self, count: int) -> None:
        """The operator's step before the first start: every key made once, then the same files
        given to each node (here: copied into each node's own folder)."""
        settings = self.settings()
        keys = settings.keys_path
        keys.mkdir(parents=True, mode=0o700)
        load_keyring(keys)  # master.key
        SigningKeys(keys)  # the token-signing key
        load_signer(settings)  # the ledger's Ed25519 key
        for i in range(count):
            shutil.copytree(keys, self.work / f"node{i}" / "keys")
        log(f"keys made once and copied to {count} nodes: {sorted(p.name for p in keys.iterdir())}")

    def start(self, count: int, workers: int, extra: dict[str, str]) -> None:
        for i in range(count):
            port = free_port()
            data = self.work / f"node{i}" / "data"
            cmd = [python(), "-m", "carnet.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--data", str(data), "--workers", str(workers)]
            node = Server(f"node{i}", cmd, port, self.node_env(i, workers, extra), "/healthz", self.work)
            self.nodes.append(node)
        # all at once: the migrations and the sequencers meet on the same database
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda n: n.start(), self.nodes))
        log("nodes up: " + ", ".join(f"{n.name} :{n.port}" for n in self.nodes))

    def kill(self, i: int) -> None:
        node = self.nodes[i]
        assert node.proc is not None
        os.killpg(node.proc.pid, signal.SIGKILL)  # the node's session: its uvicorn and workers
        node.proc.wait(timeout=10)
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# -- load -------------------------------------------------------------------------------------
@dataclass
class Attempt:
    t: float  # seconds since the load started
    node: int
    op: str
    latency_ms: float
    status: int  # 0: no answer (connection refused, reset, timeout)
    error: str = ""


@dataclass
class Published:
    uid: str
    patient: str
    doc_id: str
    binary_id: str
    sha256: str
    size: int
    node: int  # the node that acknowledged it
    t_ack: float
    kind: str


class Load:
    def __init__(self, cluster: Cluster, tokens: list[str], patients: list[str], content_bytes: int,
                 seed: int) -> None:
        self.cluster = cluster
        self.tokens = tokens
        self.patients = patients
        self.content_bytes = content_bytes
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self.ops: Counter[str] = Counter()
        self.failed_ops: list[dict[str, Any]] = []
        self.published: list[Published] = []
        self.by_patient: dict[str, list[Published]] = defaultdict(list)
        self.ambiguous = 0  # ITI-105 retries answered "unique id taken": the first attempt was stored
        self.after_failover = 0  # publications answered by another node after a failed attempt
        self.stale_searches: list[dict[str, Any]] = []
        self.wrong_bytes: list[str] = []
        self.counter = 0
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.clients = [httpx.Client(base_url=n.base, timeout=30) for n in cluster.nodes]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def next_node(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter % len(self.clients)

    def request(self, op: str, method: str, path: str, **kw: Any) -> tuple[httpx.Response | None, int]:
        """Round-robin, failing over to the next node on no answer or 502/503/504; a few rounds
        with a pause while nodes come back. Every attempt is recorded."""
        first = self.next_node()
        n = len(self.clients)
        for attempt in range(3 * n):
            node = (first + attempt) % n
            token = self.tokens[(node + 1) % n]  # issued by another node than the one asked
            headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {token}"}
            kw["headers"] = headers
            start = time.monotonic()
            try:
                r = self.clients[node].request(method, path, **kw)
                status, error = r.status_code, ""
            except httpx.HTTPError as exc:
                r, status, error = None, 0, type(exc).__name__
            self.record(Attempt(start - self.t0, node, op, (time.monotonic() - start) * 1000, status, error))
            if r is not None and r.status_code not in RETRYABLE_STATUS:
                if attempt and op in ("iti65", "iti105"):
                    with self.lock:
                        self.after_failover += 1
                return r, node
            if attempt and attempt % n == n - 1:
                time.sleep(0.2)
        return None, -1

    def record(self, a: Attempt) -> None:
        with self.lock:
            self.attempts.append(a)

    def fail(self, op: str, why: str) -> None:
        with self.lock:
            self.failed_ops.append({"op": op, "t": round(self.now(), 2), "why": why[:300]})

    def acked(self, p: Published) -> None:
        with self.lock:
            self.published.append(p)
            self.by_patient[p.patient].append(p)

    def pick_published(self) -> Published | None:
        with self.lock:
            return self.rng.choice(self.published) if self.published else None

    # operations
    def _pdf(self) -> Pdf:
        with self.lock:
            seed = self.rng.getrandbits(64)
        return Pdf(pdf_document(random.Random(seed), self.content_bytes, seed % 1000))

    def publish_iti65(self, worker: int, n: int) -> None:
        pdf = self._pdf()
        patient = self.patients[(worker * 7919 + n) % len(self.patients)]
        uid = f"{UID_ROOT}.1.{worker}.{n}.{uuid.uuid4().int % 10**12}"
        when = f"2026-{(n % 12) + 1:02d}-{(n % 28) + 1:02d}T10:00:00+01:00"
        bundle = submission(patient, uid + ".9", [(uid, pdf, TYPES[n % len(TYPES)], when)])
        r, node = self.request("iti65", "POST", "/fhir", json=bundle, headers=FHIR_JSON)
        if r is None or r.status_code != 200:
            self.fail("iti65", "no node answered" if r is None else f"{r.status_code} {r.text}")
            return
        entries = r.json()["entry"]
        locs = [e["response"]["location"].removeprefix(PUBLIC_BASE + "/fhir/") for e in entries]
        doc = next(loc.split("/")[1] for loc in locs if loc.startswith("DocumentReference/"))
        binary = next(loc.split("/")[1] for loc in locs if loc.startswith("Binary/"))
        self.acked(Published(uid, patient, doc, binary, hashlib.sha256(pdf.data).hexdigest(), len(pdf.data),
                             node, self.now(), "iti65"))

    def publish_iti105(self, worker: int, n: int) -> None:
        pdf = self._pdf()
        patient = self.patients[(worker * 104729 + n) % len(self.patients)]
        uid = f"{UID_ROOT}.2.{worker}.{n}.{uuid.uuid4().int % 10**12}"
        dr = {"resourceType": "DocumentReference", "status": "current",
              "masterIdentifier": {"system": RFC3986, "value": uid},
              "type": {"coding": [{"system": LOINC, "code": TYPES[n % len(TYPES)]}]},
              "subject": {"reference": f"Patient/{patient}"},
              "date": f"2026-{(n % 12) + 1:02d}-{(n % 28) + 1:02d}T11:00:00+01:00",
              "content": [{"attachment": {"contentType": "application/pdf", "data": pdf.b64,
                                          "hash": pdf.sha1_b64, "size": len(pdf.data)}}]}
        r, node = self.request("iti105", "POST", "/fhir/DocumentReference", json=dr, headers=FHIR_JSON)
        if r is not None and r.status_code in (400, 409, 412, 422) and "unique" in r.text.lower():
            # a retry after a lost answer: the first attempt was stored; find it by its unique id
            r, node = self.request("iti105-lookup", "GET", "/fhir/DocumentReference",
                                   params={"identifier": f"{RFC3986}|{uid}"})
            if r is not None and r.status_code == 200 and r.json().get("entry"):
                body = r.json()["entry"][0]["resource"]
                self.ambiguous += 1
            else:
                self.fail("iti105", "unique id taken but not found")
                return
        elif r is None or r.status_code not in (200, 201):  # 200: a retry answered with the stored document
            self.fail("iti105", "no node answered" if r is None else f"{r.status_code} {r.text}")
            return
        else:
            body = r.json()
        binary = body["content"][0]["attachment"]["url"].rsplit("/", 1)[1]
        self.acked(Published(uid, patient, body["id"], binary, hashlib.sha256(pdf.data).hexdigest(),
                             len(pdf.data), node, self.now(), "iti105"))

    def search(self) -> None:
        patient = self.rng.choice(self.patients)
        with self.lock:
            expected = {p.doc_id for p in self.by_patient.get(patient, [])}
        r, node = self.request("iti67", "GET", "/fhir/DocumentReference",
                               params={"patient": f"Patient/{patient}", "status": "current", "_count": "500",
                                       "_elements": "id"})
        if r is None or r.status_code != 200:
            self.fail("iti67", "no node answered" if r is None else f"{r.status_code} {r.text}")
            return
        found = {e["resource"]["id"] for e in r.json().get("entry", [])}
        missing = expected - found
        if missing:  # acknowledged (by any node) before the search was sent, and not found
            with self.lock:
                self.stale_searches.append({"patient": patient, "node": node, "missing": sorted(missing)[:5]})

    def retrieve(self) -> None:
        p = self.pick_published()
        if p is None:
            return
        r, node = self.request("iti68", "GET", f"/fhir/Binary/{p.binary_id}",
                               headers={"Accept": "application/pdf"})
        if r is None or r.status_code != 200:
            self.fail("iti68", "no node answered" if r is None else f"{r.status_code} {r.text[:200]}")
            return
        if hashlib.sha256(r.content).hexdigest() != p.sha256:
            with self.lock:
                self.wrong_bytes.append(f"{p.binary_id} via node{node}")

    def read(self) -> None:
        p = self.pick_published()
        if p is None:
            return
        r, _ = self.request("read", "GET", f"/fhir/DocumentReference/{p.doc_id}", headers=FHIR_JSON)
        if r is None or r.status_code != 200:
            self.fail("read", "no node answered" if r is None else f"{r.status_code} {r.text[:200]}")

    MIX = (("iti65", 15), ("iti105", 10), ("iti67", 25), ("iti68", 25), ("read", 25))

    def worker(self, w: int) -> None:
        rng = random.Random(w)
        ops = [name for name, weight in self.MIX for _ in range(weight)]
        n = 0
        while not self.stop.is_set():
            op = rng.choice(ops)
            n += 1
            try:
                if op == "iti65":
                    self.publish_iti65(w, n)
                elif op == "iti105":
                    self.publish_iti105(w, n)
                elif op == "iti67":
                    self.search()
                elif op == "iti68":
                    self.retrieve()
                else:
                    self.read()
            except Exception as exc:  # a benchmark reports, it does not stop
                self.fail(op, f"{type(exc).__name__}: {exc}")
            with self.lock:
                self.ops[op] += 1

    def close(self) -> None:
        for c in self.clients:
            c.close()


# -- checks -----------------------------------------------------------------------------------
def tokens_from_each_node(cluster: Cluster) -> tuple[list[str], dict[str, Any]]:
    """A backend client (private_key_jwt) registered once in the database; one token from each node."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from joserfc import jwt
    from joserfc.jwk import ECKey

    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key = ECKey.import_key(pem, {"kid": "scaleout", "alg": "ES384", "use": "sig"})
    engine = make_engine(cluster.settings())
    try:
        client, _ = ClientStore(engine).add("scale-out load", ClientType.BACKEND, redirect_uris=[],
                                            scope=[SCOPE], jwks={"keys": [dict(key.as_dict(private=False))]})
    finally:
        engine.dispose()

    def assertion() -> str:
        now = int(time.time())
        claims = {"iss": client.client_id, "sub": client.client_id, "aud": PUBLIC_BASE + "/oauth/token",
                  "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 120}
        header = {"alg": "ES384", "kid": "scaleout", "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=["ES384"])

    def token_at(node: Server, signed: str) -> httpx.Response:
        return httpx.post(node.base + "/oauth/token", timeout=30, data={
            "grant_type": "client_credentials", "scope": SCOPE, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed})

    tokens = []
    for node in cluster.nodes:
        r = token_at(node, assertion())
        if r.status_code != 200:
            raise RuntimeError(f"{node.name} refused the client's assertion: {r.status_code} {r.text}")
        tokens.append(r.json()["access_token"])
    out: dict[str, Any] = {"client_id": client.client_id}
    # every token at every node (and a forged one nowhere: tokens are checked)
    matrix = {}
    for i, tok in enumerate(tokens):
        for j, node in enumerate(cluster.nodes):
            r = httpx.get(node.base + "/fhir/DocumentReference", params={"_count": "1"}, timeout=30,
                          headers={"Authorization": f"Bearer {tok}", "Accept": "application/fhir+json"})
            matrix[f"node{i}->node{j}"] = r.status_code
    forged = tokens[0][:-4] + ("AAAA" if not tokens[0].endswith("AAAA") else "BBBB")
    out["issued_by_one_accepted_by_all"] = matrix
    out["forged_token_status"] = [httpx.get(n.base + "/fhir/DocumentReference", timeout=30,
                                            headers={"Authorization": f"Bearer {forged}"}).status_code
                                  for n in cluster.nodes]
    # one assertion, used at node 0 then presented again at node 1: refused (the jti is in the database)
    once = assertion()
    out["assertion_replayed_at_another_node"] = [token_at(cluster.nodes[0], once).status_code,
                                                 token_at(cluster.nodes[1], once).status_code]
    # a token revoked at node 0 is refused at nodes 1 and 2
    r = token_at(cluster.nodes[2], assertion())
    doomed = r.json()["access_token"]
    before = [httpx.get(n.base + "/fhir/DocumentReference", params={"_count": "1"}, timeout=30,
                        headers={"Authorization": f"Bearer {doomed}"}).status_code for n in cluster.nodes]
    rv = httpx.post(cluster.nodes[0].base + "/oauth/revoke", timeout=30,
                    data={"token": doomed, "client_assertion_type": ASSERTION_TYPE,
                          "client_assertion": assertion(), "client_id": client.client_id})
    after = [httpx.get(n.base + "/fhir/DocumentReference", params={"_count": "1"}, timeout=30,
                       headers={"Authorization": f"Bearer {doomed}"}).status_code for n in cluster.nodes]
    out["revoked_at_node0"] = {"revoke_status": rv.status_code, "before": before, "after": after}
    ok = (all(s == 200 for s in matrix.values()) and all(s == 401 for s in out["forged_token_status"])
          and out["assertion_replayed_at_another_node"][0] == 200
          and out["assertion_replayed_at_another_node"][1] in (400, 401)
          and rv.status_code == 200 and all(s == 200 for s in before) and all(s == 401 for s in after))
    out["ok"] = ok
    log(f"tokens: {matrix}; forged {out['forged_token_status']}; assertion replay "
        f"{out['assertion_replayed_at_another_node']}; revoked at node0 {before} -> {after}")
    return tokens, out


def checkpoint_sampler(cluster: Cluster, stop: threading.Event, out: list[dict[str, Any]]) -> None:
    k = 0
    while not stop.wait(1.5):
        i = k % len(cluster.nodes)
        k += 1
        try:
            r = httpx.get(cluster.nodes[i].base + "/ledger/checkpoint", timeout=5)
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            out.append({"node": i, "note": r.text})


def check_ledger(cluster: Cluster, notes: list[dict[str, Any]]) -> dict[str, Any]:
    import psycopg

    out: dict[str, Any] = {}
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={cluster.db_name}"
    deadline = time.monotonic() + 120
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            pending = conn.execute("SELECT count(*) FROM audit_pending").fetchone()[0]  # type: ignore[index]
            if pending == 0:
                break
            time.sleep(1)
        out["pending_after_drain"] = pending
        time.sleep(3)  # a checkpoint of the final size (every 2 s at most)
        rows = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]  # type: ignore[index]
        leaves, lo, hi, seqs = conn.execute(
            "SELECT count(*), min(idx), max(idx), count(DISTINCT seq) FROM ledger_nodes WHERE height = 0"
        ).fetchone()  # type: ignore[misc]
        last = conn.execute("SELECT max(size) FROM ledger_checkpoints").fetchone()[0]  # type: ignore[index]
        out["audit_rows_by_kind"] = {f"{r[0]} {r[1]}": r[2] for r in conn.execute(
            "SELECT subtype, action, count(*) FROM audit_events GROUP BY 1, 2 ORDER BY 3 DESC")}
        orphan = conn.execute("SELECT count(*) FROM ledger_nodes n LEFT JOIN audit_events a ON a.seq = n.seq "
                              "WHERE n.height = 0 AND a.seq IS NULL").fetchone()[0]  # type: ignore[index]
    out.update({"audit_rows": rows, "leaves": leaves, "leaf_index_min": lo, "leaf_index_max": hi,
                "distinct_seq_in_leaves": seqs, "leaves_without_row": orphan, "latest_checkpoint_size": last})
    out["one_gapless_sequence"] = (leaves == rows == seqs and lo == 0 and hi == leaves - 1 and orphan == 0)
    # carnet verify on the database, as an operator runs it (the verifier key from the keys folder)
    env = cluster.node_env(0, 1, {})
    done = subprocess.run([python(), "-m", "carnet.cli.main", "verify", "--data",
                           str(cluster.work / "node0" / "data")], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    out["carnet_verify"] = {"command": "carnet verify --data <node0 data> (CARNET_DATABASE_URL, "
                            "CARNET_KEYS_DIR of node0)", "exit": done.returncode,
                            "output": (done.stdout + done.stderr).strip().splitlines()[-6:]}
    log(f"carnet verify: exit {done.returncode}: {' | '.join(out['carnet_verify']['output'])}")
    # checkpoints: the three nodes' final ones plus those sampled during the run
    keys = {httpx.get(n.base + "/ledger/key", timeout=10).text.strip() for n in cluster.nodes}
    out["verifier_keys_served"] = len(keys)
    verifier = NoteVerifier.from_key(next(iter(keys)))
    finals = []
    for i, n in enumerate(cluster.nodes):
        note = httpx.get(n.base + "/ledger/checkpoint", timeout=10).text
        finals.append({"node": i, "note": note})
    by_size: dict[int, set[bytes]] = defaultdict(set)
    bad_sig = 0
    for item in notes + finals:
        try:
            cp = parse_checkpoint(verifier.verify(item["note"]))
        except ValueError:
            bad_sig += 1
            continue
        item["size"], item["root"] = cp.size, cp.root
        by_size[cp.size].add(cp.root)
    out["checkpoints_checked"] = len(notes) + len(finals)
    out["checkpoints_bad_signature"] = bad_sig
    out["sizes_with_two_roots"] = sum(1 for roots in by_size.values() if len(roots) > 1)
    out["final_checkpoint_sizes"] = [f.get("size") for f in finals]
    sizes = sorted(by_size)
    proofs_ok = proofs_bad = 0
    pairs = list(itertools.pairwise(sizes))
    pairs += [(sizes[0], sizes[-1])] if len(sizes) > 1 else []
    for k, (old, new) in enumerate(pairs):
        node = cluster.nodes[k % len(cluster.nodes)]
        r = httpx.get(node.base + "/ledger/proof/consistency", params={"old": old, "new": new}, timeout=30)
        proof = [base64.b64decode(h) for h in r.json()["hashes"]] if r.status_code == 200 else []
        good = r.status_code == 200 and verify_consistency(old, new, next(iter(by_size[old])),
                                                           next(iter(by_size[new])), proof)
        proofs_ok += good
        proofs_bad += not good
    out["consistency_proofs"] = {"verified": proofs_ok, "failed": proofs_bad, "sizes": len(sizes)}
    out["consistent"] = (bad_sig == 0 and out["sizes_with_two_roots"] == 0 and proofs_bad == 0
                         and len(keys) == 1)
    return out


def check_writes(cluster: Cluster, published: list[Published]) -> dict[str, Any]:
    """Every acknowledged publication through every node: metadata and byte-identical content."""
    clients = [httpx.Client(base_url=n.base, timeout=60) for n in cluster.nodes]
    problems: list[str] = []
    lock = threading.Lock()
    verified = Counter[int]()

    def check(p: Published) -> None:
        for i, c in enumerate(clients):
            r = c.get(f"/fhir/DocumentReference/{p.doc_id}", headers={"Accept": "application/fhir+json"})
            ok = r.status_code == 200 and r.json().get("masterIdentifier", {}).get("value") == p.uid
            b = c.get(f"/fhir/Binary/{p.binary_id}", headers={"Accept": "application/pdf"})
            ok = ok and b.status_code == 200 and hashlib.sha256(b.content).hexdigest() == p.sha256
            with lock:
                if ok:
                    verified[i] += 1
                else:
                    problems.append(f"{p.uid} via node{i}: {r.status_code}/{b.status_code}")

    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(check, published))
    finally:
        for c in clients:
            c.close()
    uids = Counter(p.uid for p in published)
    return {"acknowledged": len(published), "verified_through_node": {f"node{i}": verified[i]
                                                                      for i in range(len(clients))},
            "verified_through_every_node": min(verified[i] for i in range(len(clients))) if clients else 0,
            "duplicates_acknowledged": sum(1 for n in uids.values() if n > 1),
            "problems": problems[:20], "problem_count": len(problems),
            "written_by_node": dict(Counter(f"node{p.node}" for p in published)),
            "bytes_acknowledged": sum(p.size for p in published)}


def table_sizes(cluster: Cluster) -> dict[str, Any]:
    """Rows and bytes (heap + indexes + TOAST, pg_total_relation_size) of every table."""
    import psycopg

    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={cluster.db_name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        names = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        tables = {}
        for name in names:
            rows = conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]  # type: ignore[index]
            total, heap, idx = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass), "
                "pg_indexes_size(%s::regclass)", (name, name, name)).fetchone()  # type: ignore[misc]
            tables[name] = {"rows": rows, "total_bytes": total, "heap_bytes": heap, "index_bytes": idx}
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    return {"tables": tables, "database_bytes": db_bytes}


def measure_only(db_name: str, name: str) -> None:
    """The table sizes of a database loaded by a run still going (``--measure-db``)."""
    import psycopg

    cluster = Cluster(Path("."), db_name, "")
    out: dict[str, Any] = {"benchmark": "scaleout-sizes", "machine": machine(), "database": db_name}
    out["sizes"] = table_sizes(cluster)
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={db_name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        out["resources_by_type"] = dict(conn.execute(
            "SELECT res_type, count(*) FROM resources GROUP BY 1 ORDER BY 1").fetchall())
        out["audit_rows_by_kind"] = {f"{r[0]} {r[1]}": r[2] for r in conn.execute(
            "SELECT subtype, action, count(*) FROM audit_events GROUP BY 1, 2 ORDER BY 3 DESC")}
        out["index_rows_by_type"] = {}
        for table in ("idx_date", "idx_number", "idx_quantity", "idx_reference", "idx_string", "idx_token",
                      "idx_uri"):
            for res_type, n in conn.execute(f"SELECT res_type, count(*) FROM {table} GROUP BY 1"):
                out["index_rows_by_type"].setdefault(res_type, {})[table] = n
        out["audit_content_bytes_mean"] = conn.execute(
            "SELECT avg(octet_length(content))::float8 FROM audit_events").fetchone()[0]  # type: ignore[index]
        out["resource_content_bytes_mean"] = dict(conn.execute(
            "SELECT res_type, avg(octet_length(content))::int FROM resources GROUP BY 1").fetchall())
    path = save(name, out)
    log(f"saved {path}")


def bucket_size(s3: Any, bucket: str) -> dict[str, int]:
    count = total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            count += 1
            total += obj["Size"]
    return {"objects": count, "bytes": total}


def empty_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for k in keys:
            s3.delete_object(Bucket=bucket, Key=k["Key"])
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for up in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    s3.delete_bucket(Bucket=bucket)


def preload(cluster: Cluster, tokens: list[str], patients: list[str], count: int) -> dict[str, Any]:
    """``count`` documents published before the load (ITI-65, 10 per transaction, 2 KB PDFs, round-robin
    over the nodes), so that the table sizes measured afterwards are those of a database that holds
    something. Any failure stops the run."""
    per_bundle, size = 10, 2048
    rng = random.Random(3)
    templates = [Pdf(pdf_document(rng, size, n)) for n in range(per_bundle)]
    jobs = list(range(count // per_bundle))
    started = time.monotonic()

    def publish(k: int) -> None:
        node = cluster.nodes[k % len(cluster.nodes)]
        patient = patients[k % len(patients)]
        docs = [(f"{UID_ROOT}.3.{k}.{j}", templates[j], TYPES[j % len(TYPES)],
                 f"20{10 + k % 15}-{1 + j:02d}-{1 + k % 28:02d}T09:00:00+01:00") for j in range(per_bundle)]
        bundle = submission(patient, f"{UID_ROOT}.4.{k}", docs)
        r = httpx.post(node.base + "/fhir", json=bundle, timeout=120,
                       headers={**FHIR_JSON, "Authorization": f"Bearer {tokens[(k + 1) % len(tokens)]}"})
        if r.status_code != 200:
            raise RuntimeError(f"preload through {node.name}: {r.status_code} {r.text[:300]}")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(publish, jobs))
    seconds = time.monotonic() - started
    log(f"preloaded {len(jobs) * per_bundle:,} documents in {seconds:.0f} s "
        f"({len(jobs) * per_bundle / seconds:,.0f} documents/s)")
    return {"documents": len(jobs) * per_bundle, "content_bytes": size, "per_transaction": per_bundle,
            "seconds": round(seconds, 1), "documents_per_s": round(len(jobs) * per_bundle / seconds, 1)}


# -- figures ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


def summarise(load: Load, windows: dict[str, tuple[float, float]], duration: float) -> dict[str, Any]:
    att = load.attempts
    ok = [a for a in att if 200 <= a.status < 300]
    out: dict[str, Any] = {
        "duration_s": round(duration, 2),
        "attempts": len(att), "answered_2xx": len(ok),
        "requests_per_s": round(len(ok) / duration, 1),
        "p50_ms": pct([a.latency_ms for a in ok], 0.50), "p99_ms": pct([a.latency_ms for a in ok], 0.99),
        "operations": dict(load.ops),
        "failed_operations": len(load.failed_ops), "failed_operation_samples": load.failed_ops[:10],
    }
    per_node = {}
    for i in range(len(load.clients)):
        mine = [a for a in ok if a.node == i]
        per_node[f"node{i}"] = {"answered_2xx": len(mine), "requests_per_s": round(len(mine) / duration, 1),
                                "p50_ms": pct([a.latency_ms for a in mine], 0.5),
                                "p99_ms": pct([a.latency_ms for a in mine], 0.99)}
    out["per_node"] = per_node
    per_op = {}
    for op in sorted({a.op for a in att}):
        times = [a.latency_ms for a in ok if a.op == op]
        per_op[op] = {"answered_2xx": len(times), "p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99)}
    out["per_operation"] = per_op
    win = {}
    for name, (lo, hi) in windows.items():
        inside = [a for a in att if lo <= a.t + a.latency_ms / 1000 < hi]  # by the time it ended
        errors = [a for a in inside if not (200 <= a.status < 300)]
        win[name] = {"from_s": round(lo, 2), "to_s": round(hi, 2), "attempts": len(inside),
                     "errors": len(errors),
                     "errors_by_kind": dict(Counter(a.error or str(a.status) for a in errors)),
                     "errors_by_node": dict(Counter(f"node{a.node}" for a in errors)),
                     "failed_operations": sum(1 for f in load.failed_ops if lo <= f["t"] < hi),
                     "answered_2xx_by_node": dict(Counter(f"node{a.node}" for a in inside
                                                          if 200 <= a.status < 300)),
                     "requests_per_s": round(sum(1 for a in inside if 200 <= a.status < 300)
                                             / max(hi - lo, 1e-9), 1)}
    out["windows"] = win
    return out


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers per node")
    ap.add_argument("--clients", type=int, default=12, help="concurrent clients of the load")
    ap.add_argument("--before", type=float, default=20.0, help="seconds of load before node 1 is killed")
    ap.add_argument("--down", type=float, default=15.0, help="seconds node 1 stays down before its restart")
    ap.add_argument("--after", type=float, default=25.0, help="seconds of load once node 1 answers again")
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--content-bytes", type=int, default=32768, help="size of each published PDF")
    ap.add_argument("--preload", type=int, default=0,
                    help="documents published before the load (for the table sizes of docs/deployment.md)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--name", default="scaleout")
    ap.add_argument("--measure-db", default=None, metavar="NAME",
                    help="only measure the tables of an existing database (rows, bytes) and save them")
    args = ap.parse_args()
    if args.measure_db:
        measure_only(args.measure_db, args.name)
        return
    if args.nodes < 2:
        raise SystemExit("--nodes: at least 2 (one is killed)")
    if subprocess.run(["bash", str(REPO / "scripts" / "swift-s3"), "start"], check=False).returncode != 0:
        raise SystemExit("could not start Swift (scripts/swift-s3 start)")
    out: dict[str, Any] = {"benchmark": "scaleout", "machine": machine(), "settings": vars(args),
                           "pythonpath": os.environ.get("PYTHONPATH", ""),
                           "stores": {"database": "postgresql",
                                      "objects": f"OpenStack Swift s3api at {S3_ENDPOINT}"}}
    s3 = make_client(endpoint_url=S3_ENDPOINT, access_key_id=S3_ACCESS_KEY, secret_access_key=S3_SECRET_KEY)
    bucket = f"carnet-scaleout-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    db_name = "bench_" + uuid.uuid4().hex[:10]
    pg_create(db_name)
    try:
        with workdir(args.keep) as work:
            cluster = Cluster(work, db_name, bucket)
            try:
                run(cluster, args, out, s3)
            finally:
                cluster.stop()
        path = save(args.name, out)  # before the cleanup: emptying a large bucket takes minutes
        log(f"saved {path}")
    finally:
        pg_drop(db_name)
        empty_bucket(s3, bucket)


def run(cluster: Cluster, args: argparse.Namespace, out: dict[str, Any], s3: Any) -> None:
    engine = make_engine(cluster.settings())
    upgrade(engine)  # the schema once, before the nodes (each node's `serve` migrates too: a no-op)
    engine.dispose()
    cluster.make_keys(args.nodes)
    t = time.monotonic()
    cluster.start(args.nodes, args.workers, {})
    out["start_seconds"] = round(time.monotonic() - t, 1)
    tokens, out["tokens"] = tokens_from_each_node(cluster)
    patients = [f"so-{k:05d}" for k in range(args.patients)]
    def put_patient(item: tuple[int, str]) -> None:
        k, pid = item
        node = cluster.nodes[k % len(cluster.nodes)]
        body = {"resourceType": "Patient", "id": pid, "name": [{"family": "ECHELLE", "given": [f"P{k}"]}],
                "gender": "female" if k % 2 else "male", "birthDate": f"19{50 + k % 50}-01-{1 + k % 28:02d}"}
        r = httpx.put(f"{node.base}/fhir/Patient/{pid}", json=body, timeout=60,
                      headers={**FHIR_JSON, "Authorization": f"Bearer {tokens[k % len(tokens)]}"})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"seeding Patient/{pid}: {r.status_code} {r.text}")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(put_patient, enumerate(patients)))
    log(f"{len(patients)} patients seeded across the nodes")

    if args.preload:
        out["preload"] = preload(cluster, tokens, patients, args.preload)
    load = Load(cluster, tokens, patients, args.content_bytes, seed=8)
    notes: list[dict[str, Any]] = []
    sampler_stop = threading.Event()
    sampler = threading.Thread(target=checkpoint_sampler, args=(cluster, sampler_stop, notes), daemon=True)
    victim = 1
    threads = [threading.Thread(target=load.worker, args=(w,), daemon=True) for w in range(args.clients)]
    busy0 = machine_busy_seconds()
    load_before = os.getloadavg()[0]
    load.t0 = time.monotonic()
    sampler.start()
    for th in threads:
        th.start()
    log(f"load: {args.clients} clients on {args.nodes} nodes; node{victim} killed at {args.before:g} s")
    time.sleep(args.before)
    t_kill = load.now()
    cluster.kill(victim)
    log(f"node{victim} SIGKILLed at {t_kill:.1f} s")
    time.sleep(args.down)
    t_restart = load.now()
    cluster.nodes[victim].start()
    t_back = load.now()
    log(f"node{victim} restarted at {t_restart:.1f} s, answering at {t_back:.1f} s")
    time.sleep(args.after)
    load.stop.set()
    for th in threads:
        th.join(timeout=120)
    t_end = load.now()
    sampler_stop.set()
    sampler.join()
    busy = machine_busy_seconds() - busy0
    load.close()
    windows = {"before_kill": (0.0, t_kill), "node_down": (t_kill, t_restart),
               "restarting": (t_restart, t_back), "after_restart": (t_back, t_end + 1)}
    out["kill"] = {"node": f"node{victim}", "killed_at_s": round(t_kill, 2),
                   "restart_at_s": round(t_restart, 2),
                   "answering_at_s": round(t_back, 2), "signal": "SIGKILL to the node's process group"}
    out["load"] = summarise(load, windows, t_end)
    out["load"]["machine_busy_cores"] = round(busy / t_end, 2)
    out["load"]["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    out["load"]["stale_searches"] = {"count": len(load.stale_searches), "samples": load.stale_searches[:5]}
    out["load"]["wrong_bytes_during_load"] = load.wrong_bytes[:10]
    out["load"]["publications_after_failover"] = load.after_failover
    out["load"]["iti105_found_by_unique_id_after_retry"] = load.ambiguous
    s = out["load"]
    windows_seen = {k: (v["errors"], v["failed_operations"]) for k, v in s["windows"].items()}
    log(f"load: {s['requests_per_s']:,.1f} req/s (2xx), p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; "
        f"per node {[v['requests_per_s'] for v in s['per_node'].values()]}; windows "
        f"{windows_seen} (errors, failed operations)")
    log(f"checking {len(load.published):,} acknowledged publications through every node")
    out["writes"] = check_writes(cluster, load.published)
    w = out["writes"]
    log(f"writes: {w['acknowledged']} acknowledged, through every node {w['verified_through_every_node']}, "
        f"problems {w['problem_count']}")
    out["ledger"] = check_ledger(cluster, notes)
    lg = out["ledger"]
    log(f"ledger: {lg['leaves']:,} leaves for {lg['audit_rows']:,} audit rows, gapless "
        f"{lg['one_gapless_sequence']}; checkpoints {lg['checkpoints_checked']} checked, consistency "
        f"{lg['consistency_proofs']}; consistent {lg['consistent']}")
    out["sizes"] = table_sizes(cluster)
    out["sizes"]["bucket"] = bucket_size(s3, cluster.bucket)
    out["sizes"]["documents"] = len(load.published) + out.get("preload", {}).get("documents", 0)
    dr_rows = out["sizes"]["tables"]["document_contents"]["rows"]
    out["writes"]["document_contents_rows"] = dr_rows
    out["writes"]["rows_match_acknowledged"] = dr_rows == out["sizes"]["documents"]
    out["ok"] = bool(w["problem_count"] == 0 and w["verified_through_every_node"] == w["acknowledged"]
                     and w["rows_match_acknowledged"]
                     and lg["one_gapless_sequence"] and lg["consistent"] and lg["carnet_verify"]["exit"] == 0
                     and out["tokens"]["ok"] and not load.wrong_bytes and not load.stale_searches
                     and s["failed_operations"] == 0)
    log(f"overall: {'PASS' if out['ok'] else 'FAIL'}")
    if not out["ok"]:
        for node in cluster.nodes:
            out.setdefault("log_tails", {})[node.name] = node.log_tail(30)


if __name__ == "__main__":
    main()
