"""Keyring: wrapping, data keys, rotation, shredding, and keys that never show their bytes."""

from __future__ import annotations

import logging
import os
import pickle
import threading

import pytest

from carnet.crypto import (
    DataKey,
    DecryptionFailed,
    InMemoryDataKeyStore,
    KeyDestroyed,
    Keyring,
    KeyUnavailable,
    MasterKey,
    WrappedKey,
)
from carnet.crypto.stream import decrypt, encrypt


def test_keys_hide_their_bytes() -> None:
    for key in (MasterKey.generate(), DataKey.generate()):
        secret = key._key.hex()
        shown = [repr(key), str(key), f"{key}", repr([key]), repr(Keyring(MasterKey.generate(), []))]
        assert not any(secret in s for s in shown)
        assert key.id in repr(key) and len(key.id) == 16
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(key)


def test_key_ids_are_stable_fingerprints() -> None:
    raw = os.urandom(32)
    assert MasterKey(raw).id == MasterKey(raw).id
    assert MasterKey(raw).id != DataKey(raw).id  # one label per kind of key
    assert MasterKey(raw) == MasterKey(raw)
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey(b"short")


def test_a_key_in_a_log_record_shows_only_its_id(caplog: pytest.LogCaptureFixture) -> None:
    key = MasterKey.generate()
    with caplog.at_level(logging.INFO):
        logging.getLogger("carnet.test").info("using %s", key)
    assert key.export_hex() not in caplog.text and key.id in caplog.text


def test_wrap_unwrap_round_trip() -> None:
    ring = Keyring(MasterKey.generate())
    dk = DataKey.generate()
    wrapped = ring.wrap("p1", dk)
    assert wrapped.master_key_id == ring.current_id
    assert len(wrapped.ciphertext) == 61
    assert dk._raw() not in wrapped.ciphertext
    assert ring.unwrap("p1", wrapped) == dk
    assert "ciphertext" not in repr(wrapped)


def test_a_wrapped_key_is_bound_to_its_patient_and_master() -> None:
    ring = Keyring(MasterKey.generate())
    wrapped = ring.wrap("p1", DataKey.generate())
    with pytest.raises(DecryptionFailed):
        ring.unwrap("p2", wrapped)  # copied onto another patient's row
    other = MasterKey.generate()
    ring.add(other)
    with pytest.raises(DecryptionFailed):
        ring.unwrap("p1", WrappedKey(other.id, wrapped.ciphertext))  # relabelled


def test_wrong_master_key_fails() -> None:
    wrapped = Keyring(MasterKey.generate()).wrap("p1", DataKey.generate())
    with pytest.raises(KeyUnavailable):
        Keyring(MasterKey.generate()).unwrap("p1", wrapped)


def test_a_tampered_wrapped_key_fails() -> None:
    ring = Keyring(MasterKey.generate())
    wrapped = ring.wrap("p1", DataKey.generate())
    for i in (0, 5, 30, 60):
        bad = bytearray(wrapped.ciphertext)
        bad[i] ^= 1
        with pytest.raises(DecryptionFailed):
            ring.unwrap("p1", WrappedKey(wrapped.master_key_id, bytes(bad)))


def test_data_key_is_created_once_and_then_reused() -> None:
    ring, store = Keyring(MasterKey.generate()), InMemoryDataKeyStore()
    with pytest.raises(KeyDestroyed):
        ring.data_key("p1", store)
    first = ring.data_key("p1", store, create=True)
    assert ring.data_key("p1", store) == first
    assert ring.data_key("p1", store, create=True) == first


def test_concurrent_creation_agrees_on_one_key() -> None:
    ring, store = Keyring(MasterKey.generate()), InMemoryDataKeyStore()
    got: list[DataKey] = []
    threads = [threading.Thread(target=lambda: got.append(ring.data_key("p1", store, create=True)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({k.id for k in got}) == 1


def test_rotation_rewraps_every_key_and_content_stays_readable() -> None:
    old = MasterKey.generate()
    ring, store = Keyring(old), InMemoryDataKeyStore()
    sealed = {}
    for i in range(1203):
        pid = f"p{i:05d}"
        key = ring.data_key(pid, store, create=True)
        if i % 400 == 0:
            sealed[pid] = (b"".join(encrypt(key, [pid.encode() * 100])), pid.encode() * 100)
    new = MasterKey.generate()
    assert ring.rotate(new, store, page=100) == 1203
    assert ring.current_id == new.id
    assert ring.in_use(store, old.id) == 0 and ring.in_use(store, new.id) == 1203
    assert ring.rotate(new, store) == 0  # resumable: nothing left to do
    fresh = Keyring(new)  # the old master key is no longer needed
    for pid, (blob, plain) in sealed.items():
        assert b"".join(decrypt(fresh.data_key(pid, store), [blob])) == plain


def test_rotation_does_not_resurrect_a_key_shredded_meanwhile() -> None:
    ring, store = Keyring(MasterKey.generate()), InMemoryDataKeyStore()
    ring.data_key("p1", store, create=True)
    stale = store.get("p1")
    assert stale is not None
    assert ring.shred("p1", store)
    assert not store.replace("p1", stale, ring.wrap("p1", DataKey.generate()))
    assert store.get("p1") is None


def test_shred_makes_content_unreadable() -> None:
    ring, store = Keyring(MasterKey.generate()), InMemoryDataKeyStore()
    key = ring.data_key("p1", store, create=True)
    blob = b"".join(encrypt(key, [b"secret letter"]))
    assert ring.shred("p1", store)
    assert not ring.shred("p1", store)
    with pytest.raises(KeyDestroyed):
        ring.data_key("p1", store)
    fresh = ring.data_key("p1", store, create=True)  # a new record gets a new key...
    with pytest.raises(DecryptionFailed):
        b"".join(decrypt(fresh, [blob]))  # ...which cannot read the old content


def test_scan_pages_in_patient_order() -> None:
    ring, store = Keyring(MasterKey.generate()), InMemoryDataKeyStore()
    for pid in ["c", "a", "b", "d"]:
        ring.data_key(pid, store, create=True)
    assert [p for p, _ in store.scan(limit=2)] == ["a", "b"]
    assert [p for p, _ in store.scan(after="b", limit=2)] == ["c", "d"]
    assert store.scan(after="d") == []
