"""Where wrapped data keys live: a small protocol the database implements.

The table behind it (one row per patient, in the patient-distributed schema)::

    data_keys(
        patient_id     text primary key,        -- distribution column
        master_key_id  char(16) not null,       -- indexed: rotation progress, retirement check
        wrapped        bytea not null,          -- WrappedKey.ciphertext, 61 bytes
        created_at     timestamptz not null,
        updated_at     timestamptz not null)

``add`` is ``INSERT ... ON CONFLICT (patient_id) DO NOTHING`` followed by a read of the row (the
first writer wins, every racer then uses the winner's key); ``replace`` is an ``UPDATE ... WHERE
patient_id = :p AND master_key_id = :old_id AND wrapped = :old``; ``delete`` removes the row;
``scan`` pages by ``patient_id`` (keyset pagination).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from carnet.crypto.keys import WrappedKey


class DataKeyStore(Protocol):
    def get(self, patient_id: str) -> WrappedKey | None:
        """The patient's wrapped key, or None if they have none (never had one, or shredded)."""
        ...

    def add(self, patient_id: str, wrapped: WrappedKey) -> WrappedKey:
        """Store ``wrapped`` unless the patient already has a key; return the key now stored."""
        ...

    def replace(self, patient_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        """Compare-and-swap: store ``new`` only if ``old`` is still the stored key."""
        ...

    def delete(self, patient_id: str) -> bool:
        """Remove the patient's key; True if there was one."""
        ...

    def scan(self, after: str | None = None, limit: int = 500) -> list[tuple[str, WrappedKey]]:
        """Up to ``limit`` (patient id, key) pairs with patient id > ``after``, ordered by patient id."""
        ...
