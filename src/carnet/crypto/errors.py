"""Errors of the crypto layer. Messages never carry key material or content."""

from __future__ import annotations

from carnet.errors import CarnetError, Gone


class DecryptionFailed(CarnetError):
    """Authenticated decryption failed: wrong key, or the ciphertext was altered, reordered or cut."""

    code = "exception"


class KeyUnavailable(CarnetError):
    """A wrapped data key names a master key that this keyring does not hold."""

    code = "exception"


class KeyDestroyed(Gone):
    """The patient's data key was destroyed (crypto-shredding): their content is unreadable for good."""

    code = "deleted"
