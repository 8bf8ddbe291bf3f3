"""Signed notes and checkpoints: round trips, every tampering refused, byte compatibility with Go's sumdb/note."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from carnet.ledger.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    format_checkpoint,
    parse_checkpoint,
    parse_note,
    sign_note,
)

# golang.org/x/mod, sumdb/note/note_test.go (github.com/golang/mod, commit 02c991387e35f9e4c0a9b7ce137717055f8d716d,
# BSD-3-Clause): TestSign, TestOpen. The signer key is Go's private format, PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_KEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"

# The example of an earlier revision of c2sp.org/signed-note (C2SP/C2SP commit d4c16da5e7687a016619074e78dad84b2c7238cc,
# as quoted by several independent implementations; the revision stored here no longer carries a key for its example).
SPEC_KEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

TEXT = "carnet.example/ledger\n42\n" + base64.b64encode(bytes(range(32))).decode() + "\n"


def go_signer() -> NoteSigner:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 1 and len(raw) == 33
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(raw[1:]))


def signer(name: str = "carnet.example/ledger") -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


# ---- known answers ------------------------------------------------------------------------------

def test_go_sumdb_note_vector_byte_for_byte() -> None:
    s = go_signer()
    assert s.key_hash.hex() == "c74f20a3"
    assert s.verifier_key() == PETER_KEY
    assert s.sign(GO_TEXT) == GO_TEXT + "\n" + PETER_SIG  # Ed25519 is deterministic: same bytes as Go
    assert NoteVerifier.from_key(PETER_KEY).verify(GO_TEXT + "\n" + PETER_SIG) == GO_TEXT


def test_go_note_with_two_signatures_verifies_with_each_key() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert NoteVerifier.from_key(PETER_KEY).verify(note) == GO_TEXT
    assert NoteVerifier.from_key(ENOCH_KEY).verify(note) == GO_TEXT
    assert NoteVerifier.from_key(ENOCH_KEY).verifier_key() == ENOCH_KEY


def test_c2sp_example_note() -> None:
    assert NoteVerifier.from_key(SPEC_KEY).verify(SPEC_NOTE) == "This is an example message.\n"


def test_go_malformed_messages_are_refused() -> None:
    peter = NoteVerifier.from_key(PETER_KEY)
    bad = [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(),
        GO_TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ]
    for msg in bad:
        with pytest.raises(NoteError, match="malformed"):
            peter.verify(msg)


def _splice(sig: str) -> str:
    # Go's peterSig[:60] + "ABCD" + peterSig[60:]: byte offsets (the em dash is three bytes).
    raw = sig.encode()
    return (raw[:60] + b"ABCD" + raw[60:]).decode()


def test_go_invalid_and_foreign_signatures() -> None:
    peter = NoteVerifier.from_key(PETER_KEY)
    with pytest.raises(NoteError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        peter.verify(GO_TEXT + "\n" + _splice(PETER_SIG))
    # A broken signature from a key we do not know is ignored.
    note = GO_TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + _splice(ENOCH_SIG)
    assert peter.verify(note) == GO_TEXT
    # Another name, or the same name with another key hash: not our key, so not signed by it.
    with pytest.raises(NoteError, match="not signed by key PeterNeumann\\+c74f20a3"):
        peter.verify(GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego"))
    with pytest.raises(NoteError, match="not signed by key"):
        peter.verify(GO_TEXT + "\n" + PETER_SIG.replace("x08g", "xxxx"))


def test_go_verifier_key_manglings_are_refused() -> None:
    # TestNewVerifier: every proper substring and every one-character increment is refused.
    for i in range(len(PETER_KEY) + 1):
        for j in range(i + 1, len(PETER_KEY) + 1):
            if (i, j) != (0, len(PETER_KEY)):
                with pytest.raises(ValueError, match="verifier key"):
                    NoteVerifier.from_key(PETER_KEY[i:j])
    for i, c in enumerate(PETER_KEY):
        with pytest.raises(ValueError, match="verifier key"):
            NoteVerifier.from_key(PETER_KEY[:i] + chr(ord(c) + 1) + PETER_KEY[i + 1:])
    # Wrong length key, with adjusted key hash (Go decodes its non-canonical base64; we refuse it first).
    with pytest.raises(ValueError, match="malformed verifier key"):
        NoteVerifier.from_key("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(ValueError, match="algorithm"):  # unknown algorithm, with adjusted key hash
        NoteVerifier.from_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


# ---- our own signer and verifier ----------------------------------------------------------------

def test_round_trip_with_a_verifier_key_parsed_from_the_signer() -> None:
    s = signer()
    vkey = s.verifier_key()
    assert re.fullmatch(r"carnet\.example/ledger\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}", vkey)
    v = NoteVerifier.from_key(vkey)
    assert v.verifier_key() == vkey and v.key_hash == s.key_hash and v.name == s.name
    note = s.sign(TEXT)
    assert note.startswith(TEXT + "\n— carnet.example/ledger ") and note.endswith("\n")
    assert v.verify(note) == TEXT
    assert v.verify(note.encode()) == TEXT
    text, sigs = parse_note(note)
    assert text == TEXT and len(sigs) == 1 and sigs[0].key_hash == s.key_hash and len(sigs[0].signature) == 64


def test_texts_with_blank_lines_are_split_at_the_last_one() -> None:
    s = signer()
    for text in ("\n", "a\n\nb\n", "a\n\n", "é — ☃\n"):
        assert NoteVerifier.from_key(s.verifier_key()).verify(s.sign(text)) == text


def test_a_tampered_text_is_refused() -> None:
    s = signer()
    v = NoteVerifier.from_key(s.verifier_key())
    note = s.sign(TEXT)
    with pytest.raises(NoteError, match="invalid signature"):
        v.verify(note.replace("\n42\n", "\n43\n"))
    with pytest.raises(NoteError, match="invalid signature"):
        v.verify("x" + note)


def test_a_tampered_signature_is_refused() -> None:
    s = signer()
    v = NoteVerifier.from_key(s.verifier_key())
    text, sigs_block = s.sign(TEXT).split("\n\n")
    raw = bytearray(base64.b64decode(sigs_block.split(" ")[2]))
    for at in (4, 30, 67):
        bad = bytearray(raw)
        bad[at] ^= 1
        line = f"— {s.name} {base64.b64encode(bytes(bad)).decode()}\n"
        with pytest.raises(NoteError, match="invalid signature"):
            v.verify(text + "\n\n" + line)
    short = f"— {s.name} {base64.b64encode(bytes(raw[:-1])).decode()}\n"
    with pytest.raises(NoteError, match="invalid signature"):
        v.verify(text + "\n\n" + short)


def test_same_name_other_key_is_not_our_signature() -> None:
    ours, impostor = signer("log"), signer("log")
    assert ours.key_hash != impostor.key_hash
    v = NoteVerifier.from_key(ours.verifier_key())
    with pytest.raises(NoteError, match="not signed by key log\\+"):
        v.verify(impostor.sign(TEXT))
    # Ignored, not fatal, when our own signature is there too.
    assert v.verify(sign_note(TEXT, [impostor, ours])) == TEXT


def test_missing_blank_line_is_malformed() -> None:
    s = signer()
    note = s.sign(TEXT)
    with pytest.raises(NoteError, match="blank line"):
        NoteVerifier.from_key(s.verifier_key()).verify(note.replace("\n\n", "\n"))


def test_a_note_signed_by_two_keys_verifies_with_each() -> None:
    log, witness, stranger = signer("carnet.example/ledger"), signer("witness.example"), signer("other")
    note = sign_note(TEXT, [log, witness])
    assert NoteVerifier.from_key(log.verifier_key()).verify(note) == TEXT
    assert NoteVerifier.from_key(witness.verifier_key()).verify(note) == TEXT
    with pytest.raises(NoteError, match="not signed"):
        NoteVerifier.from_key(stranger.verifier_key()).verify(note)


def test_signature_count_limit() -> None:
    s = signer()
    v = NoteVerifier.from_key(s.verifier_key())
    line = s.signature_line(TEXT)
    assert v.verify(TEXT + "\n" + line * 100) == TEXT
    with pytest.raises(NoteError, match="more than 100"):
        v.verify(TEXT + "\n" + line * 101)
    assert v.verify(sign_note(TEXT, [signer(f"k{i}") for i in range(15)] + [s])) == TEXT


def test_signing_refuses_bad_texts_and_names() -> None:
    s = signer()
    for text in ("no newline", "", "tab\there\n", "nul\x00\n", "cr\r\n"):
        with pytest.raises(NoteError):
            s.sign(text)
    for name in ("", "a+b", "a b", "a\tb", "a\u00a0b", "a\u2003b", "a\nb", "a\x01b"):
        with pytest.raises(ValueError, match="key name"):
            NoteSigner(name, Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="at least one"):
        sign_note(TEXT, [])


def test_malformed_signature_lines() -> None:
    s = signer()
    v = NoteVerifier.from_key(s.verifier_key())
    good = s.signature_line(TEXT)
    b64 = good.split(" ")[2].rstrip("\n")
    for line in (
        f"- {s.name} {b64}\n",  # hyphen, not em dash
        f"—{s.name} {b64}\n",
        f"— {s.name}\n",
        f"— {s.name} \n",
        f"— {s.name} {b64[:-1]}\n",  # not base64 any more
        f"— {s.name} {b64} extra\n",
        f"— {s.name} AAAA\n",  # too short to carry a key hash and a signature
        f"— {s.name}  {b64}\n",
        "\n",
    ):
        with pytest.raises(NoteError, match="malformed"):
            v.verify(TEXT + "\n" + good + line)


# ---- checkpoints --------------------------------------------------------------------------------

ROOT = bytes(range(32))


def test_format_checkpoint() -> None:
    b64 = base64.b64encode(ROOT).decode()
    assert format_checkpoint("carnet.example/ledger", 42, ROOT) == f"carnet.example/ledger\n42\n{b64}\n"
    assert format_checkpoint("o", 0, ROOT, ["ext one", "x"]) == f"o\n0\n{b64}\next one\nx\n"
    assert Checkpoint("o", 7, ROOT).text() == f"o\n7\n{b64}\n"


def test_parse_the_c2sp_checkpoint_example() -> None:
    cp = parse_checkpoint("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
    assert cp.origin == "example.com/behind-the-sofa" and cp.size == 20852163
    assert len(cp.root) == 32 and cp.extensions == ()


@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=10), max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = parse_checkpoint(format_checkpoint(origin, size, root, extensions))
    assert cp == Checkpoint(origin, size, root, tuple(extensions))


def test_a_signed_checkpoint_end_to_end() -> None:
    s = signer()
    note = s.sign(format_checkpoint(s.name, 1234, ROOT))
    cp = parse_checkpoint(NoteVerifier.from_key(s.verifier_key()).verify(note))
    assert (cp.origin, cp.size, cp.root) == (s.name, 1234, ROOT)


@pytest.mark.parametrize("size", ["05", "00", "+5", "-1", " 5", "5 ", "٥", "1e3", "0x10", "", "18446744073709551616",
                                  "1" * 5000])
def test_parse_checkpoint_refuses_non_canonical_sizes(size: str) -> None:
    with pytest.raises(NoteError, match="tree size"):
        parse_checkpoint(f"o\n{size}\n{base64.b64encode(ROOT).decode()}\n")


def test_parse_checkpoint_refuses_bad_roots_and_missing_lines() -> None:
    b64 = base64.b64encode(ROOT).decode()
    for root_line in (base64.b64encode(ROOT[:31]).decode(), base64.b64encode(ROOT + b"x").decode(),
                      b64.rstrip("="), b64[:-2] + "F=", "", "not base64!"):
        with pytest.raises(NoteError, match="root hash"):
            parse_checkpoint(f"o\n1\n{root_line}\n")
    for text in ("o\n1\n", "o\n", "", f"o\n1\n{b64}", f"\n1\n{b64}\n", f"o\n1\n{b64}\n\n", f"o\n1\n{b64}\next\n\n",
                 f"o\n1\n{b64}\nbad\tline\n"):
        with pytest.raises(NoteError, match="malformed checkpoint"):
            parse_checkpoint(text)
    assert parse_checkpoint(f"o\n18446744073709551615\n{b64}\n").size == 2**64 - 1


def test_format_checkpoint_refuses_what_it_could_not_parse_back() -> None:
    for args in (("", 1, ROOT), ("a\nb", 1, ROOT), ("o", -1, ROOT), ("o", True, ROOT), ("o", 2**64, ROOT),
                 ("o", 1, ROOT[:31]), ("o", 1, "x" * 32)):
        with pytest.raises(ValueError, match="checkpoint"):
            format_checkpoint(*args)  # type: ignore[arg-type]
    for extensions in ([""], ["a\nb"], "abc"):
        with pytest.raises(ValueError, match="extension"):
            format_checkpoint("o", 1, ROOT, extensions)
