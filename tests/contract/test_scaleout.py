"""Three `carnet serve` processes on one PostgreSQL database and one S3 bucket (Swift's s3api), one
of them SIGKILLed under load: no acknowledged publication is lost, any node serves what another
wrote, and the transparency log stays one sequence that verifies. (bench/scaleout.py is the long
version, with figures.)"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from carnet.auth.issuer import SigningKeys, TokenIssuer
from carnet.auth.principal import Principal
from carnet.config import Settings
from carnet.crypto.keyfiles import load_keyring
from carnet.db.tables import audit_events, audit_pending, ledger_nodes
from carnet.ledger.keys import load_signer, origin_of
from carnet.ledger.note import NoteVerifier
from carnet.ledger.verify import verify_database
from tests.conftest import Backend, _free_port
from tests.contract.conftest import ACCESS_KEY, ENDPOINT, ROOT, SECRET_KEY

PUBLIC = "http://carnet.nodes.test"  # the load balancer's address, which every node is given
LOINC = "http://loinc.org"


# The nodes: one launcher imports Carnet once (most of a start's CPU time), then forks a process per
# node, each in its own session, that runs `carnet serve` with its own environment.
LAUNCHER = """
import json, os, sys
import carnet.app, carnet.cli.main, carnet.wiring, uvicorn
pids = []
for spec in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        out = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.environ.update(spec["env"])
        carnet.cli.main.main(["serve", "--host", "127.0.0.1", "--port", str(spec["port"]), "--data", spec["data"],
                              "--workers", "1"])
        os._exit(0)
    pids.append(pid)
print(json.dumps(pids), flush=True)
for _ in pids:
    os.wait()
