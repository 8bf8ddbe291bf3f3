"""One place that assembles the FHIR engine with the domain services (write hooks, operations), so
that the server, the demo loader and the CLI write through exactly the same rules."""

from __future__ import annotations

from sqlalchemy import Engine

from carnet.audit.fhir import register_audit_api
from carnet.audit.sink import LedgerAudit
from carnet.audit.spool import spool_of
from carnet.config import Settings
from carnet.directory.hooks import check_directory_identifiers
from carnet.documents.wiring import register_documents
from carnet.fhir.router import FhirRouter
from carnet.fhir.validation import validate
from carnet.identity.insi import load_insi
from carnet.identity.matchops import register_match_operations
from carnet.identity.operations import register_identity_operations
from carnet.identity.services import IdentityService
from carnet.ledger.keys import load_signer
from carnet.policy.dicah import DicahPolicy
from carnet.policy.matrix import load_habilitations
from carnet.policy.operations import register_access_operations


def build_router(settings: Settings, engine: Engine) -> FhirRouter:
    policy = DicahPolicy(load_habilitations(settings.habilitations_file))
    policy.attach(engine)
    audit = LedgerAudit(engine, spool_of(settings)) if settings.audit else None
    router = FhirRouter(settings, engine, validator=validate, policy=policy, audit=audit)
    identity = IdentityService(settings, load_insi(settings.insi_spec))
    router.add_hook("Patient", identity.before_patient_write)
    register_identity_operations(router, identity)
    register_match_operations(router)
    for rtype in ("Practitioner", "PractitionerRole", "Organization"):
        router.add_hook(rtype, check_directory_identifiers)
    router.identity = identity  # type: ignore[attr-defined]
    router.documents = register_documents(router)  # type: ignore[attr-defined]
    register_access_operations(router)
    register_audit_api(router)
    router.ledger_key = load_signer(settings).verifier_key()  # type: ignore[attr-defined]
    return router
