"""The audit spool (carnet.audit.spool) on a real SQLite database: a read's rows appended to a
file of the server process reach ``audit_events`` and the sequencer's queue exactly once,
whatever happens to the writer or to the moving transaction."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from carnet.audit.events import event_id
from carnet.audit.sink import ingest_now
from carnet.audit.spool import SUFFIX, Spool, encode
from carnet.config import Settings
from carnet.db.engine import make_engine, run_write
from carnet.db.migrate import upgrade
from carnet.db.tables import audit_events, audit_pending, audit_spool_files, ledger_nodes
from carnet.ledger.keys import load_signer
from carnet.ledger.sequencer import Sequencer


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = make_engine(Settings(data_dir=tmp_path))
    upgrade(e)
    return e


def rows(n: int, tag: str = "r") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        rid = event_id()
        out.append({"id": rid, "recorded": 1_700_000_000_000_000 + i, "patient_id": f"p{i % 3}",
                    "agent": "Practitioner/x", "action": "R", "subtype": "read", "outcome": 0,
                    "content": f'{{"id":"{rid}","tag":"{tag}-{i}","é":"ü"}}'.encode()})
    return out


def stored(engine: Engine) -> list[tuple[str, bytes]]:
    with engine.connect() as conn:
        return [(r.id, bytes(r.content)) for r in conn.execute(
            select(audit_events.c.id, audit_events.c.content).order_by(audit_events.c.seq))]


def queued(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(audit_pending.c.seq)).all())


def files(spool: Spool) -> list[str]:
    return sorted(p.name for p in spool.directory.glob("*" + SUFFIX))


def test_rows_reach_the_database_and_its_queue_once(engine: Engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert not spool.waiting()
    first, second = rows(3, "a"), rows(2, "b")
    spool.append(first)
    spool.append(second)
    assert spool.waiting()
    assert ingest_now(engine, spool) == 5
    assert stored(engine) == [(r["id"], r["content"]) for r in first + second]  # exact bytes, in order
    assert queued(engine) == 5
    assert not spool.waiting()
    assert ingest_now(engine, spool) == 0  # nothing twice
    assert len(stored(engine)) == 5
    spool.append(rows(1, "c"))
    assert ingest_now(engine, spool) == 1 and len(stored(engine)) == 6 and queued(engine) == 6


def test_the_sequencer_moves_and_numbers_spooled_rows_in_one_run(engine: Engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(rows(4))
    seq = Sequencer(engine, load_signer(Settings(data_dir=tmp_path)), "test.localhost/ledger", spool=spool)
    assert seq.has_pending()
    progress = seq.drain()
    assert progress.ingested == 4 and progress.sequenced == 4 and progress.size == 4
    assert queued(engine) == 0
    with engine.connect() as conn:
        assert len(conn.execute(select(ledger_nodes).where(ledger_nodes.c.height == 0)).all()) == 4


def test_a_rolled_back_move_leaves_the_rows_for_the_next(engine: Engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(rows(3))

    def fails(conn: Any) -> None:
        spool.finish(spool.ingest(conn, 100), committed=False)
        raise RuntimeError("the transaction fails after moving")

    with pytest.raises(RuntimeError):
        run_write(engine, fails)
    assert stored(engine) == [] and spool.waiting()
    assert ingest_now(engine, spool) == 3 and len(stored(engine)) == 3


def test_a_writer_that_moves_on_leaves_files_deleted_once_consumed(engine: Engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", rotate_bytes=1)  # a new file for every append after the first
    written = [rows(2, f"f{i}") for i in range(4)]
    for batch in written:
        spool.append(batch)
    assert len(files(spool)) == 4
    assert ingest_now(engine, spool) == 8
    assert [i for i, _ in stored(engine)] == [r["id"] for batch in written for r in batch]
    assert len(files(spool)) == 1  # the file still written stays; the others are gone
    assert ingest_now(engine, spool) == 0  # and the consumed lengths of the deleted ones go
    with engine.connect() as conn:
        assert [r.file for r in conn.execute(select(audit_spool_files.c.file))] == [
            f"{spool.key}/{name}" for name in files(spool)]


def test_two_folders_feeding_one_database_keep_their_own_place(engine: Engine, tmp_path: Path) -> None:
    """Two servers on one database, each with its data folder (and its spool): each ingest sees
    only its folder's files, and neither takes the other's consumed lengths for stale."""
    one, two = Spool(tmp_path / "one"), Spool(tmp_path / "two")
    one.append(rows(2, "one"))
    two.append(rows(3, "two"))
    assert ingest_now(engine, one) == 2
    assert ingest_now(engine, two) == 3
    one.append(rows(1, "one-more"))
    assert ingest_now(engine, two) == 0
    assert ingest_now(engine, one) == 1
    assert ingest_now(engine, one) == 0 and ingest_now(engine, two) == 0
    assert len(stored(engine)) == 6 and queued(engine) == 6


def test_an_incomplete_frame_of_a_live_file_waits_for_its_end(engine: Engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(rows(1, "whole"))
    frame = encode(rows(1, "halves"))
    os.write(spool._fd, frame[:10])  # the writer is between two parts of one write
    assert ingest_now(engine, spool) == 1
    os.write(spool._fd, frame[10:])
    assert ingest_now(engine, spool) == 1
    assert [c for _, c in stored(engine)][-1].endswith(b'"tag":"halves-0","\xc3\xa9":"\xc3\xbc"}')


WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from carnet.audit.spool import Spool, encode
    sys.path.insert(0, {tests!r})
    from test_spool import rows
    spool = Spool(Path({directory!r}))
    spool.append(rows(5, "before"))
    os.write(spool._fd, encode(rows(1, "torn"))[:-7])  # killed in the middle of its last write
    print("ready", flush=True)
    sys.stdin.read()
""")


