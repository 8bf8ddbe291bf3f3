"""Browser tests of the portal: Debian's Chromium driven by Playwright, against a real server on a
loopback port with the demo data, on SQLite and PostgreSQL.

Each backend gets its own database with the demo loaded once (``portal``); each test opens a fresh
browser context (no cookies). One-time sign-in codes are read from the ``carnet.notify`` log, where
the demo accounts' notifier sends them. Screenshots go to ``CARNET_SCREENSHOT_DIR`` (default
``build/screenshots``); the README's come from a run with ``CARNET_SCREENSHOT_DIR=docs/screenshots``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from carnet import demo
from tests.conftest import BACKENDS, Backend, LiveServer

CHROMIUM = os.environ.get("CARNET_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(os.environ.get("CARNET_SCREENSHOT_DIR", Path(__file__).parents[2] / "build" / "screenshots"))
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


class Codes(logging.Handler):
    """The one-time codes the demo accounts' notifier writes to the log, newest last."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.sent: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        found = re.search(r"code for (\S+) .*: (\d{6})$", message)
        if found:
            self.sent.append((found.group(1), found.group(2)))

    def latest(self, username: str, after: int) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mine = [code for who, code in self.sent[after:] if who == username]
            if mine:
                return mine[-1]
            time.sleep(0.05)
        raise AssertionError(f"no one-time code was sent to {username}")


@dataclass
class Portal:
    """The server with the demo loaded, and what the tests need to know about it."""

    backend: Backend
    live: LiveServer
    summary: demo.DemoSummary
    codes: Codes
    records: dict[str, str] = field(default_factory=dict)  # "patient", "parent", "child", "opposed" -> id

    @property
    def url(self) -> str:
        return self.live.url

    def professional(self, role: str) -> str:
        """The demo professional's name for a role of :data:`carnet.demo_access.CAST`."""
        return next(name for name, fr, _ in self.summary.professionals if role in fr)


def _records(portal: Portal) -> None:
    """The demo patients the tests use, by what the demo made of them."""
    from sqlalchemy import select

    from carnet.auth.accounts import AccountStore
    from carnet.db.tables import access_rights, record_access

    store = AccountStore(portal.live.settings, portal.backend.engine)
    for username in ("patient", "parent"):
        account = store.get(username)
        assert account is not None
        portal.records[username] = account.patient_id
    with portal.backend.engine.connect() as conn:
        child = conn.execute(select(access_rights.c.patient_id).where(
            access_rights.c.actor == f"Patient/{portal.records['parent']}",
            access_rights.c.patient_id != portal.records["parent"])).scalar()
        opposed = conn.execute(select(record_access.c.patient_id).where(
            record_access.c.emergency_opposed.is_(True))).scalar()
    assert child and opposed
    portal.records["child"], portal.records["opposed"] = child, opposed


@pytest.fixture(scope="session", params=BACKENDS)
def portal(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    backend = Backend(request.param, tmp_path_factory.mktemp(f"portal-{request.param}"))
    live = LiveServer(backend.settings)
    summary = demo.load(live.settings, backend.engine, patients=8)
    codes = Codes()
    logging.getLogger("carnet.notify").addHandler(codes)
    found = Portal(backend, live, summary, codes)
    _records(found)
    yield found
    logging.getLogger("carnet.notify").removeHandler(codes)
    live.stop()
    backend.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        raise RuntimeError(f"Chromium is needed for the browser tests: {CHROMIUM} (Debian package chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def new_context(browser: Browser, *, phone: bool = False, javascript: bool = True) -> BrowserContext:
    return browser.new_context(locale="fr-FR", viewport=PHONE if phone else DESKTOP,
                               java_script_enabled=javascript, is_mobile=phone, has_touch=phone)


JOURNEYS = ("test_portal_patient", "test_portal_pro", "test_portal_rules")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The journeys run at desktop and phone widths (the phone layout stacks tables and wraps the
    menu: the same actions must work there)."""
    if "width" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in JOURNEYS:
        metafunc.parametrize("width", ["desktop", "phone"], indirect=True)


ONE_DATABASE = ("test_portal_quality",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Phone widths on the first database only (SQLite unless told otherwise): the layout does not
    depend on the database, and the journeys already run on both databases at desktop width. The
    quality checks (headers, sessions, layout, labels, contrast: the pages' and the server's
    promises, whichever database holds the records) on the first database only too."""
    kept, dropped = [], []
    for item in items:
        chosen = item.callspec.params if isinstance(item, pytest.Function) and hasattr(item, "callspec") else {}
        module = item.module.__name__.rsplit(".", 1)[-1] if isinstance(item, pytest.Function) else ""
        if chosen.get("portal", BACKENDS[0]) != BACKENDS[0] and (chosen.get("width") == "phone"
                                                                 or module in ONE_DATABASE):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def width(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "desktop"))


@pytest.fixture
def context(browser: Browser, width: str) -> Iterator[BrowserContext]:
    ctx = new_context(browser, phone=width == "phone")
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def shot(page: Page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in_patient(page: Page, portal: Portal, username: str, password: str = demo.DEMO_PASSWORD) -> None:
    page.goto(portal.url + "/")
    page.locator("form:has(button[value=patient]) button").click()
    page.get_by_label("Identifiant").fill(username)
    page.get_by_label("Mot de passe").fill(password)
    before = len(portal.codes.sent)
    page.locator("#method-patient button[type=submit]").click()
    page.get_by_label("Code").fill(portal.codes.latest(username, before))
    page.locator("#method-otp button[type=submit]").click()
    page.wait_for_url(portal.url + "/portail")


def sign_in_professional(page: Page, portal: Portal, name: str, regulation: bool = False) -> None:
    page.goto(portal.url + "/")
    page.locator("form:has(button[value=pro]) button").click()
    options = page.locator("#national_id option").all_inner_texts()
    wanted = next(o for o in options if o.startswith(name) and ("Centre 15" in o) == regulation)
    page.select_option("#national_id", label=wanted)
    page.locator("#method-development button[type=submit]").click()
    page.wait_for_url(portal.url + "/portail/patients")


def api_as_system(portal: Portal, method: str, path: str, body: Any = None,
                  query: list[tuple[str, str]] | None = None) -> Any:
    """The engine, as a system client (to set up what the pages must or must not show)."""
    from carnet.auth.principal import Principal
    from carnet.fhir import jsonio
    from carnet.fhir.router import FhirRequest

    router = portal.live.app.state.fhir
    resp = router.handle(FhirRequest(method, path, query or [], {"content-type": "application/fhir+json"},
                                     jsonio.dumps(body) if body is not None else None), Principal.system())
    assert resp.status < 300, resp.json_bytes()[:500]
    return jsonio.loads(resp.json_bytes()) if resp.json_bytes() else None


def documents_shown_to(portal: Portal, pid: str, hidden_label: str) -> list[str]:
    """A second reading of what a patient (``INVISIBLE_PATIENT``) or a representative
    (``INVISIBLE_REPRESENTANTS_LEGAUX``) may see of a record: its current documents but those
    carrying the label that hides them from that reader."""
    bundle = api_as_system(portal, "GET", "DocumentReference", query=[
        ("patient", f"Patient/{pid}"), ("status", "current"), ("_count", "500")])
    out = []
    for entry in bundle.get("entry") or []:
        doc = entry["resource"]
        codes = {c.get("code") for label in doc.get("securityLabel") or [] for c in label.get("coding") or []}
        if hidden_label not in codes:
            out.append(str(doc.get("description") or ""))
    return out
