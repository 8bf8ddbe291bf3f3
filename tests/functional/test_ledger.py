"""The transparency log on both databases: signed checkpoints, proofs from stored nodes, and
``carnet verify`` catching every edit made behind the server's back (SPEC C5).

The tampering is done the way an administrator with database access would: plain SQL on
``audit_events``, ``ledger_nodes`` and ``ledger_checkpoints``.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from carnet.audit import AuditRecord
from carnet.audit.sink import LedgerAudit
from carnet.auth.principal import Kind, Principal
from carnet.cli.main import main
from carnet.ledger.keys import load_signer, origin_of
from carnet.ledger.merkle import MemoryNodes, leaf_hash, root, verify_consistency, verify_inclusion
from carnet.ledger.note import NoteSigner, NoteVerifier, format_checkpoint, parse_checkpoint
from carnet.ledger.sequencer import Sequencer
from carnet.ledger.verify import verify_database
from tests.conftest import BACKENDS, Backend, LiveServer, _free_port

DOCTOR = Principal(Kind.PRACTITIONER, "10101010101", frozenset({"user/*.rs"}), fhir_user="Practitioner/p1",
                   profession="10")


def add_events(backend: Backend, n: int, patient: str = "pat-1") -> None:
    sink = LedgerAudit(backend.engine)
    rows = []
    for i in range(n):
        rows += sink.rows(DOCTOR, AuditRecord("read", 0, "DocumentReference", (f"doc-{i}",),
                                              entities=(("DocumentReference", f"doc-{i}", patient),)))
    sink.write(rows)


@pytest.fixture
def log(backend: Backend) -> tuple[Backend, Sequencer, NoteVerifier]:
    """A log of 3 checkpoints (sizes 10, 37, 64), sequenced by the test (the server's own
    sequencer may run as well: they take turns under the same lock)."""
    backend.clean()
    signer = load_signer(backend.settings)
    sequencer = Sequencer(backend.engine, signer, origin_of(backend.settings))
    for n in (10, 27, 27):
        add_events(backend, n)
        sequencer.drain()
    return backend, sequencer, NoteVerifier.from_key(signer.verifier_key())


@pytest.fixture(params=BACKENDS)
def unshared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A database of the test's own: no test server's sequencer takes rows from under it."""
    b = Backend(request.param, tmp_path)
    yield b
    b.close()


def test_small_batches_taken_in_turn_by_two_sequencers_make_one_log(unshared: Backend) -> None:
    """Runs of 7 rows, alternately by two sequencers (two processes' worth: each finds the tree
    moved by the other and rebuilds its edge): leaves in seq order without gaps, the hash of each
    the one computed here from the row's bytes, the signed root the one of those leaves."""
    backend = unshared
    signer = load_signer(backend.settings)
    pair = [Sequencer(backend.engine, signer, origin_of(backend.settings), batch=7) for _ in range(2)]
    add_events(backend, 40)
    turn = 0
    while pair[turn % 2].run().sequenced:
        turn += 1
    assert turn == 6  # five full runs, one of 5 rows, then an empty one
    add_events(backend, 3)
    assert pair[1].run(force_checkpoint=True).size == 43
    with backend.engine.connect() as conn:
        leaves = conn.execute(text("SELECT n.idx, n.seq, n.hash, a.content FROM ledger_nodes n "
                                   "JOIN audit_events a ON a.seq = n.seq WHERE n.height = 0 ORDER BY n.idx")).all()
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_events ORDER BY seq"))]
        pending = conn.execute(text("SELECT count(*) FROM audit_pending")).scalar()
        signed = conn.execute(text("SELECT root FROM ledger_checkpoints ORDER BY size DESC")).scalar()
    assert [r.idx for r in leaves] == list(range(43)) and [r.seq for r in leaves] == seqs and pending == 0
    hashes = [leaf_hash(bytes(r.content)) for r in leaves]
    assert [bytes(r.hash) for r in leaves] == hashes
    assert bytes(signed) == root(MemoryNodes.from_leaves(hashes), 43)
    report = verify_database(backend.engine, NoteVerifier.from_key(signer.verifier_key()))
    assert report.ok, report.problems


def sql(backend: Backend, statement: str, **params: object) -> None:
    with backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(text(statement), params)


