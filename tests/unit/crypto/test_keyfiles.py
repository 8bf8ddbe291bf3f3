"""Master key files: created 0600 on first use, rotation across files, retirement."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from carnet.crypto import InMemoryDataKeyStore, load_keyring, retire_master_key, rotate_master_key
from carnet.crypto.keyfiles import default_keys_dir, read_key_file
from carnet.crypto.stream import decrypt, encrypt
from carnet.errors import Conflict, Invalid


def test_first_use_creates_a_private_key_file(tmp_path: Path) -> None:
    keys = default_keys_dir(tmp_path / "data")
    ring = load_keyring(keys)
    path = keys / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    text = path.read_text()
    assert len(text.strip()) == 64 and text.endswith("\n")
    assert load_keyring(keys).current_id == ring.current_id
    assert text.strip() not in repr(ring)


def test_no_key_file_and_no_creation_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="no master key"):
        load_keyring(tmp_path, create=False)


def test_a_malformed_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(Invalid, match="64 hex digits"):
        read_key_file(path)
    path.write_text("ab" * 31 + "\n")
    with pytest.raises(Invalid, match="256-bit"):
        read_key_file(path)


def test_a_readable_key_file_is_warned_about_without_showing_it(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    ring = load_keyring(tmp_path)
    path = tmp_path / "master.key"
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="carnet.crypto"):
        assert load_keyring(tmp_path).current_id == ring.current_id
    assert "readable by group or others" in caplog.text
    assert path.read_text().strip() not in caplog.text


def test_rotation_across_files(tmp_path: Path) -> None:
    store = InMemoryDataKeyStore()
    ring = load_keyring(tmp_path)
    old_id = ring.current_id
    blobs = {}
    for pid in ("p1", "p2", "p3"):
        blobs[pid] = b"".join(encrypt(ring.data_key(pid, store, create=True), [pid.encode()]))
    rotation = rotate_master_key(tmp_path, store)
    assert rotation.old_key_id == old_id and rotation.rewrapped == 3
    reloaded = load_keyring(tmp_path)
    assert reloaded.current_id == rotation.new_key_id != old_id
    assert reloaded.key_ids == sorted([old_id, rotation.new_key_id])
    assert sorted(p.name for p in tmp_path.glob("*.key")) == ["master-" + old_id + ".key", "master.key"]
    assert all(w.master_key_id == rotation.new_key_id for _, w in store.scan())
    for pid, blob in blobs.items():
        assert b"".join(decrypt(reloaded.data_key(pid, store), [blob])) == pid.encode()


def test_retirement(tmp_path: Path) -> None:
    store = InMemoryDataKeyStore()
    stale_node = load_keyring(tmp_path)
    stale_node.data_key("p1", store, create=True)
    rotation = rotate_master_key(tmp_path, store)
    with pytest.raises(Conflict, match="current"):
        retire_master_key(tmp_path, rotation.new_key_id, store)
    stale_node.data_key("p2", store, create=True)  # a node that had not reloaded its keyring
    with pytest.raises(Conflict, match="1 data keys are still wrapped"):
        retire_master_key(tmp_path, rotation.old_key_id, store)
    second = rotate_master_key(tmp_path, store)
    retire_master_key(tmp_path, rotation.old_key_id, store)
    retire_master_key(tmp_path, second.old_key_id, store)
    assert load_keyring(tmp_path).key_ids == [second.new_key_id]
    for pid in ("p1", "p2"):
        load_keyring(tmp_path).data_key(pid, store)
    with pytest.raises(Invalid):
        retire_master_key(tmp_path, rotation.old_key_id, store)
