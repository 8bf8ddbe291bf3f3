"""The writers' lock of a SQLite file is handed on in turn between server processes: a process
that releases it and asks again at once does not get it back before a process already waiting."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import time
from pathlib import Path

from carnet.db.engine import SqliteWriteLock


def _wait_then_write(db: str, ready: multiprocessing.synchronize.Event, log: str) -> None:
    lock = SqliteWriteLock(Path(db))
    ready.set()
    with lock.hold(), open(log, "a") as f:
        f.write("waiter\n")


def test_a_waiting_process_gets_the_lock_before_the_holder_takes_it_again(tmp_path: Path) -> None:
    db = tmp_path / "carnet.db"
    log = tmp_path / "order.txt"
    holder = SqliteWriteLock(db)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    with holder.hold():
        waiter = ctx.Process(target=_wait_then_write, args=(str(db), ready, str(log)))
        waiter.start()
        assert ready.wait(30)
        time.sleep(0.3)  # the other process is now blocked asking for the lock
    with holder.hold(), open(log, "a") as f:  # asked again at once, as a busy process's next commit
        f.write("holder again\n")
    waiter.join(30)
    assert waiter.exitcode == 0
    assert log.read_text().splitlines() == ["waiter", "holder again"]
