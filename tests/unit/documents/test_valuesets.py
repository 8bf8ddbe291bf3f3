"""CI-SIS document value sets: the generated data file, type and class lookups, retired types, both
forms of every code system, bilingual errors with FHIRPath expressions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from carnet.documents import valuesets as vs
from carnet.errors import Unprocessable

ROOT = Path(__file__).resolve().parents[3]
DATA = json.loads((ROOT / "src/carnet/documents/data/valuesets.json").read_text(encoding="utf-8"))
LOINC_OID = "2.16.840.1.113883.6.1"
A03_URL = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
A03_OID = "1.2.250.1.213.1.1.4.1"
A05_URL = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
A07_URL = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
A07_OID = "1.2.250.1.213.1.1.4.13"
R02_URL = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
A01_URL = "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice"
IHE_FORMAT = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
A11_URL = "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode"
V3_CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

# The product specification's common types, with the class ASS_X04 gives each.
SPEC_TYPES = {"11490-0": "10", "11488-4": "10", "11502-2": "10", "18748-4": "31", "34112-3": "10",
              "34874-8": "10", "15507-7": "10", "57833-6": "42", "60593-1": "43", "60591-5": "11",
              "11369-6": "52", "85208-7": "10"}
SPEC_CLASSES = {"10", "11", "31", "42", "43", "44", "45", "52", "60", "90", "95", "99"}


def _error(exc: pytest.ExceptionInfo[Unprocessable]) -> dict[str, Any]:
    assert len(exc.value.issues) == 1
    return exc.value.issues[0].to_fhir()


def _bilingual(text: str) -> tuple[str, str]:
    fr, sep, en = text.partition(" / ")
    assert sep, text
    return fr, en


# -- The data file ---------------------------------------------------------------------------------

def test_data_file_is_versioned_with_its_sources() -> None:
    assert DATA["version"] == vs.version()
    assert DATA["version"].startswith(DATA["value_sets"]["type"]["version"])
    for key in ("type", "class", "confidentiality", "facility_type", "practice_setting", "format"):
        entry = DATA["value_sets"][key]
        assert entry["version"] and entry["name"] and entry["url"].startswith("https://mos.esante.gouv.fr/NOS/")
        assert entry["source"]["origin"]
        assert entry["concepts"]
    for key in ("type", "confidentiality", "facility_type", "practice_setting"):
        source = DATA["value_sets"][key]["source"]
        assert source["file"].startswith("fr-xds-valuesets/svs/JDV_") and len(source["sha256"]) == 64
    assert DATA["value_sets"]["type"]["version"] == "20240927120000"
    assert DATA["value_sets"]["class"]["version"] == "20230922120000"
    assert DATA["type_class_map"]["name"] == "ASS_X04-CorrespondanceType-Classe-CISIS"
    assert DATA["type_class_map"]["version"] == "20250415120000"


def test_classes_are_the_twelve_of_the_specification() -> None:
    a03 = {c.code for (system, _), c in vs.value_set("class").concepts.items() if system == "tre_a03"}
    assert a03 == SPEC_CLASSES


def test_every_class_of_the_mapping_is_a_j06_class() -> None:
    j06 = {(c["system"], c["code"]) for c in DATA["value_sets"]["class"]["concepts"]}
    for concept in DATA["value_sets"]["type"]["concepts"]:
        if concept["class"] is not None:
            assert (concept["class_system"], concept["class"]) in j06, concept


def test_data_file_matches_the_tables_the_script_transcribes() -> None:
    spec = importlib.util.spec_from_file_location("build_document_valuesets",
                                                  ROOT / "scripts" / "build_document_valuesets.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    x04 = {("loinc", k): v for k, v in script.pairs(script.X04_LOINC).items()}
    x04 |= {("tre_a05", k): v for k, v in script.pairs(script.X04_TRE_A05).items()}
    in_data = {(c["system"], c["code"]): c["class"] for c in DATA["value_sets"]["type"]["concepts"]
               if c["system"] != "tre_a12" and c["class"] is not None}
    assert in_data == x04
    assert DATA["type_class_map"]["entries"] == len(x04) + len(script.X04_TRE_A12)


# -- Types and classes -----------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "cls"), sorted(SPEC_TYPES.items()))
def test_spec_types_are_accepted_with_their_class(code: str, cls: str) -> None:
    dtype = vs.check_type(code, "http://loinc.org")
    assert dtype.code == code and not dtype.retired and dtype.display
    derived = vs.class_for_type(code)
    assert derived is not None and derived.code == cls and derived.system.url == A03_URL
    assert vs.check_class(code, None).code == cls
    assert vs.check_class(code, cls).code == cls


def test_type_display_is_french_and_class_comes_with_it() -> None:
    dtype = vs.document_type("11490-0")
    assert dtype is not None
    assert dtype.display_fr == "Lettre de liaison à la sortie d'un établissement de soins"
    assert dtype.class_code == "10"
    assert dtype.coding() == {"system": "http://loinc.org", "code": "11490-0", "display": dtype.display}


@pytest.mark.parametrize("code", ["11528-7", "11493-4"])
def test_retired_types_are_known_but_refused(code: str) -> None:
    dtype = vs.document_type(code)
    assert dtype is not None and dtype.retired
    with pytest.raises(Unprocessable) as exc:
        vs.check_type(code, f"urn:oid:{LOINC_OID}")
    issue = _error(exc)
    fr, en = _bilingual(issue["diagnostics"])
    assert code in fr and "retiré" in fr and "refusé pour un nouveau document" in fr
    assert code in en and "retired" in en and "refused for new documents" in en
    assert "JDV_J07-XdsTypeCode-CISIS" in en and "20240927120000" in en
    assert issue["expression"] == ["DocumentReference.type.coding[0].code"]
    assert issue["code"] == "business-rule"


def test_retired_list_is_what_the_mapping_knows_and_j07_dropped() -> None:
    retired = {c["code"] for c in DATA["value_sets"]["type"]["concepts"] if c["status"] == "retired"}
    assert retired == set(DATA["type_class_map"]["retired_types"])
    assert {"11528-7", "11493-4"} <= retired
    assert not retired & set(SPEC_TYPES)


def test_unknown_type_and_unknown_system_are_refused() -> None:
    with pytest.raises(Unprocessable) as exc:
        vs.check_type("12345-6", "http://loinc.org", expression="DocumentReference.type.coding[1].code")
    issue = _error(exc)
    assert issue["code"] == "code-invalid" and issue["expression"] == ["DocumentReference.type.coding[1].code"]
    fr, en = _bilingual(issue["diagnostics"])
    assert "« 12345-6 »" in fr and '"12345-6"' in en
    with pytest.raises(Unprocessable) as exc:
        vs.check_type("11490-0", "http://snomed.info/sct")
    issue = _error(exc)
    assert issue["expression"] == ["DocumentReference.type.coding[0].system"]
    assert "http://loinc.org" in issue["diagnostics"] and f"urn:oid:{LOINC_OID}" in issue["diagnostics"]
    with pytest.raises(Unprocessable) as exc:
        vs.check_type("", "http://loinc.org")
    assert _error(exc)["code"] == "required"


@pytest.mark.parametrize("system", ["http://loinc.org", f"urn:oid:{LOINC_OID}", LOINC_OID, f" {LOINC_OID} "])
def test_type_system_forms(system: str) -> None:
    dtype = vs.document_type("11502-2", system)
    assert dtype is not None and dtype.system.url == "http://loinc.org"
    assert vs.check_type("11502-2", system).code == "11502-2"


@pytest.mark.parametrize("system", [A05_URL, "urn:oid:1.2.250.1.213.1.1.4.12", "1.2.250.1.213.1.1.4.12"])
def test_french_type_codes_of_tre_a05(system: str) -> None:
    dtype = vs.check_type("SYNTH", system)
    assert dtype.class_code == "11"
    assert vs.document_type("SYNTH", "http://loinc.org") is None  # not a LOINC code


def test_class_mismatch_names_the_expected_class() -> None:
    with pytest.raises(Unprocessable) as exc:
        vs.check_class("11490-0", "31", class_system=f"urn:oid:{A03_OID}")
    issue = _error(exc)
    fr, en = _bilingual(issue["diagnostics"])
    assert "« 31 »" in fr and "« 11490-0 »" in fr and "donne « 10 » (Compte rendu)" in fr
    assert 'gives "10" (Compte rendu)' in en and "ASS_X04-CorrespondanceType-Classe-CISIS" in en
    assert issue["expression"] == ["DocumentReference.category[0].coding[0].code"]


@pytest.mark.parametrize("system", [A03_URL, f"urn:oid:{A03_OID}", A03_OID])
def test_class_system_forms(system: str) -> None:
    assert vs.check_class("18748-4", "31", class_system=system).code == "31"


def test_class_outside_j06_is_refused() -> None:
    with pytest.raises(Unprocessable) as exc:
        vs.check_class("11490-0", "12")
    assert _error(exc)["code"] == "code-invalid"


def test_type_without_correspondence_needs_a_supplied_class() -> None:
    unmapped = DATA["type_class_map"]["unmapped_types"]
    assert unmapped == ["101881-1"]
    assert vs.class_for_type("101881-1") is None
    assert vs.check_type("101881-1").class_code is None
    with pytest.raises(Unprocessable) as exc:
        vs.check_class("101881-1", None)
    issue = _error(exc)
    assert issue["code"] == "required" and "101881-1" in issue["diagnostics"]
    assert vs.check_class("101881-1", "52").code == "52"


def test_signature_type_maps_to_the_urn_class() -> None:
    derived = vs.class_for_type("E1762", "ASTM")
    assert derived is not None and derived.code == "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
    assert derived.system.name == "TRE_A10-NomenclatureURN"


# -- Confidentiality and visibility ---------------------------------------------------------------

@pytest.mark.parametrize(("code", "system"), [
    ("MASQUE_PS", A07_URL), ("INVISIBLE_PATIENT", f"urn:oid:{A07_OID}"),
    ("INVISIBLE_REPRESENTANTS_LEGAUX", A07_OID), ("MASQUE_PS", None)])
def test_visibility_codes(code: str, system: str | None) -> None:
    assert vs.is_visibility_code(code, system)
    found = vs.confidentiality(code, system)
    assert found is not None and found.visibility and found.system.url == A07_URL and found.display


@pytest.mark.parametrize("code", ["N", "R", "V"])
@pytest.mark.parametrize("system", [V3_CONF, "urn:oid:2.16.840.1.113883.5.25", "2.16.840.1.113883.5.25"])
def test_confidentiality_levels(code: str, system: str) -> None:
    found = vs.confidentiality(code, system)
    assert found is not None and not found.visibility
    assert not vs.is_visibility_code(code, system)
    assert found.coding()["system"] == V3_CONF


def test_visibility_code_under_the_confidentiality_system_is_unknown() -> None:
    assert vs.confidentiality("MASQUE_PS", V3_CONF) is None
    assert not vs.is_visibility_code("MASQUE_PS", V3_CONF)
    with pytest.raises(Unprocessable) as exc:
        vs.check_code("confidentiality", "MASQUE_PS", V3_CONF)
    assert _error(exc)["expression"] == ["DocumentReference.securityLabel[0].coding[0].code"]


# -- Facility type, practice setting, format ------------------------------------------------------

@pytest.mark.parametrize("system", [R02_URL, "urn:oid:1.2.250.1.71.4.2.4", "1.2.250.1.71.4.2.4"])
def test_facility_type(system: str) -> None:
    found = vs.facility_type("SA07", system)
    assert found is not None and found.display == "Cabinet individuel"
    assert vs.check_code("facility_type", "SA07", system).code == "SA07"
    assert vs.facility_type("SA11", system) is None  # not in J02


@pytest.mark.parametrize("system", [A01_URL, "urn:oid:1.2.250.1.213.1.1.4.9", "1.2.250.1.213.1.1.4.9"])
def test_practice_setting(system: str) -> None:
    found = vs.practice_setting("AMBULATOIRE", system)
    assert found is not None and found.display == "Ambulatoire"
    with pytest.raises(Unprocessable) as exc:
        vs.check_code("practice_setting", "NOWHERE", system)
    assert _error(exc)["expression"] == ["DocumentReference.context.practiceSetting.coding[0].code"]


def test_patient_codes_belong_to_facility_and_practice_sets() -> None:
    for lookup in (vs.facility_type, vs.practice_setting):
        found = lookup("EXP_PATIENT", "urn:oid:1.2.250.1.213.1.1.4.6")
        assert found is not None and found.system.name == "TRE_A00-ProducteurDocNonPS"


@pytest.mark.parametrize("system", [IHE_FORMAT, A11_URL, "urn:oid:1.3.6.1.4.1.19376.1.2.3"])
def test_generic_format_code(system: str) -> None:
    found = vs.format_code("urn:ihe:iti:xds:2017:mimeTypeSufficient", system)
    assert found is not None and found.system.url == A11_URL
    assert vs.format_code("urn:ihe:iti:xds-sd:pdf:2008", system) is not None


def test_ci_sis_format_codes() -> None:
    system = "https://mos.esante.gouv.fr/NOS/TRE_A06-FormatCodeComplementaire/FHIR/TRE-A06-FormatCodeComplementaire"
    assert vs.format_code("urn:asip:ci-sis:vsm:2012", system) is not None
    assert vs.format_code("urn:asip:ci-sis:vsm:2012", "urn:oid:1.2.250.1.213.1.1.4.2.282") is not None
    assert vs.format_code("urn:asip:ci-sis:vsm:2012", IHE_FORMAT) is None
    with pytest.raises(Unprocessable) as exc:
        vs.check_code("format", "urn:example:nope", system)
    assert _error(exc)["expression"] == ["DocumentReference.content[0].format.code"]


@pytest.mark.parametrize(("media_type", "code"), [
    ("application/pdf", "urn:ihe:iti:xds-sd:pdf:2008"), ("text/plain", "urn:ihe:iti:xds-sd:text:2008"),
    ("image/jpeg", "urn:ihe:iti-fr:xds-sd:jpeg:2010"), ("Application/PDF; name=x.pdf", "urn:ihe:iti:xds-sd:pdf:2008")])
def test_format_of_a_non_xml_body(media_type: str, code: str) -> None:
    found = vs.format_for_media_type(media_type)
    assert found is not None and found.code == code
    assert vs.format_for_media_type("application/zip") is None


def test_unknown_system_form_is_not_resolved() -> None:
    assert vs.code_system("urn:oid:1.2.3.4") is None
    assert vs.facility_type("SA07", "urn:oid:1.2.250.1.213.1.1.4.9") is None  # TRE_A01, not TRE_R02
    loinc = vs.code_system(f"urn:oid:{LOINC_OID}")
    assert loinc is not None and loinc.forms[:3] == ("http://loinc.org", f"urn:oid:{LOINC_OID}", LOINC_OID)