"""


class Node:
    def __init__(self, name: str, data: Path) -> None:
        self.name, self.port, self.data = name, _free_port(), data
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / f"{name}.log"
        self.pid = 0

    def wait(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not answer:\n{self.log.read_text()[-3000:] if self.log.exists() else ''}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the node's session: no shutdown


@pytest.fixture
def cluster(tmp_path: Path, s3_client: Any, s3_bucket: str) -> Iterator[tuple[Backend, Settings, list[Node]]]:
    backend = Backend("postgresql", tmp_path / "pg")
    secret = secrets.token_hex(32)
    shared = Settings(data_dir=tmp_path / "origin", keys_dir=tmp_path / "origin" / "keys",
                      database_url=backend.url, base_url=PUBLIC, secret_key=secret)
    # the keys are made once and each node is given the same files (its own copy)
    shared.keys_path.mkdir(parents=True, mode=0o700)
    load_keyring(shared.keys_path)
    SigningKeys(shared.keys_path)
    load_signer(shared)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    env.update({"CARNET_DATABASE_URL": backend.url, "CARNET_BLOB_URL": f"s3://{s3_bucket}/{uuid.uuid4().hex}",
                "CARNET_S3_ENDPOINT_URL": ENDPOINT, "CARNET_S3_ACCESS_KEY_ID": ACCESS_KEY,
                "CARNET_S3_SECRET_ACCESS_KEY": SECRET_KEY, "CARNET_S3_REGION": "us-east-1",
                "CARNET_BASE_URL": PUBLIC, "CARNET_SECRET_KEY": secret, "CARNET_LOG_LEVEL": "warning",
                "CARNET_LEDGER_CHECKPOINT_SECONDS": "0.5"})
    nodes = [Node(f"node{i}", tmp_path / f"node{i}" / "data") for i in range(3)]
    specs = []
    for i, node in enumerate(nodes):
        keys = tmp_path / f"node{i}" / "keys"
        shutil.copytree(shared.keys_path, keys)
        specs.append({"port": node.port, "data": str(node.data), "log": str(node.log),
                      "env": {**env, "CARNET_KEYS_DIR": str(keys)}})
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(specs)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        for node, pid in zip(nodes, json.loads(launcher.stdout.readline()), strict=True):
            node.pid = pid
        deadline = time.monotonic() + 90
        for node in nodes:
            node.wait(deadline)
        yield backend, shared, nodes
    finally:
        for node in nodes:
            if node.pid:
                node.kill()
        launcher.wait(timeout=20)
        if launcher.stdout is not None:
            launcher.stdout.close()
        backend.close()


def test_three_nodes_one_killed_lose_no_acknowledged_write(cluster: tuple[Backend, Settings, list[Node]]
                                                         ) -> None:
    backend, shared, nodes = cluster
    token = TokenIssuer(shared, backend.engine).issue(Principal.system(), 600)
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    clients = [httpx.Client(base_url=n.base + "/fhir", headers=auth, timeout=20) for n in nodes]
    try:
        for i, c in enumerate(clients):  # one patient written through each node
            assert c.put(f"Patient/n{i}", json={"resourceType": "Patient", "id": f"n{i}"}).status_code == 201
        acked: list[tuple[str, str, bytes, int]] = []  # (DocumentReference id, Binary id, content, node)
        failed: list[str] = []
        lock, stop = threading.Lock(), threading.Event()

        def publish(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                content = b"%PDF-1.4 " + secrets.token_bytes(2048)
                dr = {"resourceType": "DocumentReference", "status": "current",
                      "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.3.99.{worker}.{n}"},
                      "type": {"coding": [{"system": LOINC, "code": "11490-0"}]},
                      "subject": {"reference": f"Patient/n{n % 3}"},
                      "content": [{"attachment": {"contentType": "application/pdf",
                                                  "data": base64.b64encode(content).decode()}}]}
                for attempt in range(6):  # round-robin; on no answer, the next node
                    node = (worker + n + attempt) % 3
                    c = clients[node]
                    try:
                        r = c.post("DocumentReference", json=dr)
                    except httpx.HTTPError:
                        continue
                    # 200: a retry of a publication whose answer was lost (the same content under the same
                    # producer's id answers the stored entry); both are acknowledgements
                    if r.status_code == 201 or (r.status_code == 200 and attempt > 0):
                        att = r.json()["content"][0]["attachment"]
                        with lock:
                            acked.append((r.json()["id"], att["url"].rsplit("/", 1)[1], content, node))
                    else:
                        with lock:
                            failed.append(f"{r.status_code} {r.text[:200]}")
                    break

        workers = [threading.Thread(target=publish, args=(w,)) for w in range(3)]
        for w in workers:
            w.start()
        time.sleep(1.5)
        with lock:
            before_kill = len(acked)
        nodes[1].kill()  # no shutdown: the whole process group, mid-request
        time.sleep(1.5)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        assert failed == []
        assert before_kill > 0 and len(acked) > before_kill  # writes went on after the kill
        # every acknowledged publication, through a surviving node other than the one that acknowledged it:
        # metadata and the exact bytes
        for doc_id, binary_id, content, node in acked:
            c = clients[2 if node == 0 else 0]
            assert c.get(f"DocumentReference/{doc_id}").status_code == 200
            got = c.get(f"Binary/{binary_id}", headers={"Accept": "application/pdf"})
            assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(content).digest()
    finally:  # closed even when an assertion fails (an unclosed socket fails a later test)
        for c in clients:
            c.close()
    # the surviving nodes' sequencers number every audit row, once, without gaps; the log verifies
    deadline = time.monotonic() + 20
    with backend.engine.connect() as conn:
        while conn.execute(select(func.count()).select_from(audit_pending)).scalar_one() and \
                time.monotonic() < deadline:
            time.sleep(0.2)
            conn.rollback()
        rows = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
        n = ledger_nodes.c
        leaves, top, seqs = conn.execute(select(func.count(), func.max(n.idx), func.count(n.seq.distinct()))
                                         .where(n.height == 0)).one()
    assert rows > 2 * len(acked) and leaves == rows == seqs and top == leaves - 1
    report = verify_database(backend.engine, NoteVerifier.from_key(load_signer(shared).verifier_key()),
                             origin_of(shared))
    assert report.ok, report.problems
    assert report.leaves > 0