def test_a_killed_writer_loses_nothing_it_finished(engine: Engine, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "spool"
    code = WRITER.format(tests=str(Path(__file__).parent), directory=str(directory))
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        spool = Spool(directory)
        assert ingest_now(engine, spool) == 5  # alive: the torn frame may yet be finished
        assert len(files(spool)) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with caplog.at_level(logging.ERROR, logger="carnet.audit"):
        assert ingest_now(engine, spool) == 0
    assert "incomplete last write" in caplog.text
    assert files(spool) == []  # final and consumed: deleted
    assert [c.split(b'"tag":"')[1][:8] for _, c in stored(engine)] == [b"before-" + str(i).encode()
                                                                        for i in range(5)]


def test_sealing_a_day_takes_in_its_reads_still_in_the_spool(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``carnet journal seal`` moves the spool's rows in before it seals: yesterday's reads that
    still wait there are counted in yesterday's journal, not left for a later one."""
    from datetime import UTC, datetime, time, timedelta

    from click.testing import CliRunner

    from carnet.audit import AuditRecord
    from carnet.audit.sink import LedgerAudit
    from carnet.auth.principal import Principal
    from carnet.cli.main import main
    from carnet.fhir.values import to_us

    for name in [k for k in os.environ if k.startswith("CARNET_")]:
        monkeypatch.delenv(name)
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    upgrade(engine)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with pytest.MonkeyPatch.context() as clock:
        clock.setattr("carnet.audit.sink.now_us", lambda: to_us(datetime.combine(yesterday, time(12), tzinfo=UTC)))
        sink = LedgerAudit(engine)
        spooled = [row for i in range(2) for row in sink.rows(Principal.system(), AuditRecord(
            "read", 0, "Patient", (f"p{i}",), entities=(("Patient", f"p{i}", f"p{i}"),)))]
    Spool(tmp_path / "audit-spool").append(spooled)
    r = CliRunner().invoke(main, ["journal", "seal", "--data", str(tmp_path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{yesterday}  sealed") and "leaves [0, 2)" in r.stdout


def test_a_backlog_longer_than_one_read_keeps_the_worker_busy_until_it_is_in(engine: Engine,
                                                                             tmp_path: Path) -> None:
    """A run reads a bounded part of each file (READ_BYTES): the worker goes on at once while the
    spool is not read to its end, instead of waiting its interval with rows left behind."""
    from carnet.audit.spool import READ_BYTES
    from carnet.ledger.sequencer import LedgerWorker

    spool = Spool(tmp_path / "spool")
    pad = "x" * 10_000
    written, count = 0, 0
    while written <= READ_BYTES * 1.5:
        batch = rows(20)
        for r in batch:
            r["content"] = r["content"][:-1] + f',"pad":"{pad}"}}'.encode()
        spool.append(batch)
        written += sum(len(r["content"]) for r in batch)
        count += len(batch)
    worker = LedgerWorker(Sequencer(engine, load_signer(Settings(data_dir=tmp_path)), "test.localhost/ledger",
                                    spool=spool))
    assert worker.step() is True  # rows left: at once again
    assert 0 < len(stored(engine)) < count
    while worker.step():
        pass
    assert len(stored(engine)) == count and not spool.waiting()
    with engine.connect() as conn:
        assert len(conn.execute(select(ledger_nodes).where(ledger_nodes.c.height == 0)).all()) == count
