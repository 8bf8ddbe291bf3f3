"""The database's DataKeyStore: table ``data_keys``, one row per patient.

Each call runs in its own short transaction on the engine: a data key is created while a
document's content is written, before (and outside) the transaction that will reference it.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from carnet.crypto.keys import WrappedKey
from carnet.db.tables import data_keys
from carnet.fhir.values import now_us

_T = data_keys.c


class SqlDataKeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"SqlDataKeyStore({self.engine.url.get_backend_name()})"

    def get(self, patient_id: str) -> WrappedKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_T.master_key_id, _T.wrapped)
                               .where(_T.patient_id == patient_id)).first()
        return WrappedKey(row.master_key_id, bytes(row.wrapped)) if row is not None else None

    def add(self, patient_id: str, wrapped: WrappedKey) -> WrappedKey:
        when = now_us()
        try:
            with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
                conn.execute(insert(data_keys).values(
                    patient_id=patient_id, master_key_id=wrapped.master_key_id,
                    wrapped=wrapped.ciphertext, created_at=when, updated_at=when))
            return wrapped
        except IntegrityError:  # another writer created the patient's key first: use theirs
            existing = self.get(patient_id)
            if existing is None:
                raise
            return existing

    def replace(self, patient_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            changed = conn.execute(
                update(data_keys)
                .where(_T.patient_id == patient_id, _T.master_key_id == old.master_key_id,
                       _T.wrapped == old.ciphertext)
                .values(master_key_id=new.master_key_id, wrapped=new.ciphertext, updated_at=now_us())
            ).rowcount
        return bool(changed == 1)

    def delete(self, patient_id: str) -> bool:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            return bool(conn.execute(delete(data_keys).where(_T.patient_id == patient_id)).rowcount)

    def scan(self, after: str | None = None, limit: int = 500) -> list[tuple[str, WrappedKey]]:
        stmt = select(_T.patient_id, _T.master_key_id, _T.wrapped).order_by(_T.patient_id).limit(limit)
        if after is not None:
            stmt = stmt.where(_T.patient_id > after)
        with self.engine.connect() as conn:
            return [(r.patient_id, WrappedKey(r.master_key_id, bytes(r.wrapped))) for r in conn.execute(stmt)]
