"""Patients' sign-in accounts: username, password (argon2id) and a one-time code.

The second factor is either a TOTP secret (RFC 6238, an authenticator application; a code is
accepted once) or a channel through which a :class:`Notifier` sends a 6-digit code for each
sign-in. Failures (wrong password or wrong code) are counted per account: after
``CARNET_SIGNIN_MAX_FAILURES`` in a row the account is locked for ``CARNET_SIGNIN_LOCKOUT_SECONDS``,
whatever is presented, and a success resets the count. Unknown usernames cost the same
password-hash time as known ones.

A TOTP secret is a shared secret, not a hash: whoever reads it makes valid codes. It is stored
sealed (AES-256-GCM under a key derived from the patient's data key, bound to the username), so
that a copy of the database, a backup or a log of its rows gives no second factor; a secret stored
in clear by an earlier version is sealed by ``carnet migrate``/``carnet serve`` or at its next use.

A legal representative has an account of their own, bound to their own Patient; acting for a
minor is decided by the access policy, not here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import importlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from carnet.config import Settings
from carnet.crypto.keyfiles import load_keyring
from carnet.crypto.keys import Keyring
from carnet.crypto.sqlstore import SqlDataKeyStore
from carnet.db.tables import patient_accounts
from carnet.errors import CarnetError, Conflict, Invalid, NotFound

log = logging.getLogger("carnet.auth")
notify_log = logging.getLogger("carnet.notify")

_US = 1_000_000
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 10
TOTP_STEP = 30
SEALED = "v1."  # the prefix of a sealed TOTP secret (anything else is a clear one from before)
_TOTP_PURPOSE = b"carnet totp secret v1"


class Outcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"  # wrong password or code (or unknown username)
    LOCKED = "locked"


@dataclass(frozen=True)
class Account:
    username: str
    patient_id: str
    totp_sealed: str | None  # the TOTP secret as stored (sealed): see :meth:`AccountStore.totp_secret`
    channel: str | None
    failed_count: int
    locked_until: int | None  # seconds


@dataclass(frozen=True)
class Check:
    outcome: Outcome
    account: Account | None = None
    remaining: int = 0  # failures left before a lock


class Notifier(Protocol):
    """Sends a one-time code to a patient through their channel (SMS, e-mail...)."""

    def send_code(self, channel: str, username: str, code: str) -> None: ...


class LogNotifier:
    """Development notifier: the code goes to the log (``carnet.notify``), nowhere else.

    In production mode a secret never reaches a log: the code is not written, only that a code
    could not be sent because no notifier is configured (``CARNET_NOTIFIER``)."""

    def __init__(self, production: bool = False) -> None:
        self.production = production

    def send_code(self, channel: str, username: str, code: str) -> None:
        if self.production:
            notify_log.error("a one-time sign-in code for %s (%s) was not sent: no notifier is configured "
                             "(CARNET_NOTIFIER), and in production the code is never written to the log",
                             username, channel)
            return
        notify_log.warning("one-time sign-in code for %s (%s): %s", username, channel, code)


def load_notifier(spec: str, production: bool = False) -> Notifier:
    if spec in ("", "log"):
        return LogNotifier(production)
    module, _, cls = spec.partition(":")
    if not module or not cls:
        raise ValueError(f"CARNET_NOTIFIER must be log or <module>:<Class>, not {spec!r}")
    notifier: Notifier = getattr(importlib.import_module(module), cls)()
    return notifier


def normalise(username: str) -> str:
    return username.strip().lower()


def _row_account(row: Any) -> Account:
    locked = getattr(row, "locked_until", None)
    return Account(
        row.username,
        row.patient_id,
        row.totp_secret,
        row.channel,
        row.failed_count,
        locked // _US if locked else None,
    )


class AccountStore:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._keyring: Keyring | None = None
        self._keys = SqlDataKeyStore(engine)

    # -- the sealed TOTP secret ----------------------------------------------------------------

    def _aead(self, patient_id: str, *, create: bool = False) -> AESGCM:
        """The cipher of this patient's TOTP secrets; ``create``: make the patient's data key if
        there is none yet (when sealing; opening never makes one: a destroyed key stays destroyed)."""
        if self._keyring is None:
            self._keyring = load_keyring(self.settings.keys_path)
        data_key = self._keyring.data_key(patient_id, self._keys, create=create)
        return AESGCM(data_key.derive(_TOTP_PURPOSE))

    def seal(self, patient_id: str, username: str, secret: str) -> str:
        nonce = os.urandom(12)
        aead = self._aead(patient_id, create=True)
        sealed = aead.encrypt(nonce, secret.encode("ascii"), username.encode("utf-8"))
        return SEALED + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def totp_secret(self, account: Account) -> str | None:
        """The account's TOTP secret in clear (to compute codes), or None: no TOTP, or a secret
        that no longer opens (the patient's data key destroyed, a row copied to another account)."""
        stored = account.totp_sealed
        if not stored:
            return None
        if not stored.startswith(SEALED):
            return stored  # clear, from before sealing: sealed by seal_clear_secrets
        try:
            raw = base64.urlsafe_b64decode(stored[len(SEALED):])
            aead = self._aead(account.patient_id)
            opened = aead.decrypt(raw[:12], raw[12:], account.username.encode("utf-8"))
        except (CarnetError, InvalidTag, ValueError):
            log.error("the TOTP secret of patient account %s does not open", account.username)
            return None
        return opened.decode("ascii")

    def _seal_row(self, username: str, patient_id: str, clear: str) -> None:
        sealed = self.seal(patient_id, username, clear)  # (a data key may be made: its own transaction)
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            conn.execute(update(patient_accounts)
                         .where(patient_accounts.c.username == username,
                                patient_accounts.c.totp_secret == clear)
                         .values(totp_secret=sealed))

    def seal_clear_secrets(self) -> int:
        """Seal the TOTP secrets stored in clear (by a version before sealing); answers how many."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(patient_accounts.c.username, patient_accounts.c.patient_id,
                                       patient_accounts.c.totp_secret)
                                .where(patient_accounts.c.totp_secret.is_not(None),
                                       ~patient_accounts.c.totp_secret.startswith(SEALED))).all()
        for row in rows:
            self._seal_row(row.username, row.patient_id, row.totp_secret)
        if rows:
            log.warning("sealed %d TOTP secrets stored in clear", len(rows))
        return len(rows)

    def get(self, username: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(patient_accounts).where(patient_accounts.c.username == normalise(username))
            ).first()
        return _row_account(row) if row is not None else None

    def add(
        self, username: str, password: str, patient_id: str, *, totp: bool = True, channel: str | None = None
    ) -> str | None:
        """Create an account; answers the TOTP secret (to enrol an authenticator) when ``totp``."""
        name = normalise(username)
        if not name or len(name) > 128 or any(c.isspace() for c in name):
            raise Invalid(
                "Identifiant invalide (sans espaces, 128 caractères au plus) / invalid username "
                "(no spaces, at most 128 characters)"
            )
        if len(password) < MIN_PASSWORD:
            raise Invalid(
                f"Mot de passe trop court ({MIN_PASSWORD} caractères au moins) / password too short "
                f"(at least {MIN_PASSWORD} characters)"
            )
        if not totp and not channel:
            raise Invalid(
                "Un second facteur est requis : TOTP ou un canal d'envoi de code / a second factor is "
                "required: TOTP or a channel for one-time codes"
            )
        secret = pyotp.random_base32() if totp else None
        sealed = None if secret is None else self.seal(patient_id, name, secret)  # (its own transaction)
        try:
            with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
                conn.execute(
                    insert(patient_accounts).values(
                        username=name,
                        patient_id=patient_id,
                        password_hash=_HASHER.hash(password),
                        totp_secret=sealed,
                        channel=channel,
                        failed_count=0,
                        created_at=int(time.time() * _US),
                    )
                )
        except IntegrityError:
            raise Conflict(f"Le compte {name} existe déjà / account {name} already exists") from None
        return secret

    def remove(self, username: str) -> None:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            gone = conn.execute(
                delete(patient_accounts).where(patient_accounts.c.username == normalise(username))
            ).rowcount
        if not gone:
            raise NotFound(f"Aucun compte {normalise(username)} / no account {normalise(username)}")

    # -- the two steps -------------------------------------------------------------------------

    def _locked(self, account: Account) -> bool:
        return account.locked_until is not None and account.locked_until > time.time()

    def _fail(self, account: Account) -> Check:
        limit = self.settings.signin_max_failures
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            row = conn.execute(
                update(patient_accounts)
                .where(patient_accounts.c.username == account.username)
                .values(failed_count=patient_accounts.c.failed_count + 1)
                .returning(patient_accounts.c.failed_count)
            ).first()
            count = row.failed_count if row is not None else limit
            if count >= limit:
                until = int((time.time() + self.settings.signin_lockout_seconds) * _US)
                conn.execute(
                    update(patient_accounts)
                    .where(patient_accounts.c.username == account.username)
                    .values(locked_until=until, failed_count=0)
                )
                log.warning("patient account %s locked after %d failed sign-ins", account.username, count)
                return Check(Outcome.LOCKED, account)
        return Check(Outcome.WRONG, account, remaining=limit - count)

    def check_password(self, username: str, password: str) -> Check:
        """The first step. WRONG for an unknown username too (after the same hashing work)."""
        account = self.get(username)
        if account is None:
            with contextlib.suppress(VerificationError, InvalidHashError):
                _HASHER.verify(_DUMMY_HASH, password)
            return Check(Outcome.WRONG)
        if self._locked(account):
            return Check(Outcome.LOCKED, account)
        with self.engine.connect() as conn:
            stored = conn.execute(
                select(patient_accounts.c.password_hash).where(
                    patient_accounts.c.username == account.username
                )
            ).scalar_one()
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return self._fail(account)
        if _HASHER.check_needs_rehash(stored):
            with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
                conn.execute(
                    update(patient_accounts)
                    .where(patient_accounts.c.username == account.username)
                    .values(password_hash=_HASHER.hash(password))
                )
        return Check(Outcome.OK, account)

    def check_totp(self, username: str, code: str) -> Check:
        """The second step with an authenticator: a current code (±1 step), never one already used."""
        account = self.get(username)
        if account is None or not account.totp_sealed:
            return Check(Outcome.WRONG)
        if self._locked(account):
            return Check(Outcome.LOCKED, account)
        secret = self.totp_secret(account)
        if secret is None:
            return self._fail(account)
        totp = pyotp.TOTP(secret, interval=TOTP_STEP)
        now = time.time()
        code = code.strip().replace(" ", "")
        step = None
        for offset in (-1, 0, 1):
            at = now + offset * TOTP_STEP
            if len(code) == 6 and hmac.compare_digest(totp.at(at).encode(), code.encode()):
                step = totp.timecode(int(at))
        if step is None:
            return self._fail(account)
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            used = conn.execute(
                update(patient_accounts)
                .where(
                    patient_accounts.c.username == account.username,
                    (patient_accounts.c.totp_last_step.is_(None))
                    | (patient_accounts.c.totp_last_step < step),
                )
                .values(totp_last_step=step)
            ).rowcount
        if used != 1:  # that code was already used: a replay
            return self._fail(account)
        if not account.totp_sealed.startswith(SEALED):  # this account's, left in clear: seal it now
            self._seal_row(account.username, account.patient_id, account.totp_sealed)
        self.succeeded(account)
        return Check(Outcome.OK, account)

    def check_sent_code(self, account: Account, expected_hash: str, code: str) -> Check:
        """The second step with a code sent through the notifier (its hash kept by the sign-in session)."""
        if self._locked(account):
            return Check(Outcome.LOCKED, account)
        if not hmac.compare_digest(code_hash(code.strip()), expected_hash):
            return self._fail(account)
        self.succeeded(account)
        return Check(Outcome.OK, account)

    def succeeded(self, account: Account) -> None:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            conn.execute(
                update(patient_accounts)
                .where(patient_accounts.c.username == account.username)
                .values(failed_count=0, locked_until=None)
            )


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def code_hash(code: str) -> str:
    return hashlib.sha256(("carnet-otp:" + code).encode()).hexdigest()
