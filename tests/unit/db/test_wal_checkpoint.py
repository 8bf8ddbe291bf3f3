"""The SQLite server's write-ahead log is copied back by a thread, and starts over once it is long,
even when readers and writers never stop (a passive checkpoint alone let it grow without end)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import text

from carnet.config import Settings
from carnet.db.engine import WalCheckpointer, make_engine, run_write

ROW = os.urandom(8192)


def test_the_log_starts_over_under_steady_reads_and_writes(tmp_path: Path) -> None:
    db = tmp_path / "carnet.db"
    engine = make_engine(Settings(data_dir=tmp_path), f"sqlite:///{db}", background_checkpoints=True)
    run_write(engine, lambda c: c.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"))
    checkpointer = WalCheckpointer(engine, restart_bytes=1 << 20)
    stop = threading.Event()
    seen: list[int] = []

    def read() -> None:  # short read transactions, one after another, as requests make them
        while not stop.is_set():
            with engine.connect() as conn:
                seen.append(conn.execute(text("SELECT count(*) FROM t")).scalar_one())

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    largest = 0
    try:
        for n in range(2000):  # 16 MB of rows, one transaction each
            run_write(engine, lambda c: c.exec_driver_sql("INSERT INTO t (v) VALUES (?)", (ROW,)))
            if n % 50 == 49:
                checkpointer.step()
                largest = max(largest, (tmp_path / "carnet.db-wal").stat().st_size)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert checkpointer.restarts > 0
    assert largest < 4 << 20, f"the write-ahead log grew to {largest:,} bytes"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 2000
        assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
    assert seen  # the readers were there all along
    engine.dispose()
