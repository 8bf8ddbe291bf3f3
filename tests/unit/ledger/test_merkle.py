"""The Merkle tree against RFC 6962 vectors, the transparency-dev probes, and the RFC's own definitions.

The reference functions below are RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 transcribed literally over
a list of leaves (slow, obviously right); the module under test must agree with them byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carnet.ledger.merkle import (
    EMPTY_ROOT,
    Appender,
    MemoryNodes,
    MissingNodeError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_hash,
    root,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "merkle-rfc6962"
VECTORS = json.loads((FIXTURES / "rfc6962-vectors.json").read_text(encoding="utf-8"))
VECTOR_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaf_inputs_hex"]]
PROBES = sorted((FIXTURES / "probes").rglob("*.json"))

MAX = 2048
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(MAX)]
# The complete nodes of the 2048-leaf tree are those of every smaller tree too.
TREE = MemoryNodes.from_leaves(LEAVES)


# ---- RFC 9162 §2.1, literally -------------------------------------------------------------------

def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return d[0]
    k = _k(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def flipped(h: bytes, at: int = 0) -> bytes:
    return h[:at] + bytes([h[at] ^ 0x80]) + h[at + 1:]


class FakeNodes:
    """A reader of an astronomically large tree: any node 'exists' (its hash derived from its id)."""

    def __init__(self) -> None:
        self.wanted: list[list[tuple[int, int]]] = []

    def nodes(self, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        self.wanted.append(list(wanted))
        return {w: hashlib.sha256(repr(w).encode()).digest() for w in wanted}


# ---- hashing and the published vectors -----------------------------------------------------------

def test_hashes_are_the_rfc_ones() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert [h.hex() for h in VECTOR_LEAVES] == VECTORS["leaf_hashes_hex"]
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


def test_roots_of_every_prefix_match_the_vectors() -> None:
    mem = MemoryNodes.from_leaves(VECTOR_LEAVES)
    appender = Appender()
    roots = {0: appender.root()}
    for h in VECTOR_LEAVES:
        appender.append(h)
        roots[appender.size] = appender.root()
    assert VECTORS["roots_for_prefix_of_leaf_inputs"]
    for case in VECTORS["roots_for_prefix_of_leaf_inputs"]:
        size, want = case["tree_size"], case["root_hash"]
        assert root(mem, size).hex() == want
        assert roots[size].hex() == want
        assert ref_mth(VECTOR_LEAVES[:size]).hex() == want


@pytest.mark.parametrize("case", VECTORS["inclusion_proofs"], ids=lambda c: f"{c['leaf_index_0based']}-of-{c['tree_size']}")
def test_inclusion_proofs_match_the_vectors(case: dict) -> None:
    # The Go tables count leaves from 1 (C++ CT heritage); our indexes are 0-based.
    index, size = case["leaf_index_0based"], case["tree_size"]
    assert case["leaf_number_1based"] == index + 1
    mem = MemoryNodes.from_leaves(VECTOR_LEAVES)
    proof = inclusion_proof(mem, index, size)
    assert [p.hex() for p in proof] == case["audit_path"]
    assert VECTOR_LEAVES[index].hex() == case["leaf_hash"]
    assert verify_inclusion(bytes.fromhex(case["leaf_hash"]), index, size, proof, bytes.fromhex(case["root_hash"]))


@pytest.mark.parametrize("case", VECTORS["consistency_proofs"], ids=lambda c: f"{c['first_size']}-to-{c['second_size']}")
def test_consistency_proofs_match_the_vectors(case: dict) -> None:
    old, new = case["first_size"], case["second_size"]
    mem = MemoryNodes.from_leaves(VECTOR_LEAVES)
    proof = consistency_proof(mem, old, new)
    assert [p.hex() for p in proof] == case["proof"]
    assert root(mem, old).hex() == case["first_root"]
    assert root(mem, new).hex() == case["second_root"]
    assert verify_consistency(old, new, bytes.fromhex(case["first_root"]), bytes.fromhex(case["second_root"]), proof)


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


@pytest.mark.parametrize("path", PROBES, ids=lambda p: str(p.relative_to(FIXTURES / "probes")))
def test_probe_is_accepted_or_rejected_as_specified(path: Path) -> None:
    probe = json.loads(path.read_text(encoding="utf-8"))
    proof = [_b64(p) for p in probe["proof"] or []]
    if "leafIdx" in probe:
        ok = verify_inclusion(_b64(probe["leafHash"]), probe["leafIdx"], probe["treeSize"], proof, _b64(probe["root"]))
    else:
        ok = verify_consistency(probe["size1"], probe["size2"], _b64(probe["root1"]), _b64(probe["root2"]), proof)
    assert ok is (not probe["wantErr"]), probe["desc"]


def test_all_probe_files_are_there() -> None:
    assert len(PROBES) == 98
    assert {p.parent.parent.name for p in PROBES} >= {"inclusion", "consistency"}


# ---- nodes, ranges, one read per proof ----------------------------------------------------------

def test_subtree_nodes_are_the_maximal_aligned_subtrees() -> None:
    assert subtree_nodes(0, 0) == []
    assert subtree_nodes(0, 1) == [(0, 0)]
    assert subtree_nodes(0, 8) == [(3, 0)]
    assert subtree_nodes(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert subtree_nodes(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert subtree_nodes(4, 7) == [(1, 2), (0, 6)]
    assert subtree_nodes(8, 16) == [(3, 1)]
    with pytest.raises(ValueError, match="leaf range"):
        subtree_nodes(3, 2)
    with pytest.raises(ValueError, match="leaf range"):
        subtree_nodes(-1, 2)


@given(st.integers(0, MAX), st.integers(0, MAX))
def test_range_hash_is_the_mth_of_the_range(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    hi = min(hi, lo + 300)
    assert range_hash(TREE, lo, hi) == ref_mth(LEAVES[lo:hi])
    assert range_hash(TREE.store, lo, hi) == ref_mth(LEAVES[lo:hi])


def test_each_root_and_proof_reads_the_nodes_once() -> None:
    mem = MemoryNodes(TREE.store)
    root(mem, 1000)
    assert mem.calls == 1
    inclusion_proof(mem, 517, 1000)
    assert mem.calls == 2
    consistency_proof(mem, 333, 1000)
    assert mem.calls == 3
    Appender.from_nodes(1000, mem)
    assert mem.calls == 4
    assert root(mem, 0) == EMPTY_ROOT and consistency_proof(mem, 0, 10) == [] and consistency_proof(mem, 7, 7) == []
    assert mem.calls == 4


def test_proofs_of_a_huge_tree_read_o_log_n_nodes() -> None:
    fake = FakeNodes()
    size = 2**40 + 12_345
    proof = inclusion_proof(fake, 2**39 + 77, size)
    assert len(fake.wanted) == 1 and len(fake.wanted[0]) <= 2 * 41
    assert len(proof) == 41
    proof = consistency_proof(fake, 2**38 + 5, size)
    assert len(fake.wanted) == 2 and len(fake.wanted[1]) <= 3 * 41
    assert len(proof) <= 2 * 41
    assert len(root(fake, size)) == 32 and len(fake.wanted[2]) == bin(size).count("1")
    assert len(set(fake.wanted[0])) == len(fake.wanted[0])


def test_missing_nodes_are_an_error_not_a_wrong_answer() -> None:
    small = MemoryNodes.from_leaves(LEAVES[:10])
    with pytest.raises(MissingNodeError, match="missing"):
        root(small, 11)
    with pytest.raises(MissingNodeError):
        inclusion_proof(small, 3, 16)
    with pytest.raises(MissingNodeError):
        Appender.from_nodes(12, small)
    broken = MemoryNodes({**small.store, (1, 4): b"short"})
    with pytest.raises(MissingNodeError, match="malformed"):
        root(broken, 10)


def test_generators_refuse_impossible_requests() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(TREE, 5, 5)
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(TREE, 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        inclusion_proof(TREE, -1, 5)
    with pytest.raises(ValueError, match="larger"):
        consistency_proof(TREE, 6, 5)
    with pytest.raises(ValueError, match="non-negative"):
        root(TREE, -1)


# ---- properties ---------------------------------------------------------------------------------

@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, 2000))
    return size, draw(st.integers(0, size - 1))


@st.composite
def old_and_new(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(2, 2000))
    return draw(st.integers(1, new - 1)), new


@settings(deadline=None)
@given(size_and_index(), st.data())
def test_inclusion_proofs_verify_and_every_alteration_fails(case: tuple[int, int], data: st.DataObject) -> None:
    size, index = case
    proof = inclusion_proof(TREE, index, size)
    rt = root(TREE, size)
    leaf = LEAVES[index]
    assert rt == ref_mth(LEAVES[:size])
    assert proof == ref_path(index, LEAVES[:size])
    assert verify_inclusion(leaf, index, size, proof, rt)

    for i in range(len(proof)):
        for at in range(32):
            bad = [*proof]
            bad[i] = flipped(proof[i], at)
            assert not verify_inclusion(leaf, index, size, bad, rt)
    assert not verify_inclusion(flipped(leaf, data.draw(st.integers(0, 31))), index, size, proof, rt)
    assert not verify_inclusion(leaf, index, size, proof, flipped(rt, data.draw(st.integers(0, 31))))
    assert not verify_inclusion(leaf, index, size, [*proof, proof[-1] if proof else leaf], rt)
    if proof:
        assert not verify_inclusion(leaf, index, size, proof[:-1], rt)
        assert not verify_inclusion(leaf, index, size, proof[1:], rt)

    other = data.draw(st.integers(0, size - 1))
    for wrong in {index ^ 1, index + 1, index - 1, other} - {index}:
        assert not verify_inclusion(leaf, wrong, size, proof, rt)
    # Another size, with the root of that size: the proof binds the tree it was made for.
    for wrong in {size - 1, size + 1, data.draw(st.integers(index + 1, MAX))} - {size}:
        if wrong > index:
            assert not verify_inclusion(leaf, index, wrong, proof, root(TREE, wrong))


@settings(deadline=None)
@given(old_and_new(), st.data())
def test_consistency_proofs_verify_and_every_alteration_fails(case: tuple[int, int], data: st.DataObject) -> None:
    old, new = case
    proof = consistency_proof(TREE, old, new)
    r1, r2 = root(TREE, old), root(TREE, new)
    assert proof == ref_subproof(old, LEAVES[:new], True)
    assert verify_consistency(old, new, r1, r2, proof)

    for i in range(len(proof)):
        for at in range(32):
            bad = [*proof]
            bad[i] = flipped(proof[i], at)
            assert not verify_consistency(old, new, r1, r2, bad)
    assert not verify_consistency(old, new, flipped(r1, data.draw(st.integers(0, 31))), r2, proof)
    assert not verify_consistency(old, new, r1, flipped(r2, data.draw(st.integers(0, 31))), proof)
    assert not verify_consistency(old, new, r2, r1, proof)
    assert not verify_consistency(old, new, r1, r2, [*proof, proof[-1]])
    assert not verify_consistency(old, new, r1, r2, proof[:-1])
    assert not verify_consistency(old, new, r1, r2, proof[1:])
    assert not verify_consistency(old, new, r1, r2, [])

    for wrong in {old - 1, old + 1, data.draw(st.integers(1, new))} - {old}:
        if 0 < wrong <= new:
            assert not verify_consistency(wrong, new, root(TREE, wrong), r2, proof)
    for wrong in {new - 1, new + 1, data.draw(st.integers(old, MAX))} - {new}:
        if wrong >= old:
            assert not verify_consistency(old, wrong, r1, root(TREE, wrong), proof)


def test_consistency_edge_cases() -> None:
    r5 = root(TREE, 5)
    assert verify_consistency(5, 5, r5, r5, [])
    assert not verify_consistency(5, 5, r5, r5, [r5])
    assert not verify_consistency(5, 5, r5, root(TREE, 6), [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 0, r5, r5, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, r5, [])
    assert not verify_consistency(0, 5, r5, r5, [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, r5, [r5])
    assert not verify_consistency(0, 5, EMPTY_ROOT, b"short", [])
    assert not verify_consistency(6, 5, root(TREE, 6), r5, consistency_proof(TREE, 5, 6))


garbage = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3), st.binary(max_size=40),
    st.lists(st.binary(max_size=40), max_size=3), st.lists(st.text(max_size=2), max_size=2),
)


@given(garbage, garbage, garbage, garbage, garbage)
def test_verifiers_answer_false_on_garbage_and_never_raise(a: object, b: object, c: object, d: object, e: object) -> None:
    assert verify_inclusion(a, b, c, d, e) in (True, False)  # type: ignore[arg-type]
    assert verify_consistency(a, b, c, d, e) in (True, False)  # type: ignore[arg-type]
    leaf = LEAVES[0]
    assert not verify_inclusion(leaf, 0, 1, a, b"\x00" * 32)  # type: ignore[arg-type]
    assert not verify_inclusion(leaf, -1, 1, [], leaf)
    assert not verify_inclusion(leaf, True, 2, [LEAVES[1]], root(TREE, 2))
    assert not verify_inclusion(leaf, 0, 1, [], bytearray(leaf)[:31])
    assert verify_inclusion(bytearray(leaf), 0, 1, (), bytearray(leaf))
    assert not verify_inclusion(leaf, 0, 1, leaf, leaf)  # type: ignore[arg-type]


# ---- the appender -------------------------------------------------------------------------------

def test_appender_root_equals_root_for_every_size() -> None:
    appender = Appender()
    assert appender.size == 0 and appender.root() == EMPTY_ROOT
    for n, h in enumerate(LEAVES, 1):
        appender.append(h)
        assert appender.size == n
        assert appender.root() == root(TREE, n)
    for n in (1, 2, 3, 7, 100, 513):
        assert root(TREE, n) == ref_mth(LEAVES[:n])


def test_appender_reports_every_complete_node_exactly_once() -> None:
    appender = Appender()
    seen: dict[tuple[int, int], bytes] = {}
    for i, h in enumerate(LEAVES[:300]):
        reported = appender.append(h)
        assert reported[0] == (0, i, h)
        assert [height for height, _, _ in reported] == list(range(len(reported)))
        for height, index, value in reported:
            assert (height, index) not in seen
            assert (index + 1) << height == i + 1  # completed by this very leaf
            assert value == ref_mth(LEAVES[index << height:(index + 1) << height])
            seen[(height, index)] = value
    assert len(seen) == 2 * 300 - bin(300).count("1")


def test_extend_is_append_without_the_report() -> None:
    a, b = Appender(), Appender()
    for h in LEAVES[:777]:
        a.append(h)
    b.extend(LEAVES[:500])
    b.extend(iter(LEAVES[500:777]))
    assert (a.size, a.root()) == (b.size, b.root())


def test_appender_refuses_what_is_not_a_leaf_hash() -> None:
    appender = Appender()
    with pytest.raises(ValueError, match="32 bytes"):
        appender.append(b"x" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        appender.extend([LEAVES[0], "x" * 32])  # type: ignore[list-item]
    assert appender.size == 1 and appender.root() == LEAVES[0]


@given(st.integers(0, 1500), st.integers(0, 500))
def test_from_nodes_resumes_where_the_stored_tree_ends(size: int, more: int) -> None:
    mem = MemoryNodes(TREE.store)
    resumed = Appender.from_nodes(size, mem)
    assert mem.calls == (1 if size else 0)
    assert resumed.size == size and resumed.root() == root(TREE, size)
    fresh = Appender()
    fresh.extend(LEAVES[:size])
    for h in LEAVES[size:size + more]:
        assert resumed.append(h) == fresh.append(h)
    assert resumed.root() == root(TREE, size + more)
