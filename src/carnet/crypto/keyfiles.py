"""Master key files: ``<data_dir>/keys/master.key`` by default, outside the database.

Layout of the keys folder (mode 0700; every key file 0600, 64 hex digits and a newline)::

    master.key            the current master key: it wraps new data keys
    master-<id>.key       older (or not yet current) master keys, still used to unwrap

A rotation (:func:`rotate_master_key`) survives a crash at any step: (1) the new key is written as
``master-<new>.key``, (2) every data key is rewrapped with it, (3) the old key is saved as
``master-<old>.key``, (4) the new key file is renamed over ``master.key``. Running it again after a
crash finishes the job under yet another new key. The old key stays until
:func:`retire_master_key`, which refuses while any data key still needs it (a node that had not
reloaded its keyring may have wrapped a new patient's key with it: rotate again first).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from carnet.crypto.interfaces import DataKeyStore
from carnet.crypto.keys import KEY_BYTES, Keyring, MasterKey
from carnet.errors import Conflict, Invalid

log = logging.getLogger("carnet.crypto")

CURRENT = "master.key"


def default_keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_key_file(path: Path, key: MasterKey) -> None:
    """Create ``path`` with mode 0600 (never overwriting), durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (key.export_hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def read_key_file(path: Path) -> MasterKey:
    """Load a master key file: 64 hex digits (a trailing newline allowed) or 32 raw bytes."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("master key file %s is readable by group or others; make it mode 0600", path.name)
    data = path.read_bytes()
    if len(data) == KEY_BYTES:
        return MasterKey(data)
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise Invalid(f"master key file {path.name} is not 64 hex digits") from None
    if len(raw) != KEY_BYTES:
        raise Invalid(f"master key file {path.name} does not hold a 256-bit key")
    return MasterKey(raw)


def _ensure_dir(keys_dir: Path) -> None:
    if not keys_dir.exists():
        keys_dir.mkdir(parents=True, mode=0o700)
        _fsync_dir(keys_dir.parent)


def load_keyring(keys_dir: Path, *, create: bool = True) -> Keyring:
    """The keyring from the keys folder; with ``create``, a first master key is made if none exists."""
    current_path = keys_dir / CURRENT
    if not current_path.exists():
        if not create:
            raise Invalid(f"no master key in the keys folder ({CURRENT})")
        _ensure_dir(keys_dir)
        try:
            _write_key_file(current_path, MasterKey.generate())
            log.info("created a new master key (%s)", CURRENT)
        except FileExistsError:
            pass  # another process created it first: use theirs
    current = read_key_file(current_path)
    previous = []
    for path in sorted(keys_dir.glob("master-*.key")):
        key = read_key_file(path)
        if path.name != f"master-{key.id}.key":
            log.warning("key file %s holds master key %s; its name should say so", path.name, key.id)
        if key.id != current.id:
            previous.append(key)
    return Keyring(current, previous)


@dataclass(frozen=True)
class Rotation:
    old_key_id: str
    new_key_id: str
    rewrapped: int


def rotate_master_key(keys_dir: Path, store: DataKeyStore) -> Rotation:
    """Generate a new master key, rewrap every data key with it, and make it current."""
    keyring = load_keyring(keys_dir, create=False)
    old = read_key_file(keys_dir / CURRENT)
    new = MasterKey.generate()
    _write_key_file(keys_dir / f"master-{new.id}.key", new)
    rewrapped = keyring.rotate(new, store)
    saved_old = keys_dir / f"master-{old.id}.key"
    if not saved_old.exists():
        _write_key_file(saved_old, old)
    os.replace(keys_dir / f"master-{new.id}.key", keys_dir / CURRENT)
    _fsync_dir(keys_dir)
    log.info("master key rotated from %s to %s; %d data keys rewrapped", old.id, new.id, rewrapped)
    return Rotation(old.id, new.id, rewrapped)


def retire_master_key(keys_dir: Path, key_id: str, store: DataKeyStore) -> None:
    """Delete an old master key file once no data key is wrapped by it any more."""
    keyring = load_keyring(keys_dir, create=False)
    if key_id == keyring.current_id:
        raise Conflict("the current master key cannot be retired; rotate first")
    path = keys_dir / f"master-{key_id}.key"
    if not path.exists():
        raise Invalid(f"no key file for master key {key_id}")
    remaining = keyring.in_use(store, key_id)
    if remaining:
        raise Conflict(f"{remaining} data keys are still wrapped by master key {key_id}; rotate again first")
    path.unlink()
    _fsync_dir(keys_dir)
    log.info("master key %s retired", key_id)


def create_once(path: Path, data: bytes) -> None:
    """Create a secret file (mode 0600) with ``data``, atomically and never overwriting: when
    several processes race to create it, the first one's file wins and the others keep it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
