"""The RFC 9162 (= RFC 6962) Merkle tree of the audit ledger: hashes, proofs from stored nodes, verifiers.

The ledger stores the hash of every *complete* subtree once, addressed by ``(height, index)``: the
node at height ``h``, index ``i`` covers leaves ``[i * 2**h, (i + 1) * 2**h)``. Complete nodes never
change once written, so the sequencer writes each one exactly once (:meth:`Appender.append` says
which) and any root or proof of any past tree size is a combination of O(log n) of them. The proof
functions first work out every node they need, then ask the :class:`NodeReader` once (one query
for a database-backed reader), then combine; they never read leaves.

The verifiers are the bit-manipulation algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2, not the
generator run backwards, so a bug in one is not mirrored by the other. They take anything and
answer ``False`` on malformed input rather than raising: a verifier fed by a remote party must
never be made to crash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, Self, TypeAlias

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"

NodeId: TypeAlias = tuple[int, int]
"""``(height, index)`` of a complete subtree."""


class NodeReader(Protocol):
    """Where proofs read stored complete-subtree hashes from (the database, or :class:`MemoryNodes`)."""

    def nodes(self, wanted: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        """The hashes of the ``wanted`` complete subtrees; absent ones may be left out."""
        ...


NodeSource: TypeAlias = NodeReader | Mapping[NodeId, bytes]


class MissingNodeError(LookupError):
    """A node a root or proof needs is not stored: the tree is smaller than asked, or the store is damaged."""


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single entry: SHA-256(0x00 || data). The prefix keeps leaves and nodes apart."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), the hash of an interior node."""
    return _sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2): where RFC 9162 §2.1.1 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _complete(lo: int, n: int) -> bool:
    """Whether the ``n`` leaves from ``lo`` are exactly one stored (complete, aligned) subtree."""
    return n & (n - 1) == 0 and lo & (n - 1) == 0


def subtree_nodes(lo: int, hi: int) -> list[NodeId]:
    """The complete subtrees MTH(D[lo:hi]) is built from, left to right, following RFC 9162 §2.1.1.

    For the ranges roots and proofs use (``[0, n)`` and every subtree of the RFC's recursion) these
    are the maximal aligned subtrees of the range, at most two per height: O(log n). Any other range
    is still answered correctly, but may go down to its leaves.
    """
    if not (isinstance(lo, int) and isinstance(hi, int)) or not 0 <= lo <= hi:
        raise ValueError(f"not a leaf range: [{lo}, {hi})")
    out: list[NodeId] = []
    stack = [(lo, hi)] if hi > lo else []
    while stack:
        a, b = stack.pop()
        n = b - a
        if _complete(a, n):
            height = n.bit_length() - 1
            out.append((height, a >> height))
        else:
            k = _split(n)
            stack.append((a + k, b))
            stack.append((a, a + k))
    return out


