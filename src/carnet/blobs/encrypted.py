"""Encryption at rest over any object store: what is stored is ciphertext, per patient.

``EncryptedBlobStore(inner, keyring, data_keys).for_patient(patient_id)`` is a :class:`BlobStore`
whose content is encrypted with the patient's data key in the streaming format of
:mod:`carnet.crypto.stream` (AES-256-GCM segments).

Addressing. The stored key of a blob is ``HMAC-SHA256(address key, SHA-256 of the plaintext)``
(hex), where the address key is derived from the patient's data key (HKDF, its own purpose
label). So:

- the same content for two patients is stored twice under unrelated keys, with unrelated
  ciphertexts: the bucket does not reveal that two records share a document;
- a bucket reader who knows (or guesses) a document cannot confirm that a patient holds it, which
  a plain SHA-256 key would allow; keys also say nothing about which blobs belong to one patient
  (no per-patient prefix), so the bucket shows neither a patient's number of documents nor sizes
  grouped by patient;
- the same content stored twice for one patient lands under the same key (one copy);
- once the data key is destroyed the address can no longer even be computed.

The database keeps the :class:`BlobRef` (stored key, SHA-256, SHA-1, size) with the patient id;
the janitor and a retention purge work from those stored keys. A read recomputes the key from the
reference and the patient, so a reference can only ever open its own patient's content.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime

from carnet.blobs.content import (
    VERIFY_WHOLE,
    ContentAddressedStore,
    Digest,
    alert,
    finish,
    open_object,
    resolve_range,
    verified,
)
from carnet.blobs.errors import CorruptBlob
from carnet.blobs.interfaces import DEFAULT_MAX_SIZE, BlobRef, ObjectStore, StoredBlob
from carnet.crypto.errors import DecryptionFailed, KeyDestroyed
from carnet.crypto.interfaces import DataKeyStore
from carnet.crypto.keys import DataKey, Keyring
from carnet.crypto.stream import DEFAULT_SEGMENT_SIZE, HEADER_SIZE, Decryptor, ciphertext_size, encrypt
from carnet.errors import NotFound

_ADDRESS_INFO = b"carnet blob address v1"


_ADDRESS_KEYS: dict[bytes, bytes] = {}  # data key id -> its address key (an HKDF per read otherwise)


def address(key: DataKey, sha256: str) -> str:
    """The stored key of content with this SHA-256 for the patient owning ``key``."""
    subkey = _ADDRESS_KEYS.get(key.id_bytes)
    if subkey is None:
        if len(_ADDRESS_KEYS) >= 4096:
            _ADDRESS_KEYS.clear()
        subkey = _ADDRESS_KEYS[key.id_bytes] = key.derive(_ADDRESS_INFO)
    return hmac.new(subkey, bytes.fromhex(sha256), hashlib.sha256).hexdigest()


def _authenticated(plain: Iterator[bytes], key: str) -> Iterator[bytes]:
    try:
        yield from plain
    except DecryptionFailed as exc:
        raise alert(key, exc.message) from None


class EncryptedBlobStore:
    """Per-patient encrypted views over one object store, plus the store-wide housekeeping."""

    def __init__(self, inner: ContentAddressedStore | ObjectStore, keyring: Keyring, data_keys: DataKeyStore,
                 *, max_size: int | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 verify_whole: int | None = None) -> None:
        if isinstance(inner, ContentAddressedStore):
            self.objects: ObjectStore = inner.objects
            self.max_size = inner.max_size if max_size is None else max_size
            self.verify_whole = inner.verify_whole if verify_whole is None else verify_whole
        else:
            self.objects = inner
            self.max_size = DEFAULT_MAX_SIZE if max_size is None else max_size
            self.verify_whole = VERIFY_WHOLE if verify_whole is None else verify_whole
        self.keyring = keyring
        self.data_keys = data_keys
        self._keys: dict[str, tuple[DataKey, float]] = {}
        self._keys_lock = threading.Lock()
        self.segment_size = segment_size

    def __repr__(self) -> str:
        return f"EncryptedBlobStore({self.objects!r}, {self.keyring!r})"

    def for_patient(self, patient_id: str) -> PatientBlobStore:
        return PatientBlobStore(self, patient_id)

    KEY_TTL = 60.0  # seconds an unwrapped data key is reused without asking the database
    KEY_CACHE = 4096

    def data_key(self, patient_id: str, *, create: bool = False) -> DataKey:
        """The patient's data key, unwrapped. Kept for ``KEY_TTL`` seconds (a database read and an
        unwrap per document otherwise): a key destroyed on another node stops opening content here
        within that time; :meth:`purge` forgets it at once on this node."""
        now = time.monotonic()
        cached = self._keys.get(patient_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = self.keyring.data_key(patient_id, self.data_keys, create=create)
        with self._keys_lock:
            if len(self._keys) >= self.KEY_CACHE:
                self._keys.clear()
            self._keys[patient_id] = (key, now + self.KEY_TTL)
        return key

    # Store-wide operations on stored keys (janitor, purge): no key material needed.
    def list(self) -> Iterator[StoredBlob]:
        return self.objects.list()

    def delete(self, key: str) -> None:
        self.objects.delete(key)

    def sweep_staging(self, older_than: datetime) -> int:
        return self.objects.sweep_staging(older_than)

    def shred(self, patient_id: str) -> bool:
        """Destroy the patient's data key (their content becomes unreadable); True if there was one."""
        with self._keys_lock:
            self._keys.pop(patient_id, None)
        return self.keyring.shred(patient_id, self.data_keys)

    def purge(self, patient_id: str, keys: Iterable[str]) -> bool:
        """Retention purge: destroy the patient's data key first (their content is unreadable from
        that moment), then remove their blobs (``keys`` from the database's references)."""
        shredded = self.shred(patient_id)
        for key in keys:
            self.objects.delete(key)
        return shredded


