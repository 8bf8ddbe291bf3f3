"""Plug the documents capability (IHE MHD Document Recipient and Responder) into the FHIR engine."""

from __future__ import annotations

from carnet.documents.lifecycle import Lifecycle
from carnet.documents.mhd import DocumentService
from carnet.documents.retrieve import Retrieval
from carnet.documents.storage import open_document_store
from carnet.fhir.router import FhirRouter

MHD_CAPABILITY = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD"


def register_documents(router: FhirRouter) -> DocumentService:
    store = open_document_store(router.settings, router.engine)
    service = DocumentService(router.settings, store)
    router.add_prework(service.prework)
    router.add_bundle_processor(service.process_bundle)
    router.add_interaction("POST", "DocumentReference", False,
                           lambda repo, req, rid: service.simplified_publish(router, repo, req, rid))
    lifecycle = Lifecycle(router)
    router.add_interaction("PATCH", "DocumentReference", True, lifecycle.patch)
    router.add_interaction("DELETE", "DocumentReference", True, lifecycle.delete)
    router.add_interaction("PUT", "DocumentReference", True, lifecycle.refuse_put)
    for method in ("PUT", "PATCH", "DELETE"):
        router.add_interaction(method, "Binary", True, lifecycle.binary_write)
    router.add_interaction("GET", "Binary", True, Retrieval(router, store).read)
    router.add_interaction("POST", "List", False, lifecycle.list_write)
    for method in ("PUT", "PATCH", "DELETE"):
        router.add_interaction(method, "List", True, lifecycle.list_write)
    router.instantiates += [f"{MHD_CAPABILITY}.DocumentRecipient", f"{MHD_CAPABILITY}.DocumentResponder"]
    router.guides.append("https://profiles.ihe.net/ITI/MHD/ImplementationGuide/ihe.iti.mhd")
    return service