def _fetch(source: NodeSource, wanted: Iterable[NodeId]) -> dict[NodeId, bytes]:
    """Read every wanted node in one call, and check that each came back as a 32-byte hash."""
    ids = list(dict.fromkeys(wanted))
    if not ids:
        return {}
    got = source if isinstance(source, Mapping) else source.nodes(ids)
    out: dict[NodeId, bytes] = {}
    missing = []
    for node in ids:
        value = got.get(node)
        if value is None or len(value) != HASH_SIZE:
            missing.append(node)
        else:
            out[node] = bytes(value)
    if missing:
        shown = ", ".join(f"(height {h}, index {i})" for h, i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingNodeError(f"stored tree nodes missing or malformed: {shown}{more}")
    return out


def _mth(lo: int, hi: int, got: Mapping[NodeId, bytes]) -> bytes:
    """MTH(D[lo:hi]) from fetched nodes, by the same recursion as :func:`subtree_nodes`."""
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if _complete(lo, n):
        height = n.bit_length() - 1
        return got[(height, lo >> height)]
    k = _split(n)
    return node_hash(_mth(lo, lo + k, got), _mth(lo + k, hi, got))


def range_hash(source: NodeSource, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) from stored nodes (a reader, or a mapping already fetched); EMPTY_ROOT if empty."""
    return _mth(lo, hi, _fetch(source, subtree_nodes(lo, hi)))


def _ranges_hashes(source: NodeSource, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    got = _fetch(source, (node for lo, hi in ranges for node in subtree_nodes(lo, hi)))
    return [_mth(lo, hi, got) for lo, hi in ranges]


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


def root(source: NodeSource, size: int) -> bytes:
    """The root hash (MTH) of the tree of the first ``size`` leaves."""
    _check_count("size", size)
    return range_hash(source, 0, size)


def _path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf upwards."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def inclusion_proof(source: NodeSource, index: int, size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1)."""
    _check_count("index", index)
    _check_count("size", size)
    if index >= size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    return _ranges_hashes(source, _path_ranges(index, size))


def _consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PROOF(old, D[0:new]) = SUBPROOF(old, D[0:new], true)."""
    tail = []
    lo, hi, whole = 0, new, True
    m = old
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            tail.append((lo + k, hi))
            hi = lo + k
        else:
            tail.append((lo, lo + k))
            m -= k
            lo += k
            whole = False
    tail.reverse()
    return tail if whole else [(lo, hi), *tail]


def consistency_proof(source: NodeSource, old: int, new: int) -> list[bytes]:
    """The proof that the tree of ``old`` leaves is a prefix of the tree of ``new`` (RFC 9162 §2.1.4.1).

    The RFC defines it for 0 < old < new; for old == new and for old == 0 there is nothing to prove
    and the proof is empty (see :func:`verify_consistency`).
    """
    _check_count("old", old)
    _check_count("new", new)
    if old > new:
        raise ValueError(f"old size {old} is larger than new size {new}")
    if old == 0 or old == new:
        return []
    return _ranges_hashes(source, _consistency_ranges(old, new))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def _hashes(proof: object) -> list[bytes] | None:
    """The proof as a list of 32-byte hashes, or None if it is anything else."""
    if not isinstance(proof, Sequence) or isinstance(proof, str | bytes | bytearray):
        return None
    if not all(_is_hash(p) for p in proof):
        return None
    return [bytes(p) for p in proof]


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf ``leaf_hash`` at ``index`` in the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2, step by step. False, never an exception, on malformed input.
    """
    path = _hashes(proof)
    if path is None or not (_is_count(index) and _is_count(size)) or index >= size:
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root)):
        return False
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _sha256(_NODE + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree (``old``, ``old_root``) is a prefix of (``new``, ``new_root``).

    RFC 9162 §2.1.4.2 for 0 < old < new. The RFC defines no proof otherwise; here:

    * old == new: the proof must be empty and the two roots the same bytes (for size 0, EMPTY_ROOT);
    * old == 0 < new: the empty tree is a prefix of every tree, so the proof must be empty,
      ``old_root`` must be EMPTY_ROOT and ``new_root`` a 32-byte hash.

    False, never an exception, on malformed input.
    """
    path = _hashes(proof)
    if path is None or not (_is_count(old) and _is_count(new)) or old > new:
        return False
    if old == new:
        if path:
            return False
        if old == 0:
            return old_root == EMPTY_ROOT and new_root == EMPTY_ROOT
        # Same size, same claim: nothing to check but that the two roots are one.
        return isinstance(old_root, bytes | bytearray) and old_root == new_root
    if old == 0:
        return not path and old_root == EMPTY_ROOT and _is_hash(new_root)
    if not (_is_hash(old_root) and _is_hash(new_root)) or not path:
        return False
    if old & (old - 1) == 0:
        path.insert(0, bytes(old_root))
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE + c + fr).digest()
            sr = _sha256(_NODE + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(_NODE + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class Appender:
    """A tree grown one leaf at a time, keeping only the roots of its right edge (a compact range).

    The sequencer appends each new leaf and stores the complete nodes it gets back; a verifier
    recomputes a whole log's root from its leaves in O(log n) memory. Tuned for CPython: a leaf
    costs one SHA-256 per node it completes (one on average) and little else.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._stack: list[bytes] = []  # roots of the right-edge subtrees, tallest first
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; returns ``(height, index, hash)`` of every complete node it completes, leaf first."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        index = self._size
        stack = self._stack
        out = [(0, index, leaf_hash)]
        h = leaf_hash
        height = 0
        s = index
        while s & 1:
            h = _sha256(_NODE + stack.pop() + h).digest()
            height += 1
            s >>= 1
            out.append((height, s, h))
        stack.append(h)
        self._size = index + 1
        return out

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add many leaves without reporting nodes: the fast path of a verifier recomputing a root."""
        stack = self._stack
        push, pop = stack.append, stack.pop
        size = self._size
        node = _NODE
        sha = _sha256
        try:
            for h in leaf_hashes:
                if type(h) is not bytes or len(h) != HASH_SIZE:
                    raise ValueError("a leaf hash is 32 bytes")
                s = size
                while s & 1:
                    h = sha(node + pop() + h).digest()
                    s >>= 1
                push(h)
                size += 1
        finally:
            self._size = size

    def edge(self) -> list[bytes]:
        """The roots of the complete subtrees the leaves so far make, tallest first (a compact range)."""
        return list(self._stack)

    def root(self) -> bytes:
        """The root hash of the tree of the leaves appended so far."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        h = stack[-1]
        for left in reversed(stack[:-1]):
            h = _sha256(_NODE + left + h).digest()
        return h

    @classmethod
    def from_nodes(cls, size: int, source: NodeSource) -> Self:
        """Resume at ``size`` leaves from stored nodes; reads only the O(log n) right-edge roots, once."""
        _check_count("size", size)
        wanted = subtree_nodes(0, size)
        got = _fetch(source, wanted)
        appender = cls()
        appender._stack = [got[node] for node in wanted]
        appender._size = size
        return appender


class MemoryNodes:
    """A :class:`NodeReader` over a dict, for tests and for verifying a log held in memory.

    ``calls`` counts :meth:`nodes` calls, so tests can hold proofs to one read each.
    """

    def __init__(self, nodes: Mapping[NodeId, bytes] | None = None) -> None:
        self.store: dict[NodeId, bytes] = dict(nodes or {})
        self.calls = 0

    @classmethod
    def from_leaves(cls, leaf_hashes: Iterable[bytes]) -> Self:
        """Every complete node of the tree of these leaf hashes."""
        appender = Appender()
        mem = cls()
        for h in leaf_hashes:
            mem.add(appender.append(h))
        return mem

    def add(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Store ``(height, index, hash)`` triples, as :meth:`Appender.append` returns them."""
        for height, index, value in nodes:
            self.store[(height, index)] = value

    def nodes(self, wanted: Sequence[NodeId]) -> dict[NodeId, bytes]:
        self.calls += 1
        store = self.store
        return {node: store[node] for node in wanted if node in store}
