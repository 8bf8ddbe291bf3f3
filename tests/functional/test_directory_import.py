"""``carnet directory import``: a directory extract loaded through the FHIR engine, twice."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from click.testing import Result

from carnet.directory import fhir as d
from carnet.directory import services
from tests.conftest import FIXTURES, Fhir
from tests.support.cli import run_carnet


def run(*args: str, data: Path) -> Result:
    return run_carnet(*args, "--data", str(data), env={})


SAMPLE = FIXTURES / "directory" / "annuaire-extrait.txt"
EXPECTED = {"Organization": 4, "Practitioner": 6, "PractitionerRole": 7}


def total(fhir: Fhir, query: str) -> int:
    r = fhir.get(query)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def test_import_twice_reports_unchanged_and_stores_no_duplicate(fhir: Fhir) -> None:
    backend = fhir.backend
    first = services.import_file(backend.settings, backend.engine, SAMPLE)
    assert dict(first.created) == EXPECTED and not first.updated and not first.unchanged
    assert first.rows == 10 and first.rejected_rows == 3
    bad_rpps = next(r for r in first.rejections if r.line == 7)
    assert bad_rpps.identifier == "810995292230"
    assert "RPPS invalide « 10995292230 » : clé de contrôle (Luhn) attendue 1, trouvée 0" in bad_rpps.reason
    assert "Invalid RPPS" in bad_rpps.reason

    second = services.import_file(backend.settings, backend.engine, SAMPLE)
    assert dict(second.unchanged) == EXPECTED and not second.created and not second.updated
    assert second.rejected_rows == 3
    for rtype, n in EXPECTED.items():
        assert total(fhir, rtype) == n
    martin = fhir.get("Practitioner?identifier=" + quote(d.PS_IDNAT_SYSTEM + "|810858224123")).json()
    assert martin["total"] == 1 and martin["entry"][0]["resource"]["meta"]["versionId"] == "1"


def test_imported_directory_is_searchable_by_profession_identifier_and_city(fhir: Fhir) -> None:
    backend = fhir.backend
    services.import_file(backend.settings, backend.engine, SAMPLE)
    physicians = quote(d.profession_system() + "|10")
    assert total(fhir, f"PractitionerRole?role={physicians}") == 2  # one physician, two situations
    assert total(fhir, "Organization?identifier=" + quote(d.STRUCTURE_IDNAT_SYSTEM + "|1760965301")) == 1
    assert total(fhir, "Organization?address-city=rouen") == 1
    r = fhir.get("PractitionerRole?organization.identifier=" + quote(d.FINESS_SYSTEM + "|760965301")
                 + "&_include=PractitionerRole:practitioner")
    assert r.status_code == 200, r.text
    names = sorted(e["resource"]["name"][0]["family"] for e in r.json()["entry"]
                   if e["resource"]["resourceType"] == "Practitioner")
    assert names == ["BERNARD", "MARTIN"]


def test_a_bundle_of_what_was_imported_imports_as_unchanged(fhir: Fhir, tmp_path: Path) -> None:
    backend = fhir.backend
    services.import_file(backend.settings, backend.engine, SAMPLE)
    entries = []
    for rtype in EXPECTED:
        r = fhir.get(f"{rtype}?_count=100")
        entries += [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in r.json()["entry"]]
    path = tmp_path / "directory.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    report = services.import_file(backend.settings, backend.engine, path)
    assert dict(report.unchanged) == EXPECTED and not report.created and report.rejected_rows == 0


def test_the_command_shows_the_report_and_is_idempotent(tmp_path: Path) -> None:
    r = run("directory", "import", str(SAMPLE), data=tmp_path)
    assert r.exit_code == 0, r.stderr
    assert "10 rows read" in r.stdout
    assert "created: 4 Organization, 6 Practitioner, 7 PractitionerRole" in r.stdout
    assert "rejected: 3 rows" in r.stdout and "line 7 (810995292230): RPPS invalide" in r.stdout
    again = run("directory", "import", str(SAMPLE), data=tmp_path)
    assert again.exit_code == 0, again.stderr
    assert "created: none" in again.stdout and "updated: none" in again.stdout
    assert "unchanged: 4 Organization, 6 Practitioner, 7 PractitionerRole" in again.stdout


def test_the_command_refuses_a_file_that_is_not_an_extract(tmp_path: Path) -> None:
    other = tmp_path / "notes.csv"
    other.write_text("nom,prenom\nMartin,Claire\n", encoding="utf-8")
    r = run("directory", "import", str(other), data=tmp_path)
    assert r.exit_code != 0
    assert "En-tête non reconnu" in r.stderr and "Unrecognised header" in r.stderr
