"""The portal's security and accessibility promises, checked in the browser: CSRF, cookies, the
Content-Security-Policy, session expiry, sign-in lockout, no clinical data in URLs or logs, phone
width, labels and landmarks, keyboard use, contrast, English. On one database
(``conftest.pytest_collection_modifyitems``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from carnet.web import portal as portal_mod
from tests.browser.conftest import (
    Portal,
    api_as_system,
    new_context,
    shot,
    sign_in_patient,
    sign_in_professional,
)

PAGES = ["/portail", "/portail/documents", "/portail/historique", "/portail/acces", "/portail/identite",
         "/portail/documents/ajouter", "/portail/mesures"]


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    page.get_by_role("navigation", name="Menu principal").get_by_role("link", name="Documents").click()
    link = page.locator("table.documents tbody tr").first.get_by_role("link")
    doc = (link.get_attribute("href") or "").rsplit("/", 1)[-1]
    before = api_as_system(portal, "GET", f"DocumentReference/{doc}")  # other tests may have masked it
    action = "demasquer" if "MASQUE_PS" in str(before.get("securityLabel")) else "masquer"
    forged = page.request.post(f"{portal.url}/portail/documents/{doc}/{action}", form={"csrf": "forged"})
    assert forged.status == 403 and "Formulaire expiré ou invalide" in forged.text()
    missing = page.request.post(f"{portal.url}/portail/acces/opposition", form={})
    assert missing.status == 403
    after = api_as_system(portal, "GET", f"DocumentReference/{doc}")
    assert after.get("securityLabel") == before.get("securityLabel")
    assert after["meta"]["versionId"] == before["meta"]["versionId"]
    access = api_as_system(portal, "GET", f"Patient/{portal.records['patient']}/$access")
    assert {p["name"]: p.get("valueBoolean") for p in access["parameter"]}["emergencyOpposed"] is False


def test_the_forms_before_sign_in_carry_a_token_too(page: Page, portal: Portal) -> None:
    page.goto(portal.url + "/")
    token = page.locator("form:has(button[value=patient]) input[name=csrf]").get_attribute("value")
    assert token and len(token) >= 40
    other = page.context.browser.new_context() if page.context.browser else None  # a site with no cookie
    assert other is not None
    try:
        forged = other.request.post(f"{portal.url}/portail/connexion", form={"csrf": token}, max_redirects=0)
        assert forged.status == 403  # the token alone is not enough: it must match the visitor's cookie
        switched = other.request.post(f"{portal.url}/portail/langue", form={"lang": "en"}, max_redirects=0)
        assert switched.status == 403 and "carnet_langue" not in switched.headers.get("set-cookie", "")
    finally:
        other.close()
    started = page.request.post(f"{portal.url}/portail/connexion", form={"csrf": token}, max_redirects=0)
    assert started.status == 303 and started.headers["location"].startswith("/oauth/authorize?")


def test_session_cookie_and_page_headers(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    cookie = next(c for c in page.context.cookies() if c["name"] == portal_mod.COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert len(cookie["value"]) >= 40  # a random token naming a server-side row, nothing else
    for path in PAGES:
        response = page.goto(portal.url + path)
        assert response is not None and response.status == 200, path
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "form-action 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["cache-control"] == "no-store"
        html = page.content()
        assert "<script" not in html and " style=" not in html, path  # nothing the CSP would have to allow


def test_the_cookie_is_secure_under_https(portal: Portal) -> None:
    from starlette.responses import Response

    settings = portal.live.settings.model_copy(update={"base_url": "https://carnet.example.test"})
    state = type("State", (), {"engine": portal.backend.engine, "signing_key": b"k" * 32})()
    response = Response()
    portal_mod.Portal(settings, state).set_cookie(response, "token")
    header = response.headers["set-cookie"].lower()
    assert "secure" in header and "httponly" in header and "samesite=lax" in header


def test_a_session_ends_after_its_idle_time_and_at_sign_out(page: Page, portal: Portal) -> None:
    from sqlalchemy import update

    from carnet.db.tables import signin_sessions

    sign_in_patient(page, portal, "patient")
    with portal.backend.engine.begin() as conn:  # as if the idle time had passed
        conn.execute(update(signin_sessions).values(expires_at=0))
    page.goto(portal.url + "/portail/documents")
    expect(page.get_by_text("Votre session a expiré. Reconnectez-vous.")).to_be_visible()
    assert page.url.startswith(portal.url + "/?")
    sign_in_patient(page, portal, "patient")
    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_text("Vous êtes déconnecté(e).")).to_be_visible()
    page.goto(portal.url + "/portail/historique")
    expect(page.get_by_role("heading", level=1)).to_have_text("Bienvenue sur Carnet")


def test_repeated_wrong_passwords_lock_the_account(page: Page, portal: Portal) -> None:
    from carnet.auth.accounts import AccountStore

    store = AccountStore(portal.live.settings, portal.backend.engine)
    if store.get("verrou") is None:
        store.add("verrou", "the right password 2026", portal.records["opposed"], totp=False, channel="log")
    page.goto(portal.url + "/")
    page.locator("form:has(button[value=patient]) button").click()
    for _ in range(portal.live.settings.signin_max_failures):
        page.get_by_label("Identifiant").fill("verrou")
        page.get_by_label("Mot de passe").fill("wrong")
        page.locator("#method-patient button[type=submit]").click()
    page.get_by_label("Identifiant").fill("verrou")
    page.get_by_label("Mot de passe").fill("the right password 2026")
    page.locator("#method-patient button[type=submit]").click()
    expect(page.get_by_role("alert")).to_contain_text("Trop d'échecs")


def test_no_clinical_data_in_urls_or_logs(page: Page, portal: Portal, caplog: pytest.LogCaptureFixture) -> None:
    pid = portal.records["patient"]
    patient = api_as_system(portal, "GET", f"Patient/{pid}")
    from carnet.identity import fhir as idfhir

    ins = idfhir.read_patient_ins(patient).ins
    assert ins is not None
    secrets = [patient["name"][0]["family"], patient["name"][0]["given"][0], patient["birthDate"], ins.matricule]
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    with caplog.at_level(logging.DEBUG):
        sign_in_patient(page, portal, "patient")
        for path in PAGES:
            page.goto(portal.url + path)
        page.get_by_role("navigation", name="Menu principal").get_by_role("link", name="Documents").click()
        page.get_by_label("Auteur").fill("Moreau")
        page.get_by_role("button", name="Filtrer").click()
        page.context.clear_cookies()
        sign_in_professional(page, portal, portal.professional("médecin traitant"))
        page.get_by_label("Nom", exact=True).fill(patient["name"][0]["family"])
        page.get_by_label("Date de naissance").fill(patient["birthDate"])
        page.locator("form:has(#family) button").click()
        page.get_by_label("Matricule INS").fill(ins.matricule)
        page.locator("form:has(#ins) button").click()
        page.locator("table.patients a").first.click()
    assert len(urls) > 15
    for url in urls:
        for value in secrets:
            assert value.lower() not in url.lower(), (value, url)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for value in secrets:
        assert value.lower() not in logged.lower(), value


def test_every_page_fits_a_phone_screen(browser: Browser, portal: Portal) -> None:
    ctx = new_context(browser, phone=True)
    try:
        page = ctx.new_page()
        page.goto(portal.url + "/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        shot(page, "phone-landing")
        sign_in_patient(page, portal, "patient")
        for path in PAGES:
            page.goto(portal.url + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (path, width)
            shot(page, "phone" + path.replace("/", "-"))
        ctx.clear_cookies()
        sign_in_professional(page, portal, portal.professional("médecin traitant"))
        page.goto(f"{portal.url}/portail/patients/{portal.records['patient']}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        shot(page, "phone-pro-record")
    finally:
        ctx.close()


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
          && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map(el => el.outerHTML)"""


