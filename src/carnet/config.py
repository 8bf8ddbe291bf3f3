"""Settings: the only module that reads the environment.

Every setting has a type, a default that suits the embedded mode (SQLite + a local data
folder) and a line of help; ``carnet config`` prints them with where each value came from.
Environment variables carry the ``CARNET_`` prefix (``CARNET_DATABASE_URL``...).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CARNET_"


class Mode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    mode: Mode = Field(
        Mode.DEVELOPMENT,
        description="development (open API, test identities accepted) or production (strict)",
    )
    data_dir: Path = Field(
        Path("carnet-data"), description="folder holding the SQLite database, blobs and keys"
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite in the data folder, "
        "postgresql+psycopg://user@host/db for server mode",
    )
    host: str = Field("127.0.0.1", description="address `carnet serve` listens on")
    port: int = Field(8000, description="port `carnet serve` listens on")
    workers: int = Field(1, description="number of server processes for `carnet serve`")
    base_url: str | None = Field(
        None, description="public base URL used in links (default http://HOST:PORT)"
    )
    secret_key: SecretStr | None = Field(
        None,
        description="key that signs sign-in sessions and their CSRF tokens; generated into the data folder "
        "when unset",
    )
    max_body_bytes: int = Field(50 * 1024 * 1024, description="largest request body accepted, in bytes")
    max_bundle_entries: int = Field(10_000, description="largest number of entries in a posted Bundle")
    default_page_size: int = Field(20, description="search page size when _count is not given")
    max_page_size: int = Field(1000, description="largest _count honoured by search")
    max_include_depth: int = Field(3, description="deepest _include:iterate / _revinclude:iterate followed")
    max_include_resources: int = Field(
        5000, description="most resources a search may add through _include / _revinclude (more: 422)")
    max_search_terms: int = Field(
        100, description="most criteria in one search: values of its parameters (but _id, up to "
        "CARNET_MAX_PAGE_SIZE), _sort keys, _include and _revinclude (more: 413)")
    body_read_seconds: float = Field(
        30.0, description="time a client has to send a request body, plus a second per "
        "CARNET_BODY_MIN_RATE bytes received (slower: 408)")
    body_min_rate: int = Field(
        4096, description="bytes per second a client must keep sending for a large body to extend "
        "CARNET_BODY_READ_SECONDS")
    header_read_seconds: float = Field(
        10.0, description="time a connection has to send a request's headers; a silent or trickling "
        "connection is closed (with the HTTP protocol of carnet.api.limits)")
    statement_timeout_seconds: float = Field(
        30.0, description="longest a database statement of the server may run before it is stopped "
        "(503); 0: no limit")
    db_pool_size: int = Field(10, description="connections kept per process (PostgreSQL)")
    threads: int = Field(
        6, description="threads per process running database work; more only adds lock contention")
    insi: str = Field(
        "", description="INS teleservice client: local:<file>, <module>:<Class>[:<argument>]; "
        "default the local reference file <data>/insi/identities.json")
    blob_url: str = Field(
        "", description="where document content is stored: a folder (file:///path) or s3://bucket[/prefix]; "
        "default <data>/blobs")
    max_document_bytes: int = Field(
        50 * 1024 * 1024, description="largest document content accepted, in bytes (larger: 413)")
    keys_dir: Path | None = Field(
        None, description="folder of the master key files that wrap patients' data keys; default <data>/keys")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for an s3:// blob_url (default AWS's)")
    s3_region: str | None = Field(None, description="S3 region for an s3:// blob_url")
    s3_access_key_id: str | None = Field(None, description="S3 access key id (default boto3's usual chain)")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key")
    blob_orphan_grace_hours: float = Field(
        24.0, description="age after which `carnet blobs sweep` removes content no document references")
    habilitations_file: Path | None = Field(
        None, description="the access matrix (profession × document class, JSON); default the one shipped "
        "in carnet/policy/data/habilitations.json")
    log_level: str = Field("info", description="log level: debug, info, warning, error")
    # Traceability (carnet.audit, carnet.ledger, docs/ledger.md)
    audit: bool = Field(
        True, description="record every access and change as an AuditEvent in the transparency log "
        "(off only to measure what auditing costs; refused in production mode)")
    ledger_origin: str = Field(
        "", description="the log's name, first line of its checkpoints (it must never change); default "
        "<host[:port]>/ledger of CARNET_BASE_URL, else carnet.localhost/ledger")
    ledger_key_file: Path | None = Field(
        None, description="Ed25519 private key (PEM) that signs checkpoints and journals; default "
        "<keys>/ledger-ed25519.pem, created on first use")
    ledger_checkpoint_seconds: float = Field(
        2.0, description="a new signed checkpoint at most this often while the log grows, in seconds")
    ledger_sequencer: bool = Field(
        True, description="run the sequencer (numbering audit entries, signing checkpoints) in each server "
        "process; several processes share the work safely")
    ledger_process: bool = Field(
        True, description="carnet serve runs the sequencer and, on SQLite, the write-ahead log's "
        "checkpointer in a process of their own beside the server workers (which then run neither): "
        "the workers' threads never wait for them")
    audit_spool: bool = Field(
        True, description="SQLite: a read's audit rows are appended to a file of the server process "
        "(<data>/audit-spool) before its response leaves, and moved into the database by the sequencer; "
        "false: written to the database by each process, the response waiting for the commit")
    wal_checkpointer: bool = Field(
        True, description="SQLite: copy the write-ahead log back into the database from a thread of each "
        "server process (off in the workers of carnet serve when its ledger process does it)")
    wal_checkpoint_seconds: float = Field(
        5.0, gt=0, description="SQLite: how often the ledger process copies the write-ahead log back into "
        "the database (a server process's own thread does it every 0.5 s); the log starts over past 64 MB")
    rights_recheck_seconds: float = Field(
        60.0, ge=0, description="how often each server process derives again the rights of records whose "
        "day has come (a care-team, consent or representative period starts or ends, a minor comes of "
        "age); until then their rights are refused, not widened; 0: off")
    # OAuth 2.0 / OpenID Connect authorisation server (carnet.auth, docs/auth.md)
    access_token_ttl_seconds: int = Field(
        300, description="lifetime of access tokens (JWT, signed with the key in the keys folder)")
    refresh_token_ttl_seconds: int = Field(
        30 * 24 * 3600, description="lifetime of refresh tokens (offline_access); each use rotates it")
    authorization_code_ttl_seconds: int = Field(
        60, description="lifetime of an authorisation code (one use, PKCE S256 required)")
    id_token_ttl_seconds: int = Field(3600, description="lifetime of OpenID Connect ID tokens")
    client_assertion_max_seconds: int = Field(
        300, description="longest lifetime accepted for a client's signed assertion (private_key_jwt)")
    signin_session_ttl_seconds: int = Field(
        900, description="time a browser has to finish signing in at /oauth/authorize")
    portal_idle_seconds: int = Field(
        1800, description="the portal signs a browser out after this long without a page (sliding)")
    portal_max_seconds: int = Field(
        12 * 3600, description="the portal signs a browser out this long after sign-in, active or not")
    signin_max_failures: int = Field(
        5, description="wrong passwords or one-time codes in a row before a patient account is locked")
    signin_address_max_failures: int = Field(
        30, description="failed sign-ins from one network address in a window before it is refused")
    signin_address_window_seconds: int = Field(
        900, description="the window of CARNET_SIGNIN_ADDRESS_MAX_FAILURES, in seconds")
    signin_lockout_seconds: int = Field(
        900, description="how long a patient account stays locked after too many failures")
    signin_methods: str = Field(
        "", description="sign-in methods offered at /oauth/authorize, comma-separated (development, patient, "
        "psc); default: development (in development mode only), patient, and psc when configured")
    notifier: str = Field(
        "log", description="how one-time codes reach patients: log (development: written to the log) or "
        "<module>:<Class>")
    # Professionals' sign-in through Pro Santé Connect (or an OpenID provider speaking its claims).
    psc_issuer: str = Field(
        "", description="issuer URL of the professionals' OpenID provider (Pro Santé Connect); "
        "empty: that sign-in is off")
    psc_client_id: str = Field("", description="Carnet's client id at the professionals' OpenID provider")
    psc_client_secret: SecretStr | None = Field(
        None, description="Carnet's client secret at the professionals' OpenID provider")
    psc_redirect_uri: str | None = Field(
        None, description="redirect URI registered at the professionals' OpenID provider "
        "(default <base URL>/oauth/psc/callback)")
    psc_token_auth_method: Literal["client_secret_basic", "client_secret_post"] = Field(
        "client_secret_basic", description="how Carnet authenticates at the provider's token endpoint: "
        "client_secret_basic or client_secret_post")
    psc_timeout_seconds: float = Field(
        10.0, description="timeout of each request to the professionals' OpenID provider, in seconds")
    psc_metadata_ttl_seconds: float = Field(
        3600.0, description="how long the provider's discovery document and signing keys are cached, "
        "in seconds")

    @model_validator(mode="after")
    def _audit_in_production(self) -> Settings:
        if self.mode == Mode.PRODUCTION and not self.audit:
            raise ValueError("CARNET_AUDIT=false is refused in production mode: every access must be traced")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'carnet.db').as_posix()}"

    @property
    def public_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def insi_spec(self) -> str:
        return self.insi or f"local:{(self.data_dir / 'insi' / 'identities.json').as_posix()}"

    @property
    def keys_path(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def psc_enabled(self) -> bool:
        """Whether professionals may sign in through the Pro Santé Connect-style provider."""
        return bool(self.psc_issuer and self.psc_client_id)

    @property
    def psc_callback_url(self) -> str:
        return self.psc_redirect_uri or f"{self.public_base_url}/oauth/psc/callback"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    def signing_key(self) -> bytes:
        """The key of sign-in sessions and CSRF tokens: configured, else created once in the data folder."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "keys" / "dev-token.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32).hex().encode())
        return path.read_bytes().strip()


def describe(settings: Settings) -> list[dict[str, Any]]:
    """Every setting with its value (secrets masked), its source and its help line."""
    rows = []
    for name, field in Settings.model_fields.items():
        env = ENV_PREFIX + name.upper()
        value = getattr(settings, name)
        if name in settings.model_fields_set:
            source = f"env {env}" if env in os.environ else "argument"
        else:
            source = "default"
        if isinstance(value, SecretStr):
            shown = "********"
        elif value is None and name == "database_url":
            shown, source = settings.sqlalchemy_url, source + " (derived from data_dir)"
        elif value is None:
            shown = "(unset)"
        else:
            shown = str(value)
        rows.append({"name": name, "env": env, "value": shown, "source": source,
                     "help": field.description or ""})
    return rows
