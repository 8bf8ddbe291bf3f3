"""The patient's journeys in a real browser: sign in, documents (view, download, filter, upload,
mask), the access history with its proofs, access decisions, identity; legal representatives."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    Portal,
    api_as_system,
    documents_shown_to,
    new_context,
    shot,
    sign_in_patient,
)


def open_documents(page: Page) -> None:
    page.get_by_role("navigation", name="Menu principal").get_by_role("link", name="Documents").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Documents")


def test_patient_signs_in_and_sees_what_is_new(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Bonjour")
    docs = page.locator("table.documents tbody tr")
    shown = documents_shown_to(portal, portal.records["patient"], "INVISIBLE_PATIENT")
    expect(docs).to_have_count(min(5, len(shown)))  # the five latest
    expect(page.get_by_role("heading", name="Derniers accès à votre dossier")).to_be_visible()
    shot(page, "patient-home")


def test_patient_views_downloads_and_filters_documents(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    open_documents(page)
    rows = page.locator("table.documents tbody tr")
    expect(rows).to_have_count(len(documents_shown_to(portal, portal.records["patient"], "INVISIBLE_PATIENT")))
    first_type = rows.nth(0).locator("td").nth(2).inner_text()
    # filter on the first document's type: only documents of that type remain
    page.get_by_label("Type de document").select_option(label=first_type)
    page.get_by_role("button", name="Filtrer").click()
    for i in range(rows.count()):
        expect(rows.nth(i).locator("td").nth(2)).to_have_text(first_type)
    # by author: their family name, any case
    family = rows.nth(0).locator("td").nth(3).inner_text().split()[-1]
    page.get_by_label("Type de document").select_option(value="")
    page.get_by_label("Auteur").fill(family.lower())
    page.get_by_role("button", name="Filtrer").click()
    expect(rows.first).to_be_visible()
    for i in range(rows.count()):
        expect(rows.nth(i).locator("td").nth(3)).to_contain_text(family, ignore_case=True)
    page.get_by_label("Auteur").fill("")
    # a date range that holds nothing
    page.get_by_label("Type de document").select_option(value="")
    page.get_by_label("Au", exact=True).fill("1990-01-01")
    page.get_by_role("button", name="Filtrer").click()
    expect(page.get_by_text("Aucun document.")).to_be_visible()
    assert "1990" not in page.url and "type=" not in page.url  # filters are posted, not in the URL
    page.get_by_label("Au", exact=True).fill("")
    page.get_by_role("button", name="Filtrer").click()
    rows.nth(0).get_by_role("link").click()
    expect(page.get_by_role("link", name="Ouvrir le PDF dans le navigateur")).to_be_visible()
    shot(page, "patient-document")
    pdf = page.request.get(portal.url + (page.get_by_role("link", name="Ouvrir le PDF dans le navigateur")
                                         .get_attribute("href") or ""))
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith("inline") and pdf.body().startswith(b"%PDF-")
    with page.expect_download() as got:
        page.get_by_role("link", name="Télécharger").click()
    download = got.value
    assert download.suggested_filename.endswith(".pdf")
    with open(download.path(), "rb") as f:
        assert f.read() == pdf.body()  # the exact bytes that were published


def test_a_cda_document_reads_as_a_page(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    open_documents(page)
    page.locator("table.documents tbody tr", has_text="Synthèse").first.get_by_role("link").click()
    cda = page.locator("section.cda")
    expect(cda.locator("h2").first).to_be_visible()
    assert cda.locator("h2").count() >= 3  # the document's sections, as headings
    me = page.locator(".who strong").inner_text().split()[-1]
    expect(cda.locator("dl")).to_contain_text(me, ignore_case=True)  # the header names the patient
    expect(page.get_by_role("link", name="Ouvrir le PDF dans le navigateur")).to_have_count(0)
    viewport = page.viewport_size or {"width": 0}
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]  # wide tables scroll inside
    shot(page, "patient-cda")
    with page.expect_download() as got:
        page.get_by_role("link", name="Télécharger").click()
    with open(got.value.path(), "rb") as f:
        assert b"ClinicalDocument" in f.read()  # the exact CDA, as a file, never run as a page


def test_patient_masks_and_unmasks_a_document_from_professionals(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    open_documents(page)
    page.locator("table.documents tbody tr").nth(1).get_by_role("link").click()
    title = page.get_by_role("heading", level=1).inner_text()
    page.get_by_role("button", name="Masquer aux professionnels").click()
    expect(page.get_by_role("status")).to_contain_text("masqué aux professionnels")
    expect(page.locator(".facts .badge.masked")).to_have_text("Masqué aux professionnels")
    open_documents(page)
    row = page.locator("table.documents tbody tr", has_text=title)
    expect(row.locator(".badge.masked")).to_be_visible()
    row.get_by_role("link").click()
    page.get_by_role("button", name="Ne plus masquer").click()
    expect(page.get_by_role("status")).to_contain_text("n'est plus masqué")
    expect(page.locator(".facts .badge.masked")).to_have_count(0)


def test_patient_uploads_their_own_document(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    open_documents(page)
    page.get_by_role("link", name="Ajouter un document").click()
    # a file that is not a PDF is refused with a clear message, and nothing is added
    page.get_by_label("Fichier PDF").set_input_files(files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                             "buffer": b"hello"}])
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("alert")).to_have_text("Le fichier doit être un PDF.")
    from carnet.demo_documents import minimal_pdf

    title = f"Mes directives anticipées {uuid.uuid4().hex[:6]}"
    pdf = minimal_pdf([title, "Document du patient"])
    page.get_by_label("Fichier PDF").set_input_files(files=[{"name": "directives.pdf",
                                                             "mimeType": "application/pdf", "buffer": pdf}])
    page.get_by_label("Type de document").select_option(label="Directives anticipées")
    page.get_by_label("Description").fill(title)
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("status")).to_contain_text("Votre document a été ajouté.")
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    content = page.request.get(portal.url + (page.get_by_role("link", name="Ouvrir le PDF dans le navigateur")
                                             .get_attribute("href") or ""))
    assert content.body() == pdf
    open_documents(page)
    expect(page.locator("table.documents tbody tr", has_text=title)).to_have_count(1)


def test_access_history_shows_professionals_and_verifies_a_proof(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    page.get_by_role("link", name="Historique des accès").click()
    rows = page.locator("table.history tbody tr")
    expect(rows.first).to_be_visible()
    # by default the patient's own views are left out; they can be included
    me = page.locator(".who strong").inner_text()
    assert all(me not in rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count()))
    page.get_by_label("Inclure mes propres consultations").check()
    page.get_by_role("button", name="Filtrer").click()
    expect(page.locator("table.history tbody tr", has_text=me).first).to_be_visible()
    shot(page, "patient-history")
    # an older entry is in a signed checkpoint: its proof checks out against the published key
    rows.last.get_by_role("button", name=re.compile("Vérifier")).click()
    expect(page.get_by_role("status")).to_contain_text("Preuve vérifiée")
    expect(page.get_by_role("status")).to_contain_text("is in the log")
    shot(page, "patient-verify")


def test_patient_blocks_unblocks_and_opposes_emergency_access(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "parent")  # the demo's "patient" keeps its decisions for other tests
    page.get_by_role("link", name="Accès", exact=True).click()
    expect(page.get_by_role("heading", name="Médecin traitant")).to_be_visible()
    gp = portal.professional("médecin traitant").split(" ", 1)[-1]  # "Chloé Girard"
    expect(page.locator("table.rights")).to_contain_text(gp.split()[-1].upper())
    nurse = portal.professional("infirmier")
    page.get_by_label("Nom du professionnel").fill(nurse.split()[-1])
    page.get_by_role("button", name="Rechercher").click()
    page.locator("ul.found li").first.get_by_role("button", name=re.compile("^Bloquer")).click()
    expect(page.get_by_role("status")).to_have_text("C'est fait.")
    blocked = page.locator("h2#deny-title + ul li")
    expect(blocked).to_have_count(1)
    expect(page.locator("table.rights tr", has_text=nurse.split()[-1].upper())).to_contain_text("Bloqué")
    shot(page, "patient-access")
    blocked.first.get_by_role("button", name=re.compile("^Débloquer")).click()
    expect(page.locator("h2#deny-title + ul li")).to_have_count(0)
    expect(page.locator("table.rights tr", has_text=nurse.split()[-1].upper())).not_to_contain_text("Bloqué")
    oppose = page.get_by_role("button", name="M'opposer à l'accès en urgence")
    allow = page.get_by_role("button", name="Autoriser de nouveau l'accès en urgence")
    opposed_text = page.get_by_text("Vous vous êtes opposé(e) à l'accès en urgence.")
    allowed_text = page.get_by_text("Les professionnels peuvent accéder à votre dossier en cas d'urgence")
    was_opposed = allow.count() == 1
    for _ in range(2):  # there and back again: the record ends as it was
        if allow.count():
            allow.click()
            expect(allowed_text).to_be_visible()
        else:
            oppose.click()
            expect(opposed_text).to_be_visible()
    expect(opposed_text if was_opposed else allowed_text).to_be_visible()


def test_identity_page_explains_the_ins(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    page.get_by_role("link", name="Identité").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Identité nationale de santé (INS)")
    expect(page.locator("dl.facts")).to_contain_text("Matricule INS")
    expect(page.locator(".notice")).to_contain_text("Qualifiée")


def test_measurements_are_charted_with_their_values(page: Page, portal: Portal) -> None:
    pid = portal.records["patient"]
    bundle = api_as_system(portal, "GET", "Observation", query=[("patient", f"Patient/{pid}"), ("code", "29463-7"),
                                                             ("_count", "500")])
    weights = sorted(e["resource"]["valueQuantity"]["value"] for e in bundle.get("entry") or [])
    assert weights  # the demo records weights
    sign_in_patient(page, portal, "patient")
    page.get_by_role("link", name="Mesures").click()
    section = page.locator("section.measure", has=page.get_by_role("heading", name="Poids", exact=True))
    chart = section.locator("svg[role=img]")
    expect(chart).to_have_attribute("aria-label", re.compile(f"^Poids : {len(weights)} mesures"))
    assert chart.locator("circle").count() == len(weights)
    section.get_by_text("Les valeurs").click()  # a <details>: no script needed
    cells = section.locator("table.values tbody tr td:nth-child(2)")
    expect(cells).to_have_count(len(weights))
    assert sorted(float(c) for c in cells.all_inner_texts()) == weights
    # blood pressure panels give two series
    expect(page.get_by_role("heading", name=re.compile("Systolique"))).to_be_visible()
    shot(page, "patient-measures")


def test_parent_switches_to_their_childs_record(page: Page, portal: Portal) -> None:
    child = portal.records["child"]
    # a document hidden from legal representatives: the parent never sees it
    from tests.browser.test_portal_rules import publish_pdf

    hidden = publish_pdf(portal, child, "Consultation confidentielle", "INVISIBLE_REPRESENTANTS_LEGAUX")
    sign_in_patient(page, portal, "parent")
    page.get_by_label("Changer de dossier").select_option(value=child)
    page.get_by_role("button", name="Ouvrir").click()
    expect(page.locator(".notice")).to_contain_text("dossier d'un enfant")
    shot(page, "parent-child-record")
    open_documents(page)
    shown = documents_shown_to(portal, child, "INVISIBLE_REPRESENTANTS_LEGAUX")
    assert "Consultation confidentielle" not in shown
    expect(page.locator("table.documents tbody tr")).to_have_count(len(shown))
    expect(page.get_by_text("Consultation confidentielle")).to_have_count(0)
    assert page.goto(f"{portal.url}/portail/documents/{hidden}").status == 404
    # the child's identity, and back to their own record
    page.get_by_role("link", name="Identité").click()
    expect(page.locator(".notice").first).to_contain_text("dossier d'un enfant")
    page.get_by_role("link", name="Accueil").click()
    page.get_by_label("Changer de dossier").select_option(value=portal.records["parent"])
    page.get_by_role("button", name="Ouvrir").click()
    expect(page.get_by_text("dossier d'un enfant", exact=False)).to_have_count(1)  # the option only


def test_the_essential_journey_works_without_javascript(browser: Browser, portal: Portal) -> None:
    ctx = new_context(browser, javascript=False)
    try:
        page = ctx.new_page()
        sign_in_patient(page, portal, "patient")
        open_documents(page)
        page.locator("table.documents tbody tr").first.get_by_role("link").click()
        page.get_by_role("button", name="Masquer aux professionnels").click()
        expect(page.locator(".facts .badge.masked")).to_be_visible()
        page.get_by_role("button", name="Ne plus masquer").click()
        expect(page.locator(".facts .badge.masked")).to_have_count(0)
        page.get_by_role("link", name="Historique des accès").click()
        expect(page.locator("table.history tbody tr").first).to_be_visible()
    finally:
        ctx.close()


def test_a_long_record_pages_its_documents_and_the_pages_keep_the_filters(page: Page, portal: Portal) -> None:
    from carnet.web.patient import PAGE
    from tests.browser.test_portal_rules import publish_pdf

    pid = portal.records["parent"]  # a record no other test counts the documents of
    run = uuid.uuid4().hex[:6]  # the phone run publishes its own after the desktop run
    for n in range(PAGE + 2):
        publish_pdf(portal, pid, f"Compte rendu n° {n:02d} {run}")
    total = len(documents_shown_to(portal, pid, "INVISIBLE_PATIENT"))
    sign_in_patient(page, portal, "parent")
    open_documents(page)
    rows = page.locator("table.documents tbody tr")
    expect(rows).to_have_count(PAGE)
    expect(page.get_by_role("status")).to_have_text(f"Documents 1–{PAGE}")
    first_page = rows.all_inner_texts()
    page.get_by_role("button", name="Plus anciens").click()
    expect(rows).to_have_count(min(total - PAGE, PAGE))
    assert not set(rows.all_inner_texts()) & set(first_page)  # no document on both pages
    page.get_by_role("button", name="Plus récents").click()
    assert rows.all_inner_texts() == first_page
    # filtered on a type, the next page is still filtered
    page.get_by_label("Type de document").select_option(value="http://loinc.org|11488-4")
    page.get_by_role("button", name="Filtrer").click()
    expect(rows).to_have_count(PAGE)
    page.get_by_role("button", name="Plus anciens").click()
    expect(rows.first).to_be_visible()
    for text in rows.all_inner_texts():
        assert "Compte rendu" in text
    assert "depuis" not in page.url and "type" not in page.url