def test_pages_are_labelled_with_landmarks_and_usable_from_the_keyboard(page: Page, portal: Portal) -> None:
    sign_in_patient(page, portal, "patient")
    for path in PAGES:
        page.goto(portal.url + path)
        assert page.locator("html").get_attribute("lang") == "fr"
        expect(page.locator("h1")).to_have_count(1)
        for role in ("banner", "main", "contentinfo", "navigation"):
            expect(page.get_by_role(role).first).to_be_visible()
        assert page.evaluate(UNLABELLED) == [], path
    # the first Tab reaches the skip link, which takes the keyboard to the content
    page.goto(portal.url + "/portail/documents")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Aller au contenu")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # and a document opens with the keyboard alone
    page.locator("table.documents a").first.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="Ouvrir le PDF dans le navigateur")).to_be_visible()


def test_the_portal_speaks_english_on_request(page: Page, portal: Portal) -> None:
    page.goto(portal.url + "/")
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to Carnet")
    assert page.locator("html").get_attribute("lang") == "en"
    page.locator("form:has(button[value=patient]) button").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")  # the sign-in page follows
    page.goto(portal.url + "/")
    page.get_by_role("button", name="Français").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Bienvenue sur Carnet")


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_text_colours_have_enough_contrast() -> None:
    css = (Path(portal_mod.HERE) / "static" / "portal.css").read_text()
    colours = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    pairs = [("ink", "white"), ("muted", "white"), ("blue", "white"), ("white", "blue"), ("red", "red-light"),
             ("blue", "blue-light"), ("ink", "green-light"), ("ink", "red-light"), ("white", "red"),
             ("ink", "bg"), ("muted", "bg")]
    colours["white"] = "#ffffff"
    for fg, bg in pairs:
        light, dark = sorted((_luminance(colours[fg]), _luminance(colours[bg])), reverse=True)
        ratio = (light + 0.05) / (dark + 0.05)
        assert ratio >= 4.5, (fg, bg, round(ratio, 2))  # WCAG 2.1 AA for body text