class PatientBlobStore:
    """One patient's encrypted content: a BlobStore."""

    def __init__(self, owner: EncryptedBlobStore, patient_id: str) -> None:
        self._owner = owner
        self.patient_id = patient_id
        self.max_size = owner.max_size

    def __repr__(self) -> str:
        return f"PatientBlobStore({self._owner.objects!r})"

    def put(self, chunks: Iterable[bytes]) -> BlobRef:
        owner = self._owner
        key = owner.data_key(self.patient_id, create=True)
        digest = Digest(self.max_size)
        sealed = encrypt(key, digest.feed(chunks), segment_size=owner.segment_size)
        stored = owner.objects.write(sealed, lambda: address(key, digest.sha256))
        return digest.ref(stored)

    def _locate(self, ref: BlobRef) -> tuple[DataKey, str]:
        key = self._owner.data_key(self.patient_id)
        stored = address(key, ref.sha256)
        if stored != ref.key:
            raise NotFound("no such content in this patient's record")
        return key, stored

    def open(self, ref: BlobRef, start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        span = resolve_range(ref.size, start, end)
        key, stored = self._locate(ref)
        reader = open_object(self._owner.objects, stored)
        try:
            try:
                decryptor = Decryptor(key, b"".join(reader.read(0, HEADER_SIZE)))
            except DecryptionFailed as exc:
                raise alert(stored, exc.message) from None
            expected = ciphertext_size(ref.size, decryptor.segment_size)
            if reader.size != expected:
                raise alert(stored, f"stored size {reader.size} differs from the expected {expected} "
                                    "(truncated or extended)")
            verify_whole = self._owner.verify_whole
            if span is None:
                segments = decryptor.stream(reader.read(HEADER_SIZE, reader.size), ref.size)
                plain = _authenticated(segments, stored)

                def fail(reason: str) -> CorruptBlob:
                    return alert(stored, reason)

                return finish(reader, verified(plain, ref, fail), ref.size, verify_whole)
            lo, hi = decryptor.span(ref.size, *span)
            body = _authenticated(decryptor.range(reader.read(lo, hi), ref.size, *span), stored)
            return finish(reader, body, span[1] - span[0], verify_whole)
        except BaseException:
            reader.close()
            raise

    def exists(self, ref: BlobRef) -> bool:
        try:
            _, stored = self._locate(ref)
        except (KeyDestroyed, NotFound):
            return False
        return self._owner.objects.stat(stored) is not None

    def delete(self, key: str) -> None:
        self._owner.objects.delete(key)

    def list(self) -> Iterator[StoredBlob]:
        """Every stored object (all patients: stored keys do not tell whose they are)."""
        return self._owner.objects.list()