AT = "(SELECT seq FROM ledger_nodes WHERE height = 0 AND idx = {})"  # the audit row of a leaf


def first_problem(backend: Backend, verifier: NoteVerifier) -> tuple[int | None, str]:
    """The first problem found, the same whether the 64 leaves are walked as one range or as
    eight ranges of eight (the way worker processes take a large log)."""
    report = verify_database(backend.engine, verifier)
    assert not report.ok, "the tampering went unnoticed"
    ranged = verify_database(backend.engine, verifier, workers=1, chunk=8)
    assert ranged.problems[:1] == report.problems[:1] and ranged.leaves == report.leaves
    return report.problems[0].index, report.problems[0].what


def test_an_untouched_log_verifies_with_gapless_indices(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    report = verify_database(backend.engine, verifier)
    assert report.ok, report.problems
    assert report.leaves == 64 and report.unsigned == 0
    for chunk in (1, 4, 32, 64):  # ranges of leaves, each ending inside or at a checkpoint
        ranged = verify_database(backend.engine, verifier, workers=1, chunk=chunk)
        assert ranged.ok and ranged.leaves == 64 and ranged.checkpoints == report.checkpoints, ranged.problems
    with backend.engine.connect() as conn:
        indices = [r[0] for r in conn.execute(text("SELECT idx FROM ledger_nodes WHERE height = 0 ORDER BY idx"))]
        sizes = [r[0] for r in conn.execute(text("SELECT size FROM ledger_checkpoints ORDER BY size"))]
        pending = conn.execute(text("SELECT count(*) FROM audit_pending")).scalar()
        rows = conn.execute(text("SELECT count(DISTINCT seq) FROM ledger_nodes WHERE height = 0")).scalar()
    assert indices == list(range(64)) and pending == 0 and rows == 64
    assert sizes[-1] == 64 and len(sizes) >= 3


def test_an_edited_row_is_named(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    sql(backend, f"UPDATE audit_events SET content = :c WHERE seq = {AT.format(41)}",
        c=b'{"resourceType":"AuditEvent","action":"R"}')
    index, what = first_problem(backend, verifier)
    assert index == 41 and "edited" in what


def test_worker_processes_check_ranges_of_the_log(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    """Two worker processes, ranges of eight leaves: the log verifies, and an edited row deep in
    it is named as the single walk names it."""
    backend, _, verifier = log
    report = verify_database(backend.engine, verifier, workers=2, chunk=8)
    assert report.ok and report.leaves == 64, report.problems
    sql(backend, f"UPDATE audit_events SET content = :c WHERE seq = {AT.format(45)}", c=b'{"edited":true}')
    report = verify_database(backend.engine, verifier, workers=2, chunk=8)
    assert [(p.index, "edited" in p.what) for p in report.problems] == [(45, True)]
    assert report.leaves == 45


def test_a_deleted_row_is_named(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    sql(backend, f"DELETE FROM audit_events WHERE seq = {AT.format(12)}")
    index, what = first_problem(backend, verifier)
    assert index == 12 and "deleted" in what


def test_a_deleted_leaf_is_named(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    sql(backend, "DELETE FROM ledger_nodes WHERE height = 0 AND idx = 33")
    index, what = first_problem(backend, verifier)
    assert index == 33 and "deleted" in what


def test_a_deleted_leaf_at_the_end_of_a_range_is_named(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    """Index 39 ends the range [32, 40) of the ranged walk: its gap shows only against the next range."""
    backend, _, verifier = log
    sql(backend, "DELETE FROM ledger_nodes WHERE height = 0 AND idx = 39")
    index, what = first_problem(backend, verifier)
    assert index == 39 and "deleted" in what and "index 40" in what


def test_a_deleted_and_renumbered_row_is_named(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    sql(backend, f"DELETE FROM audit_events WHERE seq = {AT.format(12)}")
    for i in range(12, 63):  # close the gap: each leaf now points at the next one's row
        sql(backend, f"UPDATE ledger_nodes SET seq = {AT.format(i + 1)} WHERE height = 0 AND idx = :i", i=i)
    sql(backend, "DELETE FROM ledger_nodes WHERE height = 0 AND idx = 63")
    index, what = first_problem(backend, verifier)
    assert index == 12 and "index 13" in what


def test_an_inserted_row_is_named(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    sql(backend, "INSERT INTO audit_events (id, recorded, patient_id, agent, action, subtype, outcome, "
                 "content) VALUES ('forged', 0, 'pat-1', 'x', 'R', 'read', 0, :c)",
        c=b'{"resourceType":"AuditEvent"}')
    sql(backend, "UPDATE ledger_nodes SET seq = (SELECT seq FROM audit_events WHERE id = 'forged') "
                 "WHERE height = 0 AND idx = 30")
    index, what = first_problem(backend, verifier)
    assert index == 30 and "inserted" in what


def test_a_row_slipped_in_beside_the_log_is_counted(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    sql(backend, "INSERT INTO audit_events (id, recorded, patient_id, agent, action, subtype, outcome, "
                 "content) VALUES ('beside', 0, 'pat-1', 'x', 'R', 'read', 0, :c)", c=b"{}")
    index, what = first_problem(backend, verifier)
    assert index is None and "neither in the log nor queued" in what


def test_reordered_rows_are_named(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    with backend.engine.connect() as conn:
        s50, s51 = (conn.execute(text(AT.format(i)[1:-1])).scalar() for i in (50, 51))
    sql(backend, "UPDATE ledger_nodes SET seq = :s WHERE height = 0 AND idx = 50", s=s51)
    sql(backend, "UPDATE ledger_nodes SET seq = :s WHERE height = 0 AND idx = 51", s=s50)
    index, what = first_problem(backend, verifier)
    assert index == 50 and "reordered" in what


def test_a_row_and_its_recorded_hash_rewritten_together_break_the_signed_root(
        log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    forged = b'{"resourceType":"AuditEvent","action":"R","forged":true}'
    sql(backend, f"UPDATE audit_events SET content = :c WHERE seq = {AT.format(20)}", c=forged)
    sql(backend, "UPDATE ledger_nodes SET hash = :h WHERE height = 0 AND idx = 20", h=leaf_hash(forged))
    index, what = first_problem(backend, verifier)
    assert index == 10 and "checkpoint of size 37" in what  # between the two checkpoints around it


def test_a_forged_checkpoint_signature_is_refused(log: tuple[Backend, Sequencer, NoteVerifier]) -> None:
    backend, _, verifier = log
    with backend.engine.connect() as conn:
        note = conn.execute(text("SELECT note FROM ledger_checkpoints WHERE size = 64")).scalar_one()
    cp = parse_checkpoint(verifier.verify(note))
    # same name, another key: the signature line does not verify under the published key
    other = NoteSigner(cp.origin, Ed25519PrivateKey.generate())
    sql(backend, "UPDATE ledger_checkpoints SET note = :n WHERE size = 64",
        n=other.sign(format_checkpoint(cp.origin, 64, cp.root)))
    index, what = first_problem(backend, verifier)
    assert index is None and "size 64" in what
    # and a note whose text was altered after signing (another root) is refused too
    sql(backend, "UPDATE ledger_checkpoints SET note = :n WHERE size = 64",
        n=note.replace(base64.b64encode(cp.root).decode(), base64.b64encode(b"\0" * 32).decode()))
    index, what = first_problem(backend, verifier)
    assert index is None and "size 64" in what


def test_the_command_exits_non_zero_naming_the_index(log: tuple[Backend, Sequencer, NoteVerifier],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    backend, _, _ = log
    monkeypatch.setenv("CARNET_DATABASE_URL", backend.url)
    ok = CliRunner().invoke(main, ["verify", "--data", str(backend.settings.data_dir)])
    assert ok.exit_code == 0, ok.output
    assert "64 leaves" in ok.output and "the log verifies" in ok.output
    sql(backend, f"UPDATE audit_events SET content = :c WHERE seq = {AT.format(7)}", c=b"{}")
    bad = CliRunner().invoke(main, ["verify", "--data", str(backend.settings.data_dir)])
    assert bad.exit_code == 1
    assert "index 7" in bad.output


def test_proofs_served_over_http_verify_against_the_published_checkpoint(
        log: tuple[Backend, Sequencer, NoteVerifier], live: LiveServer) -> None:
    _, _, verifier = log
    base = live.url + "/ledger"
    key = httpx.get(base + "/key").text.strip()
    assert NoteVerifier.from_key(key).verifier_key() == verifier.verifier_key()
    cp = parse_checkpoint(verifier.verify(httpx.get(base + "/checkpoint").text))
    assert cp.size == 64
    entries = httpx.get(base + "/entries", params={"start": 0, "end": 64}).json()["entries"]
    assert [e["index"] for e in entries] == list(range(64))
    for index in (0, 9, 10, 36, 63):
        r = httpx.get(base + "/proof/inclusion", params={"index": index, "size": 64}).json()
        assert r["index"] == index and r["size"] == 64
        proof = [base64.b64decode(h) for h in r["hashes"]]
        data = base64.b64decode(entries[index]["data"])
        assert verify_inclusion(leaf_hash(data), index, 64, proof, cp.root)
        assert not verify_inclusion(leaf_hash(data + b" "), index, 64, proof, cp.root)
    sizes = [c["size"] for c in httpx.get(base + "/checkpoints").json()["checkpoints"]]
    notes = {c["size"]: c["note"] for c in httpx.get(base + "/checkpoints").json()["checkpoints"]}
    old = parse_checkpoint(verifier.verify(notes[sizes[0]]))
    r = httpx.get(base + "/proof/consistency", params={"old": old.size, "new": 64}).json()
    assert verify_consistency(old.size, 64, old.root, cp.root, [base64.b64decode(h) for h in r["hashes"]])
    # bad requests get a clear error, never a 500
    assert httpx.get(base + "/proof/inclusion", params={"index": 64, "size": 64}).status_code == 400
    assert httpx.get(base + "/proof/inclusion", params={"index": 1, "size": 65}).status_code == 404
    assert httpx.get(base + "/proof/inclusion", params={"index": "x", "size": 64}).status_code == 400
    assert httpx.get(base + "/proof/consistency", params={"old": 9, "new": 3}).status_code == 400
    assert httpx.get(base + "/entries", params={"start": 5, "end": 5}).status_code == 400


def test_entries_are_for_operators_not_for_patients(log: tuple[Backend, Sequencer, NoteVerifier],
                                                    live: LiveServer) -> None:
    issuer = live.app.state.issuer
    patient = issuer.issue(Principal(Kind.PATIENT, "1", frozenset({"patient/*.rs"}), fhir_user="Patient/pat-1"))
    operator = issuer.issue(Principal(Kind.OPERATOR, "ops", frozenset({"system/*.rs"})))
    url = live.url + "/ledger/entries?start=0&end=3"
    assert httpx.get(url, headers={"Authorization": f"Bearer {patient}"}).status_code == 403
    assert httpx.get(url, headers={"Authorization": f"Bearer {operator}"}).status_code == 200
    assert httpx.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401


def test_verify_against_a_server_with_a_trusted_key(log: tuple[Backend, Sequencer, NoteVerifier],
                                                    live: LiveServer) -> None:
    _, _, verifier = log
    ok = CliRunner().invoke(main, ["verify", "--url", live.url, "--key", verifier.verifier_key()])
    assert ok.exit_code == 0, ok.output
    stranger = NoteSigner("carnet.localhost/ledger", Ed25519PrivateKey.generate()).verifier_key()
    bad = CliRunner().invoke(main, ["verify", "--url", live.url, "--key", stranger])
    assert bad.exit_code == 1 and "checkpoint" in bad.output


def _serve(backend: Backend, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CARNET_DATA_DIR": str(backend.settings.data_dir), "CARNET_DATABASE_URL": backend.url,
           "CARNET_SECRET_KEY": "test-key-not-secret", "CARNET_LEDGER_CHECKPOINT_SECONDS": "0.5"}
    with (tmp / f"serve-{port}.log").open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "carnet.cli.main", "serve", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server stopped"
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the server did not start")


def test_two_server_processes_writing_at_once_keep_one_gapless_log(unshared: Backend, tmp_path: Path) -> None:
    backend = unshared  # no test server of the session sequences the same log meanwhile
    ports = [_free_port(), _free_port()]
    procs = [_serve(backend, port, tmp_path) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url, proc in zip(urls, procs, strict=True):
            _wait_up(url, proc)
        errors: list[str] = []

        def load(url: str, worker: int) -> None:
            with httpx.Client(base_url=url + "/fhir/", timeout=30) as c:
                for i in range(40):
                    r = c.post("Patient", json={"resourceType": "Patient", "name": [{"family": f"W{worker}-{i}"}]})
                    if r.status_code != 201:
                        errors.append(r.text)
                        continue
                    if c.get(f"Patient/{r.json()['id']}").status_code != 200:
                        errors.append("read failed")

        threads = [threading.Thread(target=load, args=(urls[w % 2], w)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        # both processes sequence; wait until nothing is pending and a checkpoint covers it all
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with backend.engine.connect() as conn:
                pending = conn.execute(text("SELECT count(*) FROM audit_pending")).scalar()
                total = conn.execute(text("SELECT count(*) FROM audit_events")).scalar()
                signed = conn.execute(text("SELECT max(size) FROM ledger_checkpoints")).scalar()
            if pending == 0 and signed == total:
                break
            time.sleep(0.3)
        assert pending == 0 and signed == total
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    assert total >= 6 * 40 * 2
    with backend.engine.connect() as conn:
        indices = [r[0] for r in conn.execute(text("SELECT idx FROM ledger_nodes WHERE height = 0 ORDER BY idx"))]
        distinct = conn.execute(text("SELECT count(DISTINCT seq) FROM ledger_nodes WHERE height = 0")).scalar()
    assert indices == list(range(total)) and distinct == total
    report = verify_database(backend.engine, NoteVerifier.from_key(load_signer(backend.settings).verifier_key()))
    assert report.ok, report.problems
    assert report.checkpoints >= 1 and report.leaves == total


def _ledger_children(parent: int) -> list[int]:
    """The ledger processes ``carnet serve`` (pid ``parent``) runs beside its workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"carnet.ledger.process" in cmdline and stat[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sequenced_all(backend: Backend, at_least: int) -> int:
    """Wait until the log numbers every audit row (at least ``at_least``) and signs them; the total."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with backend.engine.connect() as conn:
            pending = conn.execute(text("SELECT count(*) FROM audit_pending")).scalar()
            total = conn.execute(text("SELECT count(*) FROM audit_events")).scalar() or 0
            signed = conn.execute(text("SELECT max(size) FROM ledger_checkpoints")).scalar()
        if pending == 0 and total >= at_least and signed == total:
            return int(total)
        time.sleep(0.2)
    raise AssertionError(f"the log did not number and sign {at_least} rows ({total} rows, {pending} pending)")


def test_the_ledger_process_of_carnet_serve_numbers_the_spooled_reads_and_comes_back(
        unshared: Backend, tmp_path: Path) -> None:
    """``carnet serve`` runs the sequencer in a process of its own: the reads' rows, spooled by
    the server on SQLite, reach the log; killed, the process is started again and loses nothing;
    it stops with the server."""
    backend = unshared
    port = _free_port()
    proc = _serve(backend, port, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        [ledger] = _ledger_children(proc.pid)
        with httpx.Client(base_url=url + "/fhir/", timeout=30) as c:
            r = c.post("Patient", json={"resourceType": "Patient", "name": [{"family": "Spool"}]})
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            for _ in range(20):
                assert c.get(f"Patient/{pid}").status_code == 200
            first = _sequenced_all(backend, 21)
            os.kill(ledger, signal.SIGKILL)
            for _ in range(10):  # answered meanwhile: their rows wait in the spool
                assert c.get(f"Patient/{pid}").status_code == 200
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _ledger_children(proc.pid) in ([], [ledger]):
                time.sleep(0.2)
            [again] = _ledger_children(proc.pid)
            assert again != ledger
            assert _sequenced_all(backend, first + 10) == first + 10
            with backend.engine.connect() as conn:
                reads = conn.execute(text("SELECT count(*) FROM audit_events WHERE subtype = 'read' "
                                          "AND patient_id = :p"), {"p": pid}).scalar()
            assert reads == 30
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not _alive(again)  # stopped with the server, before it exits
    report = verify_database(backend.engine, NoteVerifier.from_key(load_signer(backend.settings).verifier_key()))
    assert report.ok, report.problems
