"""Crash safety: ``carnet serve`` killed with SIGKILL while documents are being published.

A few cycles of the harness of ``bench/crash.py`` on each database (the benchmark runs 200 kills per
database): concurrent publishers (ITI-65 and ITI-105), the server's process group killed at a random
moment, restarted on the same data. After each restart every acknowledged document is found by
ITI-67 and retrieved byte-identical with its metadata, every request in flight at the kill is either
wholly stored (documents, content, SubmissionSet) or wholly absent, no content row or Binary is
left without its DocumentReference, and ``carnet verify`` accepts the audit log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crash import run_crashes
from tests.conftest import BACKENDS

DATABASES = [{"sqlite": "sqlite", "postgresql": "postgres"}[b] for b in BACKENDS]


@pytest.mark.parametrize("db", DATABASES)
def test_what_was_acknowledged_survives_sigkill_and_nothing_is_half_published(db: str, tmp_path: Path) -> None:
    # kills timed from a first acknowledgement (early=0): each cuts the requests of a warm server;
    # each server is forked from a process that imported Carnet once (preload): quicker restarts
    out = run_crashes(db, tmp_path, 3, workers=1, publishers=3, min_delay=0.1, max_delay=0.8, early=0.0,
                      preload=True, max_exponent=16.0, sample=3, full_every=2, verify_every=10,
                      seed=20261201, quiet=True)
    counts = out["counts"]
    assert out["violations"] == [], out["violations"]
    assert counts["violations"] == 0
    assert counts["kills"] == 3
    # the kills landed while publishing: documents were acknowledged and requests were cut
    assert counts["acked_documents"] > 0, counts
    assert counts["in_flight_requests"] > 0, counts
    assert counts["in_flight_present"] + counts["in_flight_absent"] == counts["in_flight_requests"]
    # the whole store was scanned between kills and at the end, the log verified at the end
    assert counts["full_scans"] == 2 and counts["verify_runs"] == 1 == counts["verify_passes"], counts
    scan = out["last_full_scan"]
    assert scan["document_references"] == scan["content_rows"] == scan["binaries"]
    assert scan["documents_retrieved"] == scan["document_references"]
