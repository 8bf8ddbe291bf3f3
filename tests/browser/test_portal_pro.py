"""The professional's journeys in a real browser: find a patient (INS or traits), read the record
as the rules allow, publish a document, emergency and regulation access with a written reason."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from carnet.demo_documents import minimal_pdf
from carnet.identity import fhir as idfhir
from tests.browser.conftest import Portal, api_as_system, shot, sign_in_patient, sign_in_professional

OUTSIDER = "DR Étienne Blanc"  # the demo's salaried pharmacist: in no care team, named by no consent


def ins_of(portal: Portal, pid: str) -> str:
    found = idfhir.read_patient_ins(api_as_system(portal, "GET", f"Patient/{pid}")).ins
    assert found is not None
    return found.matricule


def test_the_medecin_traitant_finds_a_patient_and_publishes_a_document(page: Page, portal: Portal) -> None:
    pid = portal.records["patient"]
    patient = api_as_system(portal, "GET", f"Patient/{pid}")
    sign_in_professional(page, portal, portal.professional("médecin traitant"))
    # by INS
    page.get_by_label("Matricule INS").fill(ins_of(portal, pid))
    page.locator("form:has(#ins) button").click()
    expect(page.locator("table.patients tbody tr")).to_have_count(1)
    # by traits (accents and case do not matter)
    page.get_by_label("Nom", exact=True).fill(patient["name"][0]["family"].lower())
    page.get_by_label("Date de naissance").fill(patient["birthDate"])
    page.locator("form:has(#family) button").click()
    expect(page.locator("table.patients tbody tr")).to_have_count(1)
    assert patient["name"][0]["family"].lower() not in page.url.lower()  # traits never travel in URLs
    shot(page, "pro-find")
    page.locator("table.patients a").first.click()
    expect(page.locator("table.documents tbody tr").first).to_be_visible()
    before = page.locator("table.documents tbody tr").count()
    page.get_by_role("link", name="Publier un document").click()
    page.get_by_label("Fichier PDF").set_input_files(files=[{
        "name": "cr.pdf", "mimeType": "application/pdf", "buffer": minimal_pdf(["Compte rendu de consultation"])}])
    page.get_by_label("Type de document").select_option(value="http://loinc.org|11488-4")
    title = f"Compte rendu de consultation {uuid.uuid4().hex[:6]}"
    page.get_by_label("Titre").fill(title)
    page.get_by_label("Date de l'acte").fill("2026-11-30")
    shot(page, "pro-publish")
    page.get_by_role("button", name="Publier un document").click()
    expect(page.get_by_role("status")).to_contain_text("Le document a été publié dans le dossier.")
    expect(page.locator("table.documents tbody tr")).to_have_count(before + 1)
    page.get_by_role("link", name=title).click()
    expect(page.locator("dl.facts")).to_contain_text("Girard".upper())
    shot(page, "pro-record")
    # the patient sees it, and sees that their médecin traitant opened their record
    page.context.clear_cookies()
    sign_in_patient(page, portal, "patient")
    expect(page.locator("table.documents")).to_contain_text(title)
    expect(page.locator("table.history").first).to_contain_text("Girard")


def test_a_publication_with_a_wrong_file_is_refused_and_stores_nothing(page: Page, portal: Portal) -> None:
    pid = portal.records["patient"]
    sign_in_professional(page, portal, portal.professional("médecin traitant"))
    page.goto(f"{portal.url}/portail/patients/{pid}")
    before = page.locator("table.documents tbody tr").count()
    page.get_by_role("link", name="Publier un document").click()
    page.get_by_label("Fichier PDF").set_input_files(files=[{"name": "x.pdf", "mimeType": "application/pdf",
                                                             "buffer": b"not a pdf at all"}])
    page.get_by_role("button", name="Publier un document").click()
    expect(page.get_by_role("alert")).to_have_text("Le fichier doit être un PDF.")
    page.goto(f"{portal.url}/portail/patients/{pid}")
    expect(page.locator("table.documents tbody tr")).to_have_count(before)


def test_emergency_access_by_ins_is_traced_and_shown_to_the_patient(page: Page, portal: Portal) -> None:
    pid = portal.records["patient"]
    sign_in_professional(page, portal, OUTSIDER)
    page.get_by_label("Matricule INS").fill(ins_of(portal, pid))
    page.locator("form:has(#ins) button").click()
    expect(page.get_by_text("Aucun dossier accessible ne correspond.")).to_be_visible()
    expect(page.get_by_role("note")).to_contain_text("Attention : l'accès en urgence")
    shot(page, "pro-emergency")
    page.get_by_label("Motif de l'accès en urgence (obligatoire)").fill("Détresse respiratoire, patient inconscient")
    page.get_by_role("button", name="Accéder en urgence").click()
    expect(page.get_by_role("alert")).to_contain_text("Accès en urgence en cours")
    expect(page.get_by_role("heading", level=1)).not_to_be_empty()
    page.get_by_role("button", name=re.compile("Urgence$")).click()  # ends the emergency access
    assert page.goto(f"{portal.url}/portail/patients/{pid}").status == 404  # back to the ordinary rights
    page.context.clear_cookies()
    sign_in_patient(page, portal, "patient")
    page.get_by_role("link", name="Historique des accès").click()
    emergency = page.locator("table.history tbody tr.emergency").first
    expect(emergency).to_contain_text("Urgence")
    expect(emergency).to_contain_text("Détresse respiratoire, patient inconscient")
    expect(emergency).to_contain_text("Blanc")
    shot(page, "patient-history-emergency")


def test_emergency_access_is_refused_when_the_patient_opposed_it(page: Page, portal: Portal) -> None:
    pid = portal.records["opposed"]
    sign_in_professional(page, portal, OUTSIDER)
    assert page.goto(f"{portal.url}/portail/patients/{pid}").status == 404
    page.get_by_role("button", name="Accéder en urgence").click()  # the browser asks for the reason first
    expect(page.get_by_label("Motif de l'accès en urgence (obligatoire)")).to_be_focused()
    # without a browser's help (a form posted by hand), the server asks for the reason itself
    csrf = page.locator("form:has(#reason) input[name=csrf]").get_attribute("value") or ""
    empty = page.request.post(f"{portal.url}/portail/patients/{pid}/urgence", form={"csrf": csrf, "reason": " "})
    assert empty.status == 400 and "Le motif est obligatoire." in empty.text()
    page.get_by_label("Motif de l'accès en urgence (obligatoire)").fill("Arrêt cardiaque")
    page.get_by_role("button", name="Accéder en urgence").click()
    expect(page.get_by_role("alert")).to_contain_text("s'est opposé à l'accès en urgence")


def test_a_refused_emergency_access_by_ins_tells_nothing_an_unknown_ins_would_not(page: Page, portal: Portal) -> None:
    """The reason of a refusal (here the patient's opposition) would tell that a record exists for
    that INS: asked by INS, a known but refused record and an unknown INS get the same answer."""
    sign_in_professional(page, portal, OUTSIDER)
    known = ins_of(portal, portal.records["opposed"])
    unknown = known[:13] + ("01" if known[13:] == "00" else "00")  # no record has it
    answers = []
    for ins in (known, unknown):
        page.goto(f"{portal.url}/portail")
        page.get_by_label("Matricule INS").fill(ins)
        page.locator("form:has(#ins) button").click()
        page.get_by_label("Motif de l'accès en urgence (obligatoire)").fill("Arrêt cardiaque")
        with page.expect_response(re.compile(r"/urgence$")) as response:
            page.get_by_role("button", name="Accéder en urgence").click()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("Accès en urgence refusé")
        answers.append((response.value.status, alert.inner_text(), page.locator("main").inner_text().replace(ins, "")))
    assert answers[0] == answers[1]
    assert "opposé" not in answers[0][1]


def test_a_centre_15_doctor_uses_regulation_access(page: Page, portal: Portal) -> None:
    pid = portal.records["child"]
    sign_in_professional(page, portal, portal.professional("médecin traitant"), regulation=True)
    page.goto(f"{portal.url}/portail/patients/{pid}")
    page.get_by_label("Régulation (Centre 15)").check()
    page.get_by_label("Motif de l'accès en urgence (obligatoire)").fill("Appel au 15 : enfant, convulsions")
    page.get_by_role("button", name="Accéder en urgence").click()
    expect(page.get_by_role("alert")).to_contain_text("Accès en urgence en cours")
    page.context.clear_cookies()
    sign_in_patient(page, portal, "parent")
    page.get_by_label("Changer de dossier").select_option(value=pid)
    page.get_by_role("button", name="Ouvrir").click()
    page.get_by_role("link", name="Historique des accès").click()
    expect(page.locator("table.history tbody tr.regulation").first).to_contain_text("convulsions")
