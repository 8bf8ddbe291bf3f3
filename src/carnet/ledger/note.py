"""C2SP signed notes (Ed25519) and tlog checkpoints: what the ledger signs and what auditors check.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text ``<origin>\\n<size>\\n<base64 root>\\n``
signed as a C2SP signed note (c2sp.org/signed-note): the text, a blank line, then one line
``— <key name> <base64(key hash || signature)>`` per signature. Using the formats of Go's
``golang.org/x/mod/sumdb/note`` and of the transparency-dev tools lets an auditor check Carnet's
ledger with off-the-shelf witnesses and verifiers instead of our code.

Parsing is strict (canonical base64, no control characters, decimal sizes without leading zeros):
two encodings of one checkpoint would let a log show different bytes to different auditors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100
SIG_PREFIX = "\u2014 "  # em dash, space
_HASH_SIZE = 32
_KEY_HASH_SIZE = 4
_ED25519_SIG_SIZE = 64
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_SIZE = re.compile(r"0|[1-9][0-9]*")
_MAX_SIZE = 2**64 - 1  # tree sizes are uint64 in every tlog implementation


class NoteError(ValueError):
    """A signed note or checkpoint that is malformed, or not signed by the expected key."""


def _b64decode(text: str) -> bytes | None:
    """Standard base64 (RFC 4648 §4) in its one canonical form, else None."""
    if not _B64.fullmatch(text):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def is_valid_key_name(name: object) -> bool:
    """C2SP key names: non-empty, no Unicode space, no '+' (and no control character)."""
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(c.isspace() or c < " " or c == "\x7f" for c in name)
    )


def _has_bad_chars(text: str) -> bool:
    """Control characters other than newline, forbidden anywhere in a note."""
    return any(c < " " and c != "\n" for c in text)


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _verifier_key(name: str, public_key: bytes) -> str:
    return f"{name}+{key_hash(name, public_key).hex()}+{_b64encode(bytes([ALG_ED25519]) + public_key)}"


class NoteSigner:
    """Signs note texts as ``name`` with an Ed25519 key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}: it must be non-empty, without '+' or spaces")
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("a note signer needs an Ed25519 private key")
        self.name = name
        self._key = private_key
        self._public = _raw_public(private_key.public_key())
        self.key_hash = key_hash(name, self._public)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, key hash {self.key_hash.hex()})"

    def verifier_key(self) -> str:
        """``<name>+<key hash hex>+<base64(0x01 || public key)>``, what auditors configure."""
        return _verifier_key(self.name, self._public)

    def signature_line(self, text: str) -> str:
        """The signature line (with its newline) of this key over ``text``."""
        sig = self._key.sign(_check_text(text).encode("utf-8"))
        return f"{SIG_PREFIX}{self.name} {_b64encode(self.key_hash + sig)}\n"

    def sign(self, text: str) -> str:
        """The signed note: ``text`` (ending in a newline), a blank line, this key's signature line."""
        return sign_note(text, [self])


def _check_text(text: str) -> str:
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("a note text must end with a newline")
    if _has_bad_chars(text):
        raise NoteError("a note text must not contain control characters other than newline")
    return text


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """``text`` signed by every signer, in order (a log key and its cosigners, say)."""
    _check_text(text)
    if not signers:
        raise ValueError("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} signatures per note")
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


@dataclass(frozen=True)
class NoteSignature:
    """One parsed signature line: key name, key hash, and the signature bytes after it."""

    name: str
    key_hash: bytes
    signature: bytes


