"""The pages never show what the API hides: documents invisible to the patient, documents masked
from professionals, records of patients who blocked a professional; hidden answers like absent."""

from __future__ import annotations

import base64
import uuid

from playwright.sync_api import Page, expect

from carnet.demo_documents import minimal_pdf
from carnet.policy.attributes import VISIBILITY_SYSTEM
from tests.browser.conftest import Portal, api_as_system, sign_in_patient, sign_in_professional


def publish_pdf(portal: Portal, pid: str, title: str, *labels: str, author: str | None = None) -> str:
    """Publish a PDF in ``pid``'s record (as a system client, authored by the médecin traitant
    unless ``author`` is given); answers the DocumentReference's id."""
    if author is None:
        gp = api_as_system(portal, "GET", f"Patient/{pid}").get("generalPractitioner") or []
        author = gp[0]["reference"] if gp else api_as_system(portal, "GET", "Practitioner", query=[
            ("_count", "1")])["entry"][0]["fullUrl"].split("/fhir/")[-1]
    body = {
        "resourceType": "DocumentReference", "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "subject": {"reference": f"Patient/{pid}"}, "date": "2026-11-20T10:00:00+01:00",
        "author": [{"reference": author}], "description": title,
        **({"securityLabel": [{"coding": [{"system": VISIBILITY_SYSTEM, "code": code}]} for code in labels]}
           if labels else {}),
        "content": [{"attachment": {"contentType": "application/pdf", "title": title,
                                    "data": base64.b64encode(minimal_pdf([title])).decode()}}],
    }
    return str(api_as_system(portal, "POST", "DocumentReference", body)["id"])


def test_a_document_invisible_to_the_patient_is_absent_from_their_pages(page: Page, portal: Portal) -> None:
    pid = portal.records["patient"]
    hidden = publish_pdf(portal, pid, "Résultat en attente d'annonce", "INVISIBLE_PATIENT")
    sign_in_patient(page, portal, "patient")
    expect(page.get_by_text("Résultat en attente d'annonce")).to_have_count(0)
    page.get_by_role("navigation", name="Menu principal").get_by_role("link", name="Documents").click()
    expect(page.get_by_text("Résultat en attente d'annonce")).to_have_count(0)
    # by its address: the same page as for a document that does not exist
    hidden_page = page.goto(f"{portal.url}/portail/documents/{hidden}")
    assert hidden_page is not None and hidden_page.status == 404
    hidden_text = page.locator("main").inner_text()
    missing = page.goto(f"{portal.url}/portail/documents/{uuid.uuid4()}")
    assert missing is not None and missing.status == 404
    assert page.locator("main").inner_text() == hidden_text
    content = page.request.get(f"{portal.url}/portail/documents/{hidden}/contenu")
    assert content.status == 404 and b"PDF" not in content.body()


def test_a_masked_document_is_hidden_from_the_care_team_but_not_the_medecin_traitant(
        page: Page, portal: Portal) -> None:
    pid = portal.records["patient"]
    masked = publish_pdf(portal, pid, "Consultation de psychiatrie", "MASQUE_PS")
    sign_in_professional(page, portal, portal.professional("infirmier"))
    page.goto(f"{portal.url}/portail/patients/{pid}")
    expect(page.locator("table.documents")).to_be_visible()
    expect(page.get_by_text("Consultation de psychiatrie")).to_have_count(0)
    direct = page.goto(f"{portal.url}/portail/patients/{pid}/documents/{masked}")
    assert direct is not None and direct.status == 404
    page.context.clear_cookies()
    sign_in_professional(page, portal, portal.professional("médecin traitant"))
    page.goto(f"{portal.url}/portail/patients/{pid}")
    row = page.locator("table.documents tbody tr", has_text="Consultation de psychiatrie").first
    expect(row.locator(".badge.masked")).to_be_visible()


def test_a_blocked_professional_finds_nothing_and_sees_nothing(page: Page, portal: Portal) -> None:
    pid = portal.records["patient"]
    patient = api_as_system(portal, "GET", f"Patient/{pid}")
    family = patient["name"][0]["family"]
    sign_in_professional(page, portal, portal.professional("bloqué"))
    page.get_by_label("Nom", exact=True).fill(family)
    page.locator("form:has(#family) button").click()
    expect(page.get_by_text("Aucun dossier accessible ne correspond.")).to_be_visible()
    record = page.goto(f"{portal.url}/portail/patients/{pid}")
    assert record is not None and record.status == 404
    expect(page.locator("main")).not_to_contain_text(family)
    # emergency access is refused too, with the patient's decision as the reason
    page.get_by_label("Motif de l'accès en urgence (obligatoire)").fill("Patient inconscient aux urgences")
    page.get_by_role("button", name="Accéder en urgence").click()
    expect(page.get_by_role("alert")).to_contain_text("Le patient a bloqué ce professionnel")
    expect(page.locator("main")).not_to_contain_text(family)
