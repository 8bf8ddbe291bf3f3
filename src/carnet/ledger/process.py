"""The ledger process of ``carnet serve``: the sequencer (which also moves the audit spool's rows
into the database) and, on SQLite, the write-ahead log's checkpointer, in a process of their own.

In a server worker they were threads beside the request threads, and every commit of theirs took
the worker's interpreter lock from the requests: with them here, the workers only read, append
to their spool and write what requests change (bench/README.md, "Reads with auditing"). The
parent (:func:`supervise`) starts this process before the workers, starts it again if it dies,
and stops it when the server stops; it exits by itself when its parent is gone.

    python -m carnet.ledger.process     # settings from CARNET_* as for carnet serve
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from carnet.config import Settings

log = logging.getLogger("carnet.ledger")


def main() -> None:
    from carnet.audit.spool import spool_of
    from carnet.background import Background
    from carnet.config import Settings
    from carnet.db.engine import WalCheckpointer, make_engine
    from carnet.ledger.keys import load_signer, origin_of
    from carnet.ledger.sequencer import LedgerWorker, Sequencer

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: [ledger] %(message)s")
    parent = os.getppid()
    stopping = threading.Event()

    def stop(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    # Ctrl-C reaches the whole process group: the server stops first, then stops this process
    # (stopping here at once would have the supervisor start it again meanwhile)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    engine = make_engine(settings, background_checkpoints=True)
    tasks: list[Background] = []
    if settings.audit and settings.ledger_sequencer:
        tasks.append(LedgerWorker(Sequencer(engine, load_signer(settings), origin_of(settings),
                                            checkpoint_seconds=settings.ledger_checkpoint_seconds,
                                            spool=spool_of(settings))))
    if engine.dialect.name == "sqlite" and settings.wal_checkpointer:
        # less often than a server's own thread: each copy slows the workers' reads (a page copied
        # back costs the I/O, and a page written ten times in 5 s is copied once), and here no
        # request waits for it (reads audited / not audited: 0.71 every 0.5 s, 0.78 every 5 s,
        # 0.82 with no checkpoint at all during the run; bench/README.md)
        tasks.append(WalCheckpointer(engine, interval=settings.wal_checkpoint_seconds))
    for task in tasks:
        task.start()
    while not stopping.wait(0.5):
        if os.getppid() != parent:  # the server was killed: nothing will stop us
            break
    for task in tasks:
        task.stop()
    engine.dispose()


def wanted(settings: Settings) -> bool:
    """Whether a ledger process has work: the sequencer, or SQLite's checkpointer."""
    sqlite = make_url(settings.sqlalchemy_url).get_backend_name() == "sqlite"
    return settings.ledger_process and ((settings.audit and settings.ledger_sequencer)
                                        or (sqlite and settings.wal_checkpointer))


@contextmanager
def supervise() -> Iterator[None]:
    """Run the ledger process while the block runs (the server): started again if it dies, and
    its work taken off the workers, which inherit this environment."""
    child_env = dict(os.environ)  # the settings as given: the ledger process does what they ask
    taken = {"CARNET_LEDGER_SEQUENCER": "false", "CARNET_WAL_CHECKPOINTER": "false"}  # off in the workers
    os.environ.update(taken)
    command = [sys.executable, "-m", "carnet.ledger.process"]
    done = threading.Event()
    state: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        state["child"] = subprocess.Popen(command, env=child_env)  # noqa: S603  (this interpreter)

    def watch() -> None:
        while not done.wait(1.0):
            if state["child"].poll() is not None:
                log.warning("the ledger process stopped (status %s); starting it again",
                            state["child"].returncode)
                time.sleep(1.0)
                if not done.is_set():
                    start()

    def terminated(signum: int, _frame: Any) -> None:
        # uvicorn stops the server on SIGTERM, then raises the signal again once it has restored
        # the handler it found: this one, so that the block below still stops the ledger process
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    start()
    watcher = threading.Thread(target=watch, name="carnet-ledger-supervisor", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        for name in taken:  # as they were before
            if name in child_env:
                os.environ[name] = child_env[name]
            else:
                os.environ.pop(name, None)
        done.set()
        watcher.join(timeout=5)
        child = state["child"]
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


if __name__ == "__main__":
    main()