def parse_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines, checking only the syntax."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed note: not valid UTF-8") from None
    if not isinstance(note, str):
        raise NoteError("malformed note: not text")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("malformed note: not valid UTF-8") from None
    if _has_bad_chars(note):
        raise NoteError("malformed note: control characters other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line between the text and the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("malformed note: the signatures must be non-empty lines ending with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    sigs = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed note: signature line {number} does not start with '— '")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        raw = _b64decode(b64) if b64 else None
        if not is_valid_key_name(name) or raw is None or len(raw) <= _KEY_HASH_SIZE:
            raise NoteError(f"malformed note: signature line {number} is not '— <name> <base64>'")
        sigs.append(NoteSignature(name, raw[:_KEY_HASH_SIZE], raw[_KEY_HASH_SIZE:]))
    return text, sigs


class NoteVerifier:
    """Checks signed notes against one trusted Ed25519 key (name and public key)."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}")
        if not isinstance(public_key, Ed25519PublicKey):
            raise TypeError("a note verifier needs an Ed25519 public key")
        self.name = name
        self._key = public_key
        self._public = _raw_public(public_key)
        self.key_hash = key_hash(name, self._public)

    def __repr__(self) -> str:
        return f"NoteVerifier({self.name!r}, key hash {self.key_hash.hex()})"

    @classmethod
    def from_key(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<8 hex key hash>+<base64(0x01 || 32-byte key)>``; ValueError if malformed."""
        if not isinstance(vkey, str):
            raise ValueError("a verifier key is a string")
        name, _, rest = vkey.partition("+")
        hash_hex, _, key_b64 = rest.partition("+")
        if not is_valid_key_name(name) or not _HEX8.fullmatch(hash_hex):
            raise ValueError("malformed verifier key: expected <name>+<8 hex digits>+<base64 key>")
        raw = _b64decode(key_b64)
        if raw is None or not raw:
            raise ValueError("malformed verifier key: the key is not canonical base64")
        if raw[0] != ALG_ED25519:
            raise ValueError(f"unsupported verifier key algorithm {raw[0]:#04x} (only Ed25519, 0x01)")
        if len(raw) != 1 + 32:
            raise ValueError("malformed verifier key: an Ed25519 public key is 32 bytes")
        if key_hash(name, raw[1:]) != bytes.fromhex(hash_hex):
            raise ValueError("malformed verifier key: the key hash does not match the name and key")
        return cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))

    def verifier_key(self) -> str:
        return _verifier_key(self.name, self._public)

    def verify(self, note: str | bytes) -> str:
        """The note's text if it carries a valid signature from this key; NoteError otherwise.

        Signatures from other keys (another name, or the same name with another key hash) are
        ignored, as C2SP requires; any signature line from this key that fails rejects the note.
        """
        text, sigs = parse_note(note)
        message = text.encode("utf-8")
        ours = [s for s in sigs if s.name == self.name and s.key_hash == self.key_hash]
        if not ours:
            raise NoteError(f"note not signed by key {self.name}+{self.key_hash.hex()}")
        for sig in ours:
            if len(sig.signature) != _ED25519_SIG_SIZE:
                raise NoteError(f"invalid signature for key {self.name}+{self.key_hash.hex()}")
            try:
                self._key.verify(sig.signature, message)
            except InvalidSignature:
                raise NoteError(f"invalid signature for key {self.name}+{self.key_hash.hex()}") from None
        return text


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint body: the log's origin, its tree size and root hash, opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        return format_checkpoint(self.origin, self.size, self.root, self.extensions)


def format_checkpoint(origin: str, size: int, root_hash: bytes, extensions: Sequence[str] = ()) -> str:
    """The checkpoint note text ``<origin>\\n<size>\\n<base64 root>\\n`` and one line per extension."""
    if not isinstance(origin, str) or origin == "" or "\n" in origin or _has_bad_chars(origin):
        raise ValueError("a checkpoint origin is one non-empty line")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
        raise ValueError(f"a checkpoint tree size is an integer in [0, 2**64), not {size!r}")
    if not isinstance(root_hash, bytes | bytearray) or len(root_hash) != _HASH_SIZE:
        raise ValueError("a checkpoint root hash is 32 bytes")
    if isinstance(extensions, str):
        raise ValueError("extensions are a sequence of lines, not a string")
    for line in extensions:
        if not isinstance(line, str) or line == "" or "\n" in line or _has_bad_chars(line):
            raise ValueError("checkpoint extension lines must be non-empty single lines")
    lines = [origin, str(size), _b64encode(bytes(root_hash)), *extensions]
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text (what :meth:`NoteVerifier.verify` returns); NoteError if malformed."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("malformed checkpoint: the text must end with a newline")
    if _has_bad_chars(text):
        raise NoteError("malformed checkpoint: control characters other than newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("malformed checkpoint: expected origin, tree size and root hash lines")
    origin, size_text, root_text, *extensions = lines
    if origin == "":
        raise NoteError("malformed checkpoint: empty origin")
    if len(size_text) > 20 or not _SIZE.fullmatch(size_text) or int(size_text) > _MAX_SIZE:
        raise NoteError(f"malformed checkpoint: tree size {size_text!r} is not a canonical decimal")
    root = _b64decode(root_text)
    if root is None or len(root) != _HASH_SIZE:
        raise NoteError("malformed checkpoint: the root hash is not the base64 of 32 bytes")
    if any(line == "" for line in extensions):
        raise NoteError("malformed checkpoint: empty extension line")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))
