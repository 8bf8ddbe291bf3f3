"""The log's signing key (Ed25519) and its name (the checkpoint origin).

The key is a PEM file in the keys folder, created once (atomically, so that concurrent workers end
up with the same key); every server process of a deployment must be given the same file. Its
public half is published at ``/ledger/key`` in the signed-note verifier key format.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carnet.config import Settings
from carnet.crypto.keyfiles import create_once
from carnet.ledger.note import NoteSigner

KEY_FILE = "ledger-ed25519.pem"


DEFAULT_ORIGIN = "carnet.localhost/ledger"


def origin_of(settings: Settings) -> str:
    """The log's origin line: the configured one, else ``<host[:port]>/ledger`` of the configured
    base URL, else a fixed name. Never derived from the port a server happens to listen on: every
    checkpoint of a log must carry the same origin for as long as the log lives."""
    if settings.ledger_origin:
        return settings.ledger_origin
    if settings.base_url:
        parts = urlsplit(settings.base_url)
        return f"{parts.netloc}{parts.path.rstrip('/')}/ledger"
    return DEFAULT_ORIGIN


def _create(path: Path) -> None:
    create_once(path, Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def load_signer(settings: Settings) -> NoteSigner:
    path = settings.ledger_key_file or settings.keys_path / KEY_FILE
    if not path.exists():
        _create(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"the ledger key {path.name} is not an Ed25519 private key")
    return NoteSigner(origin_of(settings), key)
