"""The streaming AEAD format: round trips, ranges, and every way of altering a stream is detected."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carnet.crypto import DataKey, DecryptionFailed
from carnet.crypto.stream import (
    HEADER_SIZE,
    MAGIC,
    TAG_SIZE,
    Decryptor,
    StreamHeader,
    ciphertext_size,
    decrypt,
    encrypt,
    segment_count,
)

KEY = DataKey.generate()
SEG = 64


def seal(data: bytes, key: DataKey = KEY, segment_size: int = SEG, chunk: int = 10) -> bytes:
    return b"".join(encrypt(key, (data[i:i + chunk] for i in range(0, len(data), chunk)),
                            segment_size=segment_size))


def frames(sealed: bytes, segment_size: int = SEG) -> tuple[bytes, list[bytes]]:
    frame = segment_size + TAG_SIZE
    body = sealed[HEADER_SIZE:]
    return sealed[:HEADER_SIZE], [body[i:i + frame] for i in range(0, len(body), frame)]


def opened(sealed: bytes, key: DataKey = KEY, chunk: int = 7) -> bytes:
    return b"".join(decrypt(key, (sealed[i:i + chunk] for i in range(0, len(sealed), chunk))))


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 5 * SEG + 3])
def test_round_trip_and_size(size: int) -> None:
    data = os.urandom(size)
    sealed = seal(data)
    assert len(sealed) == ciphertext_size(size, SEG) == HEADER_SIZE + size + TAG_SIZE * segment_count(size, SEG)
    assert opened(sealed) == data
    if size >= 16:  # a shorter plaintext may occur in random ciphertext by chance
        assert data not in sealed


def test_header_layout() -> None:
    sealed = seal(b"abc", segment_size=4096)
    magic, version, seg, key_id = struct.unpack(">4sBI8s", sealed[:17])
    assert (magic, version, seg, key_id) == (MAGIC, 1, 4096, KEY.id_bytes)
    assert len(sealed) == 40 + 3 + 16


def test_each_blob_gets_its_own_salt_and_nonces() -> None:
    a, b = seal(b"same content"), seal(b"same content")
    assert a[:HEADER_SIZE] != b[:HEADER_SIZE] and a[HEADER_SIZE:] != b[HEADER_SIZE:]


def test_wrong_key_fails() -> None:
    sealed = seal(os.urandom(100))
    with pytest.raises(DecryptionFailed, match="another data key"):
        opened(sealed, DataKey.generate())


def test_wrong_key_with_a_forged_key_id_fails_authentication() -> None:
    other = DataKey.generate()
    sealed = bytearray(seal(os.urandom(100)))
    sealed[9:17] = other.id_bytes
    with pytest.raises(DecryptionFailed, match="does not authenticate"):
        opened(bytes(sealed), other)


@pytest.mark.parametrize("where", [HEADER_SIZE + 3, HEADER_SIZE + SEG + TAG_SIZE + 1, -1])
def test_a_flipped_bit_anywhere_is_detected(where: int) -> None:
    sealed = bytearray(seal(os.urandom(3 * SEG + 5)))
    sealed[where] ^= 0x04
    with pytest.raises(DecryptionFailed):
        opened(bytes(sealed))


@pytest.mark.parametrize("offset", [5, 20, 30])  # segment size, salt, nonce prefix
def test_an_altered_header_is_detected(offset: int) -> None:
    sealed = bytearray(seal(os.urandom(3 * SEG)))
    sealed[offset] ^= 0x01
    with pytest.raises(DecryptionFailed):
        opened(bytes(sealed))


def test_unknown_version_and_magic_are_refused() -> None:
    sealed = bytearray(seal(b"x"))
    sealed[4] = 2
    with pytest.raises(DecryptionFailed, match="version 2"):
        opened(bytes(sealed))
    with pytest.raises(DecryptionFailed, match="magic"):
        opened(b"NOPE" + bytes(sealed[4:]))
    with pytest.raises(DecryptionFailed, match="shorter than its header"):
        opened(bytes(sealed[:10]))


def test_reordered_segments_are_detected() -> None:
    header, segs = frames(seal(os.urandom(4 * SEG)))
    segs[1], segs[2] = segs[2], segs[1]
    with pytest.raises(DecryptionFailed, match="segment 1"):
        opened(header + b"".join(segs))


def test_a_repeated_segment_is_detected() -> None:
    header, segs = frames(seal(os.urandom(4 * SEG)))
    with pytest.raises(DecryptionFailed):
        opened(header + b"".join([segs[0], segs[0], *segs[2:]]))


def test_truncation_at_a_segment_boundary_is_detected() -> None:
    header, segs = frames(seal(os.urandom(4 * SEG)))
    for keep in range(len(segs)):
        with pytest.raises(DecryptionFailed):
            opened(header + b"".join(segs[:keep]))


def test_truncation_inside_a_segment_is_detected() -> None:
    sealed = seal(os.urandom(3 * SEG + 9))
    for cut in (1, TAG_SIZE, TAG_SIZE + 1, SEG):
        with pytest.raises(DecryptionFailed):
            opened(sealed[:-cut])


def test_an_appended_segment_is_detected() -> None:
    sealed = seal(os.urandom(2 * SEG))
    _, segs = frames(sealed)
    with pytest.raises(DecryptionFailed):
        opened(sealed + segs[0])


def test_the_last_segment_of_another_stream_cannot_be_swapped_in() -> None:
    data = os.urandom(3 * SEG)
    header_a, segs_a = frames(seal(data))
    _, segs_b = frames(seal(data))
    with pytest.raises(DecryptionFailed):
        opened(header_a + b"".join([*segs_a[:-1], segs_b[-1]]))


def test_known_size_catches_a_stream_ending_early_or_late() -> None:
    data = os.urandom(3 * SEG)
    sealed = seal(data)
    dec = Decryptor(KEY, sealed[:HEADER_SIZE])
    assert b"".join(dec.stream([sealed[HEADER_SIZE:]], plaintext_size=len(data))) == data
    with pytest.raises(DecryptionFailed, match="truncated"):
        list(dec.stream([sealed[HEADER_SIZE:-SEG - TAG_SIZE]], plaintext_size=len(data)))
    with pytest.raises(DecryptionFailed, match="after its last segment"):
        list(dec.stream([sealed[HEADER_SIZE:] + b"\0" * 20], plaintext_size=len(data)))


def _range(sealed: bytes, size: int, start: int, end: int) -> bytes:
    dec = Decryptor(KEY, sealed[:HEADER_SIZE])
    lo, hi = dec.span(size, start, end)

    def pieces() -> Iterator[bytes]:
        for i in range(lo, hi, 13):
            yield sealed[i:min(i + 13, hi)]

    return b"".join(dec.range(pieces(), size, start, end))


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 6 * SEG), data=st.data())
def test_any_range_decrypts_to_the_same_bytes(size: int, data: st.DataObject) -> None:
    plain = bytes(i % 251 for i in range(size))
    sealed = seal(plain)
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    assert _range(sealed, size, start, end) == plain[start:end]


def test_a_range_reads_only_the_segments_it_needs() -> None:
    dec = Decryptor(KEY, seal(b"x" * (10 * SEG))[:HEADER_SIZE])
    frame = SEG + TAG_SIZE
    assert dec.span(10 * SEG, 3 * SEG + 1, 3 * SEG + 2) == (HEADER_SIZE + 3 * frame, HEADER_SIZE + 4 * frame)
    assert dec.span(10 * SEG, 0, 10 * SEG) == (HEADER_SIZE, ciphertext_size(10 * SEG, SEG))


def test_a_tampered_segment_fails_a_range_that_covers_it_only() -> None:
    size = 5 * SEG
    plain = os.urandom(size)
    sealed = bytearray(seal(plain))
    sealed[HEADER_SIZE + 2 * (SEG + TAG_SIZE) + 1] ^= 1
    assert _range(bytes(sealed), size, 0, 2 * SEG) == plain[:2 * SEG]
    with pytest.raises(DecryptionFailed, match="segment 2"):
        _range(bytes(sealed), size, SEG, 3 * SEG)


def test_a_range_of_a_truncated_stream_fails() -> None:
    size = 5 * SEG
    sealed = seal(os.urandom(size))
    dec = Decryptor(KEY, sealed[:HEADER_SIZE])
    lo, hi = dec.span(size, 3 * SEG, size)
    with pytest.raises(DecryptionFailed):
        list(dec.range([sealed[lo:hi - SEG - TAG_SIZE]], size, 3 * SEG, size))


def test_segment_size_bounds() -> None:
    with pytest.raises(ValueError, match="segment size"):
        StreamHeader.new(KEY, 0)
    assert opened(seal(os.urandom(1000), segment_size=1)) is not None
