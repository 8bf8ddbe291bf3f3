"""Streaming authenticated encryption of content, segment by segment (format ``CRNB`` v1).

The construction is the STREAM online AEAD (Hoang, Reyhanitabar, Rogaway, Vizár 2015) as used by
Tink's AES-GCM-HKDF streaming and by age: the plaintext is cut into fixed-size segments, each
sealed with AES-256-GCM under a per-blob key, with a nonce that carries the segment's index and
whether it is the last one. Content is never held whole in memory, any segment can be decrypted
on its own (HTTP range requests), and every alteration is detected: a flipped bit fails that
segment's tag, a swapped or repeated segment fails because its index is in the nonce, a stream cut
at a segment boundary fails because the new last segment was sealed as "not last", and an
appended segment fails because the real last one was sealed as "last".

Layout::

    header (40 bytes)
        magic          4   b"CRNB"
        version        1   0x01
        segment_size   4   plaintext bytes per segment, big-endian (default 65536)
        data_key_id    8   id of the data key (DataKey.id_bytes): a wrong key is named, not guessed
        salt          16   random per blob
        nonce_prefix   7   random per blob
    segments, in order, i = 0 .. n-1 with n = max(1, ceil(size / segment_size))
        AES-256-GCM(segment_key, nonce_i, plaintext_i, aad=header) = ciphertext_i | tag (16)
        segment_key = HKDF-SHA256(data key, salt, info=b"carnet blob segments v1")
        nonce_i     = nonce_prefix (7) | i (4, big-endian) | last flag (1: 0x01 last, 0x00 not)

Every segment holds ``segment_size`` plaintext bytes except the last, which holds 1 to
``segment_size`` bytes (0 only for empty content, which is one empty last segment). The header is
the associated data of every segment, so it cannot be altered either. A fresh salt per blob gives
each blob its own key, so nonces never repeat under a key however many blobs a patient has.
Ciphertext size = 40 + size + 16 * n.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carnet.crypto.errors import DecryptionFailed
from carnet.crypto.keys import DataKey

MAGIC = b"CRNB"
VERSION = 1
TAG_SIZE = 16
DEFAULT_SEGMENT_SIZE = 64 * 1024
MAX_SEGMENT_SIZE = 1 << 24
_HEADER = struct.Struct(">4sBI8s16s7s")
HEADER_SIZE = _HEADER.size
_SEGMENT_KEY_INFO = b"carnet blob segments v1"
_MAX_SEGMENTS = 1 << 32


@dataclass(frozen=True)
class StreamHeader:
    segment_size: int
    data_key_id: bytes
    salt: bytes
    nonce_prefix: bytes

    @classmethod
    def new(cls, key: DataKey, segment_size: int = DEFAULT_SEGMENT_SIZE) -> StreamHeader:
        if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment size must be between 1 and {MAX_SEGMENT_SIZE}")
        return cls(segment_size, key.id_bytes, os.urandom(16), os.urandom(7))

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.segment_size, self.data_key_id, self.salt, self.nonce_prefix)

    @classmethod
    def parse(cls, data: bytes) -> StreamHeader:
        if len(data) < HEADER_SIZE:
            raise DecryptionFailed("encrypted content is shorter than its header")
        magic, version, segment_size, key_id, salt, prefix = _HEADER.unpack(data[:HEADER_SIZE])
        if magic != MAGIC:
            raise DecryptionFailed("not encrypted content (bad magic)")
        if version != VERSION:
            raise DecryptionFailed(f"encrypted content format version {version} is not supported")
        if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
            raise DecryptionFailed("encrypted content header has an invalid segment size")
        return cls(segment_size, key_id, salt, prefix)


def segment_count(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return max(1, -(-plaintext_size // segment_size))


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return HEADER_SIZE + plaintext_size + TAG_SIZE * segment_count(plaintext_size, segment_size)


class _Segments:
    """Seals or opens the segments of one blob."""

    def __init__(self, key: DataKey, header: StreamHeader) -> None:
        self.header = header
        self._aad = header.to_bytes()
        self._aead = AESGCM(key.derive(_SEGMENT_KEY_INFO, salt=header.salt))

    def _nonce(self, index: int, last: bool) -> bytes:
        if index >= _MAX_SEGMENTS:
            raise ValueError("content too large for this segment size")
        return self.header.nonce_prefix + struct.pack(">IB", index, 1 if last else 0)

    def seal(self, index: int, last: bool, plaintext: bytes | bytearray | memoryview) -> bytes:
        return self._aead.encrypt(self._nonce(index, last), bytes(plaintext), self._aad)

    def open(self, index: int, last: bool, ciphertext: bytes | bytearray | memoryview) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(index, last), bytes(ciphertext), self._aad)
        except InvalidTag:
            raise DecryptionFailed(f"segment {index} does not authenticate "
                                   "(altered, reordered, truncated or wrong key)") from None


def encrypt(key: DataKey, chunks: Iterable[bytes], *,
            segment_size: int = DEFAULT_SEGMENT_SIZE) -> Iterator[bytes]:
    """Encrypt a stream of plaintext chunks (any sizes); yields the header then each sealed segment."""
    header = StreamHeader.new(key, segment_size)
    cipher = _Segments(key, header)
    yield header.to_bytes()
    buf = bytearray()
    index = 0
    for chunk in chunks:
        buf += chunk
        # Keep at least one byte back: a segment is "last" only when the input has ended.
        while len(buf) > segment_size:
            yield cipher.seal(index, False, memoryview(buf)[:segment_size])
            del buf[:segment_size]
            index += 1
    yield cipher.seal(index, True, buf)


def _frames(chunks: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Cut a byte stream into frames of ``size`` bytes; the flag tells the frame that ends the stream."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) > size:
            yield bytes(memoryview(buf)[:size]), False
            del buf[:size]
    yield bytes(buf), True


class Decryptor:
    """Opens one blob's segments given its header; checks the header names ``key``."""

    def __init__(self, key: DataKey, header: bytes) -> None:
        self.header = StreamHeader.parse(header)
        if self.header.data_key_id != key.id_bytes:
            raise DecryptionFailed("content was encrypted under another data key")
        self._cipher = _Segments(key, self.header)

    @property
    def segment_size(self) -> int:
        return self.header.segment_size

    def stream(self, chunks: Iterable[bytes], plaintext_size: int | None = None) -> Iterator[bytes]:
        """Decrypt all segments (the bytes after the header). With ``plaintext_size`` the last
        segment is known by its index; without it, by the end of the stream."""
        frame = self.segment_size + TAG_SIZE
        total = None if plaintext_size is None else segment_count(plaintext_size, self.segment_size)
        for index, (data, at_end) in enumerate(_frames(chunks, frame)):
            last = at_end if total is None else index == total - 1
            if at_end and not last:
                raise DecryptionFailed("encrypted content is truncated")
            if len(data) < TAG_SIZE:
                raise DecryptionFailed("encrypted content is truncated")
            if last and not at_end:
                raise DecryptionFailed("encrypted content has data after its last segment")
            yield self._cipher.open(index, last, data)

    def span(self, plaintext_size: int, start: int, end: int) -> tuple[int, int]:
        """Ciphertext offsets [from, to) holding plaintext bytes [start, end), 0 <= start < end <= size."""
        seg, frame = self.segment_size, self.segment_size + TAG_SIZE
        first, last = start // seg, (end - 1) // seg
        to = min(HEADER_SIZE + (last + 1) * frame, ciphertext_size(plaintext_size, seg))
        return HEADER_SIZE + first * frame, to

    def range(self, chunks: Iterable[bytes], plaintext_size: int, start: int, end: int) -> Iterator[bytes]:
        """Plaintext bytes [start, end) from the ciphertext bytes of :meth:`span`, each segment
        authenticated before any of its bytes is returned."""
        seg = self.segment_size
        first, final = start // seg, (end - 1) // seg
        total = segment_count(plaintext_size, seg)
        index = first
        for data, at_end in _frames(chunks, seg + TAG_SIZE):
            if index > final or len(data) < TAG_SIZE or (at_end and index != final):
                raise DecryptionFailed("encrypted content is truncated")
            plain = self._cipher.open(index, index == total - 1, data)
            lo = start - index * seg if index == first else 0
            hi = end - index * seg if index == final else len(plain)
            if hi > len(plain):
                raise DecryptionFailed("encrypted content is truncated")
            yield plain[lo:hi]
            index += 1


def decrypt(key: DataKey, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decrypt a whole encrypted stream (header included), detecting any alteration or truncation."""
    it = iter(chunks)
    head = bytearray()
    for chunk in it:
        head += chunk
        if len(head) >= HEADER_SIZE:
            break
    decryptor = Decryptor(key, bytes(head[:HEADER_SIZE]))
    rest = bytes(head[HEADER_SIZE:])

    def body() -> Iterator[bytes]:
        yield rest
        yield from it

    return decryptor.stream(body())
