"""Tamper-evident audit ledger: an RFC 9162 Merkle tree and C2SP signed-note checkpoints."""
