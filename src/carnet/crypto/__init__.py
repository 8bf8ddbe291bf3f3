"""Envelope encryption: master keys in files, per-patient data keys, streaming AEAD, crypto-shredding."""

from carnet.crypto.errors import DecryptionFailed, KeyDestroyed, KeyUnavailable
from carnet.crypto.interfaces import DataKeyStore
from carnet.crypto.keyfiles import default_keys_dir, load_keyring, retire_master_key, rotate_master_key
from carnet.crypto.keys import DataKey, Keyring, MasterKey, WrappedKey
from carnet.crypto.memory import InMemoryDataKeyStore

__all__ = [
    "DataKey",
    "DataKeyStore",
    "DecryptionFailed",
    "InMemoryDataKeyStore",
    "KeyDestroyed",
    "KeyUnavailable",
    "Keyring",
    "MasterKey",
    "WrappedKey",
    "default_keys_dir",
    "load_keyring",
    "retire_master_key",
    "rotate_master_key",
]
