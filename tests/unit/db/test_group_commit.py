"""The group committer of a SQLite file: the writes of a batch share one commit, and a write that
fails is refused alone — the others' rows are stored, its own are not — whether the batch ran with
a savepoint per job or, all its jobs being rerunnable, first without and then again with them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select

from carnet.config import Settings
from carnet.db.engine import GroupCommit, _Job, make_engine
from carnet.db.migrate import upgrade
from carnet.db.tables import access_rights


def _writer(actor: str, calls: list[str], fail: bool = False) -> Callable[[Connection], str]:
    def work(conn: Connection) -> str:
        calls.append(actor)
        conn.execute(insert(access_rights).values(actor=actor, patient_id="p", level=1))
        if fail:
            raise ValueError(f"{actor} refused")
        return actor
    return work


@pytest.mark.parametrize("rerunnable", [True, False])
def test_a_failing_write_is_refused_alone(tmp_path: Path, rerunnable: bool) -> None:
    engine = make_engine(Settings(data_dir=tmp_path))
    upgrade(engine)
    group = GroupCommit(engine)
    calls: list[str] = []
    batch = [_Job(_writer("a", calls), rerunnable), _Job(_writer("b", calls, fail=True), rerunnable),
             _Job(_writer("c", calls), rerunnable)]
    group._execute(batch)
    assert [job.done for job in batch] == [True, True, True]
    assert (batch[0].result, batch[2].result) == ("a", "c") and batch[0].error is batch[2].error is None
    assert isinstance(batch[1].error, ValueError) and batch[1].result is None
    with engine.connect() as conn:
        assert sorted(conn.execute(select(access_rights.c.actor)).scalars()) == ["a", "c"]
    # rerunnable: a first try without savepoints, rolled back at b; then each job in its savepoint
    assert calls == (["a", "b", "a", "b", "c"] if rerunnable else ["a", "b", "c"])
    engine.dispose()


def test_a_batch_of_rerunnable_writes_that_all_succeed_runs_once(tmp_path: Path) -> None:
    engine = make_engine(Settings(data_dir=tmp_path))
    upgrade(engine)
    calls: list[str] = []
    batch = [_Job(_writer(name, calls), True) for name in "abc"]
    GroupCommit(engine)._execute(batch)
    assert calls == ["a", "b", "c"] and [job.result for job in batch] == ["a", "b", "c"]
    with engine.connect() as conn:
        assert sorted(conn.execute(select(access_rights.c.actor)).scalars()) == ["a", "b", "c"]
    engine.dispose()
