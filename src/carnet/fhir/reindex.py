"""Rebuild the search index (and the services' own indexes) of stored resources: after search
parameters are added or indexing changes, and for data stored before an index existed (identity
match keys). Resources keep their versions; only index rows change. Runs in batches, each its
own transaction, so it can run beside a live server and be resumed."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import func, select

from carnet.auth.principal import Principal
from carnet.db.tables import resources
from carnet.fhir import jsonio
from carnet.fhir.router import FhirRouter


def count(router: FhirRouter, types: Iterable[str] | None = None) -> int:
    t = resources.c
    stmt = select(func.count()).select_from(resources).where(t.deleted.is_(False))
    if types:
        stmt = stmt.where(t.res_type.in_(list(types)))
    with router.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def reindex(router: FhirRouter, types: Iterable[str] | None = None, *, batch: int = 500,
            progress: Callable[[int], None] | None = None) -> int:
    """Reindex every current resource (of ``types``, or all); answers how many."""
    t = resources.c
    wanted = sorted(types) if types else None
    principal = Principal.system("carnet-reindex")
    after: tuple[str, str] = ("", "")
    done = 0
    while True:
        stmt = (select(t.res_type, t.res_id, t.content)
                .where(t.deleted.is_(False), t.content.is_not(None),
                       (t.res_type > after[0]) | ((t.res_type == after[0]) & (t.res_id > after[1])))
                .order_by(t.res_type, t.res_id).limit(batch))
        if wanted:
            stmt = stmt.where(t.res_type.in_(wanted))
        with router.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            rows = conn.execute(stmt).all()
            repo = router.repository(conn, principal)
            for row in rows:
                router.reindex(repo, jsonio.loads(row.content))
        if not rows:
            return done
        done += len(rows)
        after = (rows[-1].res_type, rows[-1].res_id)
        if progress is not None:
            progress(len(rows))
