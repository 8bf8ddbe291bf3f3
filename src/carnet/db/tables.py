"""The schema, in SQLAlchemy Core. Alembic migrations (db/migrations) create it.

``resources`` holds the current version of every resource (one row, looked up by type and id);
``resource_versions`` keeps every version for vread and history. The ``idx_*`` tables are the
search index of current versions, one table per search-parameter type, each indexed on
(type, parameter, value) so that a search costs an index range scan whatever the data size.
Per-patient rows carry ``patient_id`` (the compartment owner) so the schema can be distributed
by patient. Instants are integers: microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

ID = String(64)
TYPE = String(64)
PARAM = String(64)
VALUE = String(255)
# Normalised search strings compare byte-wise on PostgreSQL too, so prefix ranges are exact.
SEARCH_TEXT = String(255).with_variant(String(255, collation="C"), "postgresql")

resources = Table(
    "resources",
    metadata,
    Column("res_type", TYPE, primary_key=True),
    Column("res_id", ID, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("patient_id", ID, nullable=True),
    Column("content", LargeBinary, nullable=True),
    # Access attributes (carnet.policy), set by the write path: a document's type code, its
    # visibility bits (policy.visibility) and the professional who published it ("Practitioner/<id>").
    # A Binary carries those of the DocumentReference that points at it.
    Column("doc_type", String(64), nullable=True),
    Column("visibility", Integer, nullable=False, default=0, server_default="0"),
    Column("author", String(80), nullable=True),
)
Index("ix_resources_type_updated", resources.c.res_type, resources.c.last_updated)
Index("ix_resources_type_created", resources.c.res_type, resources.c.created_at, resources.c.res_id)
Index("ix_resources_patient", resources.c.patient_id)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("res_type", TYPE, nullable=False),
    Column("res_id", ID, nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("patient_id", ID, nullable=True),
    Column("content", LargeBinary, nullable=True),
)
Index("ux_versions_resource", resource_versions.c.res_type, resource_versions.c.res_id,
      resource_versions.c.version, unique=True)
Index("ix_versions_updated", resource_versions.c.last_updated)
Index("ix_versions_type_updated", resource_versions.c.res_type, resource_versions.c.last_updated)


def _index_table(name: str, *columns: Column, value_cols: tuple[str, ...], covering: bool = False,
                 checked: tuple[str, ...] = ()) -> Table:
    """``covering``: the value index ends with res_id, so that a candidate scan (and the filter of
    pair rows) reads the index alone. ``checked``: columns the per-resource index carries after
    the parameter, so that a check of a candidate reads its table row only when they match."""
    table = Table(
        name,
        metadata,
        Column("res_type", TYPE, nullable=False),
        Column("res_id", ID, nullable=False),
        Column("param", PARAM, nullable=False),
        *columns,
    )
    Index(f"ix_{name}_resource", table.c.res_type, table.c.res_id, table.c.param,
          *(table.c[c] for c in checked))
    Index(f"ix_{name}_value", table.c.res_type, table.c.param, *(table.c[c] for c in value_cols),
          *((table.c.res_id,) if covering else ()))
    return table


idx_string = _index_table(
    "idx_string",
    Column("value", SEARCH_TEXT, nullable=False),  # normalised: case-folded, accents removed
    Column("exact", String(1024), nullable=False),
    value_cols=("value",),
    covering=True,
)
idx_token = _index_table(
    "idx_token",
    Column("system", String(255), nullable=True),
    Column("code", VALUE, nullable=True),
    Column("text", SEARCH_TEXT, nullable=True),  # normalised display / CodeableConcept.text, for :text
    Column("type_system", String(255), nullable=True),  # Identifier.type, for :of-type
    Column("type_code", String(64), nullable=True),
    value_cols=("code", "system"),
    checked=("code",),
)
idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    value_cols=("low", "high"),
)
idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    value_cols=("value",),
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("system", String(255), nullable=True),
    Column("code", String(64), nullable=True),
    Column("unit", String(64), nullable=True),
    value_cols=("code", "value"),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", TYPE, nullable=True),
    Column("target_id", ID, nullable=True),
    Column("url", String(1024), nullable=True),  # absolute or canonical references
    Column("id_system", String(255), nullable=True),  # Reference.identifier, for :identifier
    Column("id_value", VALUE, nullable=True),
    value_cols=("target_id", "target_type"),
    covering=True,
)
Index("ix_idx_reference_target", idx_reference.c.target_type, idx_reference.c.target_id,
      idx_reference.c.param)
idx_uri = _index_table(
    "idx_uri",
    Column("value", String(1024), nullable=False),
    value_cols=("value",),
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "reference": idx_reference,
    "uri": idx_uri,
}

# The identity facts of a patient (C1): whether INSi confirmed the traits (I), whether a high-trust
# document was checked (C), the flags, and every transition. The Patient resource's reliability
# extension is computed from this row; clients cannot write it.
identity_states = Table(
    "identity_states",
    metadata,
    Column("patient_id", ID, primary_key=True),
    Column("state", LargeBinary, nullable=False),  # JSON: facts and the list of transitions
    Column("updated", BigInteger, nullable=False),
)

# Blocking keys for identity matching ($match): a few normalised combinations of the strict traits
# per patient (family name part, first given name, birth year or day), so that a candidate lookup is
# one index range whatever the number of patients, and tolerates a slip in one trait.
patient_match_keys = Table(
    "patient_match_keys",
    metadata,
    Column("key", String(255), nullable=False),
    Column("patient_id", ID, nullable=False),
)
Index("ix_patient_match_keys_key", patient_match_keys.c.key, patient_match_keys.c.patient_id)
Index("ix_patient_match_keys_patient", patient_match_keys.c.patient_id)

# Per-patient data keys (envelope encryption of document content, carnet.crypto): the data key
# wrapped by a master key that lives outside the database. Destroying a row makes that patient's
# content unreadable.
data_keys = Table(
    "data_keys",
    metadata,
    Column("patient_id", ID, primary_key=True),
    Column("master_key_id", String(16), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_data_keys_master", data_keys.c.master_key_id)

# Document content (MHD): which stored blob a Binary resource stands for. The Binary resource
# keeps only its content type and security context; the bytes live in the blob store, encrypted
# under the patient's data key, and are checked against sha256/size on every read.
document_contents = Table(
    "document_contents",
    metadata,
    Column("binary_id", ID, primary_key=True),
    Column("patient_id", ID, nullable=False),
    Column("blob_key", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("sha1", String(40), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_document_contents_blob", document_contents.c.blob_key)
Index("ix_document_contents_patient", document_contents.c.patient_id)

# Producers' unique ids (DocumentEntry.uniqueId = DocumentReference.masterIdentifier, and
# SubmissionSet.uniqueId): unique across the platform. The primary key makes two concurrent
# submissions of one uniqueId collide in the database, not only in a prior check.
document_unique_ids = Table(
    "document_unique_ids",
    metadata,
    Column("unique_id", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),  # "document" or "submission"
    Column("res_id", ID, nullable=False),  # DocumentReference or List id
    Column("patient_id", ID, nullable=False),
    Column("sha256", String(64), nullable=True),  # of the document's content
)


# Who may read whose record (carnet.policy): derived rows, recomputed in the transaction of every
# change to what they derive from (the patient's Patient, CareTeam, Consent and RelatedPerson
# resources, and the identity's status). ``actor`` is "Practitioner/<id>" or "Patient/<id>" (a legal
# representative); ``level`` is policy.Level. A blocked professional has no row. Read predicates
# select from it by actor, so one index range answers "which records may this caller read".
access_rights = Table(
    "access_rights",
    metadata,
    Column("actor", String(80), primary_key=True),
    Column("patient_id", ID, primary_key=True),
    Column("level", Integer, nullable=False),
    # the UTC day (days since 1970-01-01) from which the row may no longer hold, because a period of
    # its sources starts or ends or the patient comes of age: from then on the row is ignored until
    # the record's rights are derived again (carnet.policy.rights.RightsWorker); null: no such day
    Column("until_day", Integer, nullable=True),
)
Index("ix_access_rights_patient", access_rights.c.patient_id)

# The access matrix (carnet.policy.matrix) as rows: which document types each profession reads, for
# the professions that do not read everything. Rewritten from the matrix file when it changes; the
# read predicates probe it by primary key.
habilitation_types = Table(
    "habilitation_types",
    metadata,
    Column("profession", String(16), primary_key=True),
    Column("doc_type", String(64), primary_key=True),
)

# Per record: what the policy needs to know without reading the Patient (open, qualified identity,
# emergency access opposed). Maintained with access_rights.
record_access = Table(
    "record_access",
    metadata,
    Column("patient_id", ID, primary_key=True),
    Column("open", Boolean, nullable=False),
    Column("qualified", Boolean, nullable=False),
    Column("emergency_opposed", Boolean, nullable=False),
    Column("minor", Boolean, nullable=False),
    Column("recheck_day", Integer, nullable=True),  # when the rights must be derived again (until_day)
)
Index("ix_record_access_recheck", record_access.c.recheck_day)


# The OAuth 2.0 / OpenID Connect authorisation server (carnet.auth). Instants in microseconds like
# everything else; secrets (client secrets, codes, refresh tokens) are stored only as hashes.

# Clients registered by the operator (``carnet client add``). ``client_type`` is confidential (a
# secret), public (PKCE only) or backend (SMART Backend Services: private_key_jwt with ``jwks``).
oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("client_type", String(16), nullable=False),
    Column("secret_hash", String(255), nullable=True),  # argon2id of the client secret
    Column("redirect_uris", Text, nullable=False),  # JSON list
    Column("scope", Text, nullable=False),  # the scopes the client may be granted, space-separated
    Column("jwks", Text, nullable=True),  # JSON Web Key Set of a backend client's public keys
    Column("created_at", BigInteger, nullable=False),
)

# Authorisation codes: one use, a minute or so; kept a day after expiry to recognise a replay.
# ``claims`` is the JSON of who signed in and what was granted (the claims the tokens will carry).
oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),  # SHA-256 of the code
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("nonce", String(255), nullable=True),
    Column("claims", Text, nullable=False),
    Column("auth_time", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),  # a second use revokes what the first one got
)
Index("ix_oauth_codes_expires", oauth_codes.c.expires_at)

# Refresh tokens, rotated on every use: the used one keeps its row (``rotated_at``) so that a second
# use of it, a sign of theft, revokes the whole family (every token descended from one sign-in).
oauth_refresh_tokens = Table(
    "oauth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 of the token
    Column("family_id", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("claims", Text, nullable=False),
    Column("auth_time", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("rotated_at", BigInteger, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
)
Index("ix_oauth_refresh_tokens_family", oauth_refresh_tokens.c.family_id)
Index("ix_oauth_refresh_tokens_client", oauth_refresh_tokens.c.client_id)

# Access tokens revoked before they expire (RFC 7009), by jti: verifying a token costs one primary
# key lookup here. Rows can go once ``expires_at`` is past.
oauth_revoked_tokens = Table(
    "oauth_revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=False),
)

# Client assertion ids already seen (private_key_jwt): an assertion is accepted once.
oauth_assertion_jtis = Table(
    "oauth_assertion_jtis",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# A browser's sign-in in progress (the pending authorisation request, the step reached, a one-time
# code's hash): the cookie carries only the id, so any app node can carry on the sign-in.
signin_sessions = Table(
    "signin_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),  # SHA-256 of the cookie's value
    Column("state", Text, nullable=False),  # JSON
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_signin_sessions_expires", signin_sessions.c.expires_at)

# Patients' sign-in accounts: username, password (argon2id) and a second factor (a TOTP secret, or
# a channel a one-time code is sent to). A legal representative has their own account and Patient.
patient_accounts = Table(
    "patient_accounts",
    metadata,
    Column("username", String(128), primary_key=True),  # lower-cased
    Column("patient_id", ID, nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("totp_secret", String(160), nullable=True),  # sealed (carnet.auth.accounts), never in clear
    Column("totp_last_step", BigInteger, nullable=True),  # the last TOTP step accepted (no replay)
    Column("channel", String(255), nullable=True),  # where one-time codes are sent (Notifier)
    Column("failed_count", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_patient_accounts_patient", patient_accounts.c.patient_id)


# Traceability (carnet.audit, carnet.ledger). Every access and change writes one row of
# ``audit_events`` per patient concerned (IHE BALP: a search across records is split per patient),
# in the transaction of what it records, and its ``seq`` into ``audit_pending``, the sequencer's
# queue. ``content`` is the AuditEvent's canonical JSON: the exact bytes of its Merkle leaf. Rows
# are never updated: the sequencer records each one's place in the log in ``ledger_nodes``
# (height 0, with the row's seq) and takes it off the queue.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("recorded", BigInteger, nullable=False),
    Column("patient_id", ID, nullable=True),  # the record concerned (entity of role patient)
    Column("agent", String(128), nullable=False),  # "Practitioner/<id>", "Patient/<id>", "system:<name>"
    Column("action", String(1), nullable=False),  # C R U D E
    Column("subtype", String(32), nullable=False),  # the restful interaction or operation
    Column("outcome", Integer, nullable=False),  # 0 4 8 12
    Column("content", LargeBinary, nullable=False),
)
Index("ix_audit_patient_recorded", audit_events.c.patient_id, audit_events.c.recorded)
Index("ix_audit_agent_recorded", audit_events.c.agent, audit_events.c.recorded)
Index("ix_audit_recorded", audit_events.c.recorded)
# The sequencer's queue: the rows still without a place in the log, in insertion order.
audit_pending = Table(
    "audit_pending",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
)

# The audit spool's files (carnet.audit.spool, SQLite): how many bytes of each the sequencer has
# moved into audit_events, recorded in the same transaction as the rows it moved.
audit_spool_files = Table(
    "audit_spool_files",
    metadata,
    Column("file", String(200), primary_key=True),
    Column("consumed", BigInteger, nullable=False),
)

# The Merkle tree (RFC 9162) of the log, as the hashes of its complete subtrees: the node at
# (height, idx) covers leaves [idx * 2^height, (idx + 1) * 2^height). Written once by the
# sequencer; proofs read O(log n) of them. Height 0 holds the leaves: the leaf index, the hash and
# the ``seq`` of the audit row, kept apart from the row so that an edited row shows against the
# hash recorded when it was sequenced.
ledger_nodes = Table(
    "ledger_nodes",
    metadata,
    Column("height", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
    Column("seq", BigInteger, nullable=True),  # height 0: the audit_events row of this leaf
)
# an inclusion proof asked by leaf hash finds its index
Index("ix_ledger_leaf_hash", ledger_nodes.c.hash, sqlite_where=ledger_nodes.c.height == 0,
      postgresql_where=ledger_nodes.c.height == 0)

# Signed checkpoints (C2SP tlog-checkpoint in a signed note), one per published tree size.
ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("note", Text, nullable=False),
)
Index("ix_ledger_checkpoints_created", ledger_checkpoints.c.created_at)

# Sealed daily journals (NF Z42-013): one per UTC day, chained by the hash of the previous one; the
# signed journal object itself is in the blob store under ``blob_key``.
audit_journals = Table(
    "audit_journals",
    metadata,
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    Column("sealed_at", BigInteger, nullable=False),
    Column("blob_key", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),  # of the signed journal object
    Column("previous_sha256", String(64), nullable=True),
    Column("first_index", BigInteger, nullable=False),
    Column("end_index", BigInteger, nullable=False),  # exclusive
)
