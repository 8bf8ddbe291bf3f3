"""Test harness: the same suite runs on real SQLite and real PostgreSQL, over real HTTP.

Each backend gets a fresh database per test session (a temporary SQLite file; a new PostgreSQL
database on 127.0.0.1:5432, dropped at the end), migrated with Alembic to head, and a real
uvicorn server on a free loopback port. Tests that write use the ``fhir`` client, which empties
the tables first.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from carnet.audit.spool import spool_of
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import upgrade
from carnet.db.tables import metadata
from carnet.ledger.sequencer import LOCK_KEY
from carnet.ledger.store import forget_cached_nodes

FIXTURES = Path(__file__).parent / "fixtures"
PG_ADMIN_URL = os.environ.get("CARNET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = [b for b in os.environ.get("CARNET_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.db_name: str | None = None
        if name == "sqlite":
            self.url = f"sqlite:///{tmp / 'carnet.db'}"
        else:
            self.db_name = f"carnet_test_{uuid.uuid4().hex[:12]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
            admin.dispose()
            self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        # many tests sign in wrongly from 127.0.0.1: the per-address throttle has its own test; the
        # rights worker is run by the tests of rights that end (test_rights_days.py), not in the server
        self.settings = Settings(data_dir=tmp, database_url=self.url, secret_key="test-key-not-secret",
                                 signin_address_max_failures=10_000, rights_recheck_seconds=0)
        self.engine = make_engine(self.settings)
        upgrade(self.engine)
        spool = spool_of(self.settings)  # the servers' (carnet.audit.spool)
        assert spool is not None
        self.spool = spool

    def clean(self) -> None:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            # habilitation_types is reference data the app writes at start (the access matrix)
            names = [t.name for t in reversed(metadata.sorted_tables) if t.name != "habilitation_types"]
            if self.name == "postgresql":
                # the server's sequencer takes its lock first: holding it, TRUNCATE cannot deadlock with it
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE's new files for 28
                # tables cost ~300 ms per test where these deletes, sent as one string, cost ~6 ms
                conn.execute(text("; ".join(f"DELETE FROM {name}" for name in names)))
            else:
                # the rows the server spooled go first (and the spool's consumed lengths stay): none
                # comes back into the next test's trail
                spooled = self.spool.ingest(conn, 10**9)
                for name in names:
                    if name != "audit_spool_files":
                        conn.execute(text(f"DELETE FROM {name}"))
        if self.name == "sqlite":
            self.spool.finish(spooled, committed=True)
        # the log's tree is emptied: the nodes this process remembers (its servers' sequencers took
        # them under the lock the emptying held) no longer hold
        forget_cached_nodes()

    def close(self) -> None:
        self.engine.dispose()
        if self.db_name:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            admin.dispose()


class LiveServer:
    """A real uvicorn server for the app, on a loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        from carnet.app import create_app

        self.port = _free_port()
        self.settings = settings.model_copy(update={"port": self.port})
        self.app = create_app(self.settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def flush_audit(self) -> None:
        """The audit rows of the reads answered so far into the database (on SQLite they wait in
        the server's spool for the sequencer's next run), for a test that reads the table."""
        self.app.state.fhir.audit.flush()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path_factory.mktemp(request.param))
    yield b
    b.close()


@pytest.fixture(scope="session")
def live(backend: Backend) -> Iterator[LiveServer]:
    server = LiveServer(backend.settings)
    yield server
    server.stop()


class Fhir(httpx.Client):
    """An HTTP client on the FHIR base, with helpers that assert success."""

    backend: Backend
    live: LiveServer
    base: str

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = self.post(resource["resourceType"], json=resource)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        r = self.post("", json=bundle)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def search_ids(self, query: str) -> list[str]:
        r = self.get(query)
        assert r.status_code == 200, r.text
        return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


@pytest.fixture
def fhir(live: LiveServer, backend: Backend) -> Iterator[Fhir]:
    backend.clean()
    base = live.url + "/fhir/"
    with Fhir(base_url=base, headers={"Content-Type": "application/fhir+json"}, timeout=60) as client:
        client.backend = backend
        client.live = live
        client.base = base.rstrip("/")
        yield client
