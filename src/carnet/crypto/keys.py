"""Master keys, per-patient data keys, and the keyring that wraps one with the other.

Envelope encryption: each patient's content is encrypted under a random 256-bit *data key*; the
data key is stored only *wrapped* (encrypted) by a *master key*, and the master key lives outside
the database (a key file, see :mod:`carnet.crypto.keyfiles`). Rotating the master key rewraps
every data key and leaves the content alone; destroying a data key makes that patient's
content unreadable (crypto-shredding).

Wrapping uses AES-256-GCM rather than AES key wrap (RFC 3394/5649): key wrap has no associated
data, while GCM lets each wrapped key be bound to the patient it belongs to and to the master key
that wrapped it (the AAD), so a wrapped key copied onto another patient's row, or relabelled with
another master key id, fails to unwrap instead of silently decrypting the wrong record. A random
96-bit nonce per wrap is safe far beyond any plausible number of wraps under one master key.

Key objects hide their bytes: their repr shows an id (a truncated HMAC of the key, not the key)
and they refuse to be pickled, so they cannot end up in logs, tracebacks or task queues by
accident.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carnet.crypto.errors import DecryptionFailed, KeyDestroyed, KeyUnavailable
from carnet.crypto.interfaces import DataKeyStore

KEY_BYTES = 32
ID_BYTES = 8
WRAP_VERSION = 1
_NONCE_BYTES = 12
_WRAP_AAD = b"carnet data key wrap v1\x00"


class _Secret:
    """256 bits of key material with an id; the bytes never show in repr/str and never pickle."""

    __slots__ = ("_id", "_key")
    _label = b""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes")
        self._key = bytes(key)
        self._id = hmac.new(self._key, self._label, hashlib.sha256).digest()[:ID_BYTES]

    @classmethod
    def generate(cls) -> Self:
        return cls(os.urandom(KEY_BYTES))

    @property
    def id(self) -> str:
        """A public fingerprint (16 hex digits) that names the key without revealing it."""
        return self._id.hex()

    @property
    def id_bytes(self) -> bytes:
        return self._id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Secret) or type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._id))

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} objects are not picklable")


class MasterKey(_Secret):
    """The key that wraps data keys. Kept in a file, never in the database, never logged."""

    __slots__ = ()
    _label = b"carnet master key id v1"

    def export_hex(self) -> str:
        """The key as 64 hex digits, for writing the key file only."""
        return self._key.hex()

    def _aead(self) -> AESGCM:
        return AESGCM(self._key)


class DataKey(_Secret):
    """A patient's random 256-bit content key. Used only through keys derived from it."""

    __slots__ = ()
    _label = b"carnet data key id v1"

    def derive(self, purpose: bytes, salt: bytes | None = None) -> bytes:
        """A 256-bit subkey for one purpose (HKDF-SHA256); purposes never share a subkey."""
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=purpose).derive(self._key)

    def _raw(self) -> bytes:
        return self._key


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted by a master key: what the data-key store keeps for each patient.

    ``ciphertext`` is ``version (1 byte) | nonce (12) | AES-256-GCM(data key) with its tag (48)``,
    61 bytes; ``master_key_id`` names the master key that can unwrap it.
    """

    master_key_id: str
    ciphertext: bytes = field(repr=False)


def _aad(patient_id: str, master_key_id: str) -> bytes:
    return _WRAP_AAD + master_key_id.encode("ascii") + b"\x00" + patient_id.encode("utf-8")


class Keyring:
    """The master keys in force: one *current* key that wraps, older ones that still unwrap.

    Several master keys coexist during a rotation: data keys name the master key that wrapped
    them (its id), so a node that has not yet picked up the new key file keeps working, and
    :meth:`rotate` can be resumed after a crash.
    """

    def __init__(self, current: MasterKey, previous: Iterable[MasterKey] = ()) -> None:
        self._lock = threading.Lock()
        self._current = current
        self._keys: dict[str, MasterKey] = {k.id: k for k in previous}
        self._keys[current.id] = current

    def __repr__(self) -> str:
        others = sorted(k for k in self._keys if k != self._current.id)
        return f"Keyring(current={self._current.id!r}, previous={others!r})"

    @property
    def current_id(self) -> str:
        return self._current.id

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def add(self, key: MasterKey) -> None:
        """Make an older (or newer) master key available for unwrapping."""
        with self._lock:
            self._keys.setdefault(key.id, key)

    # -- wrapping -------------------------------------------------------------------------
    def wrap(self, patient_id: str, key: DataKey, master: MasterKey | None = None) -> WrappedKey:
        master = master or self._current
        nonce = os.urandom(_NONCE_BYTES)
        sealed = master._aead().encrypt(nonce, key._raw(), _aad(patient_id, master.id))
        return WrappedKey(master.id, bytes([WRAP_VERSION]) + nonce + sealed)

    def unwrap(self, patient_id: str, wrapped: WrappedKey) -> DataKey:
        master = self._keys.get(wrapped.master_key_id)
        if master is None:
            raise KeyUnavailable(f"data key wrapped by master key {wrapped.master_key_id}, "
                                 "which this keyring does not hold")
        blob = wrapped.ciphertext
        if len(blob) != 1 + _NONCE_BYTES + KEY_BYTES + 16 or blob[0] != WRAP_VERSION:
            raise DecryptionFailed("wrapped data key has an unknown format")
        try:
            raw = master._aead().decrypt(blob[1:1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES:],
                                         _aad(patient_id, master.id))
        except InvalidTag:
            raise DecryptionFailed("wrapped data key does not unwrap for this patient") from None
        return DataKey(raw)

    # -- data keys --------------------------------------------------------------------------
    def data_key(self, patient_id: str, store: DataKeyStore, *, create: bool = False) -> DataKey:
        """The patient's data key; with ``create``, made on first use (safe under concurrency:
        the store keeps the first key added and every writer uses that one)."""
        wrapped = store.get(patient_id)
        if wrapped is None:
            if not create:
                raise KeyDestroyed("this patient's data key does not exist (destroyed): content unreadable")
            wrapped = store.add(patient_id, self.wrap(patient_id, DataKey.generate()))
        return self.unwrap(patient_id, wrapped)

    def rotate(self, new_master: MasterKey, store: DataKeyStore, *, page: int = 500) -> int:
        """Make ``new_master`` current and rewrap every data key with it; content is untouched.

        Returns the number of keys rewrapped. Each rewrap is a compare-and-swap, so a key
        shredded meanwhile stays shredded; keys already under ``new_master`` are skipped, which
        makes an interrupted rotation resumable by running it again.
        """
        with self._lock:
            self._keys.setdefault(new_master.id, new_master)
            self._current = new_master
        count = 0
        after: str | None = None
        while True:
            batch = store.scan(after=after, limit=page)
            if not batch:
                return count
            for patient_id, wrapped in batch:
                if wrapped.master_key_id != new_master.id:
                    fresh = self.wrap(patient_id, self.unwrap(patient_id, wrapped), new_master)
                    if store.replace(patient_id, wrapped, fresh):
                        count += 1
            after = batch[-1][0]

    def shred(self, patient_id: str, store: DataKeyStore) -> bool:
        """Destroy the patient's data key: everything encrypted under it becomes unreadable.

        Backups of the data-key store still hold the wrapped key; the shred is final for them
        once the master key in force at backup time has been rotated out and retired.
        """
        return store.delete(patient_id)

    def in_use(self, store: DataKeyStore, master_key_id: str, *, page: int = 500) -> int:
        """How many data keys are still wrapped by ``master_key_id``."""
        count = 0
        after: str | None = None
        while batch := store.scan(after=after, limit=page):
            count += sum(1 for _, w in batch if w.master_key_id == master_key_id)
            after = batch[-1][0]
        return count
