"""Patients' sign-in accounts: username, password (argon2id) and a one-time code.

The second factor is either a TOTP secret (RFC 6238, an authenticator application; a code is
accepted once) or a channel through which a :class:`Notifier` sends a 6-digit code for each
sign-in. Failures (wrong password or wrong code) are counted per account: after
``CARNET_SIGNIN_MAX_FAILURES`` in a row the account is locked for ``CARNET_SIGNIN_LOCKOUT_SECONDS``,
whatever is presented, and a success resets the count. Unknown usernames cost the same
password-hash time as known ones.

A legal representative has an account of their own, bound to their own Patient; acting for a
minor is decided by the access policy, not here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import logging
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from carnet.config import Settings
from carnet.db.tables import patient_accounts
from carnet.errors import Conflict, Invalid, NotFound

log = logging.getLogger("carnet.auth")
notify_log = logging.getLogger("carnet.notify")

_US = 1_000_000
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 10
TOTP_STEP = 30


class Outcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"  # wrong password or code (or unknown username)
    LOCKED = "locked"


@dataclass(frozen=True)
class Account:
    username: str
    patient_id: str
    totp_secret: str | None
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
        try:
            with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
                conn.execute(
                    insert(patient_accounts).values(
                        username=name,
                        patient_id=patient_id,
                        password_hash=_HASHER.hash(password),
                        totp_secret=secret,
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
        if account is None or not account.totp_secret:
            return Check(Outcome.WRONG)
        if self._locked(account):
            return Check(Outcome.LOCKED, account)
        totp = pyotp.TOTP(account.totp_secret, interval=TOTP_STEP)
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
