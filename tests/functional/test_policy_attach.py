"""Several server processes starting at once on one database all write the access matrix without
failing (each process writes it at start when the stored one differs)."""

from __future__ import annotations

import threading

from sqlalchemy import delete, func, select

from carnet.db.tables import habilitation_types
from carnet.policy.dicah import DicahPolicy
from tests.conftest import Backend


def test_nodes_starting_together_all_store_the_access_matrix(backend: Backend) -> None:
    with backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(delete(habilitation_types))
    policy = DicahPolicy()
    starting = 4
    barrier = threading.Barrier(starting)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            policy.attach(backend.engine)
        except BaseException as exc:  # a node that fails here does not start
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(starting)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    wanted = sum(len(types) for types in policy.habilitations.types.values())
    with backend.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(habilitation_types)).scalar_one() == wanted
