"""Build the document metadata value sets (``src/carnet/documents/data/valuesets.json``).

Usage::

    python scripts/build_document_valuesets.py <fixtures>/fr-xds-valuesets \
        src/carnet/documents/data/valuesets.json

Inputs read from the ``fr-xds-valuesets`` folder (ANS "jeux de valeurs" of the CI-SIS, see its
PROVENANCE.md): the IHE SVS files of J07 typeCode, J02 healthcareFacilityTypeCode, J04
practiceSettingCode and J08 confidentialityCode, and the FHIR ValueSet of J06 classCode. Each value set
written records its version, dates, source file and SHA-256.

Three tables are not in that folder and are transcribed below, each with its source:

* ``ASS_X04-CorrespondanceType-Classe-CISIS``, the ANS association table that gives the class
  (TRE_A03) of every type code. The CI-SIS derives XDS classCode from the CDA ``code`` with it.
  Version 20250415120000 is used: it is the published version nearest to the J07 of the fixtures
  (20240927120000); the next one (20250623120000) only adds two types that this J07 does not have yet.
* ``JDV_J10-XdsFormatCode-CISIS`` version 1.1.0 (2024-04-26), the CI-SIS formatCode value set, plus
  IHE's generic ``urn:ihe:iti:xds:2017:mimeTypeSufficient`` (IHE FormatCode code system, used by MHD).
* ``ASS_A12-CorresMediaTypeCDANonStructure-XdsFormatCode-CISIS`` version 5.0.0: the formatCode of a
  CDA whose body is a ``nonXMLBody``, from its media type.

Derived facts:

* a type is **retired** when ASS_X04 knows it (it was a CI-SIS document type) but J07 no longer lists
  it: such codes (11493-4, 11528-7...) are refused for new documents;
* the class of a type is the ASS_X04 target; a J07 type that ASS_X04 does not map (101881-1 in this
  J07) has no class: the producer must supply one (*assumption*: no correspondence is invented).

J09 (eventCodeList) is not available as a file: no event value set is written.
"""

from __future__ import annotations

import hashlib
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SVS = "{urn:ihe:iti:svs:2008}"
NOS = "https://mos.esante.gouv.fr/NOS"
TEST_CONTENU = ("github ansforge/TestContenuCDA-3-0, commit 7cd489b39368809df9bcf2cfef5e5d6354438a02, "
                "folder jeuxDeValeurs/, copied verbatim")
TERMINOLOGY_IG = ("ANS Terminologies de Santé IG v1.10.0, Resource Content of the JDV_J06_XdsClassCode_CISIS "
                  "page, transcribed verbatim")


def nos(name: str) -> str:
    """The FHIR canonical URL the ANS SMT gives a NOS terminology (TRE_A03-ClasseDocument...)."""
    return f"{NOS}/{name}/FHIR/{name.replace('_', '-')}"


# key, name, OID (or the literal XDS codingScheme for the two ANS systems without one), FHIR URL, aliases
CODE_SYSTEMS: list[tuple[str, str, str, str, list[str]]] = [
    ("loinc", "LOINC", "2.16.840.1.113883.6.1", "http://loinc.org", []),
    ("tre_a05", "TRE_A05-TypeDocComplementaire", "1.2.250.1.213.1.1.4.12",
     nos("TRE_A05-TypeDocComplementaire"), []),
    ("tre_a12", "TRE_A12-NomenclatureASTM", "ASTM", nos("TRE_A12-NomenclatureASTM"), []),
    ("tre_a03", "TRE_A03-ClasseDocument", "1.2.250.1.213.1.1.4.1", nos("TRE_A03-ClasseDocument"), []),
    ("tre_a10", "TRE_A10-NomenclatureURN", "URN", nos("TRE_A10-NomenclatureURN"), []),
    ("v3_confidentiality", "HL7 v3 Confidentiality", "2.16.840.1.113883.5.25",
     "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", []),
    ("tre_a07", "TRE_A07-StatutVisibiliteDocument", "1.2.250.1.213.1.1.4.13",
     nos("TRE_A07-StatutVisibiliteDocument"), []),
    ("tre_a00", "TRE_A00-ProducteurDocNonPS", "1.2.250.1.213.1.1.4.6", nos("TRE_A00-ProducteurDocNonPS"), []),
    ("tre_r02", "TRE_R02-SecteurActivite", "1.2.250.1.71.4.2.4", nos("TRE_R02-SecteurActivite"), []),
    ("tre_a01", "TRE_A01-CadreExercice", "1.2.250.1.213.1.1.4.9", nos("TRE_A01-CadreExercice"), []),
    ("tre_a06", "TRE_A06-FormatCodeComplementaire", "1.2.250.1.213.1.1.4.2.282",
     nos("TRE_A06-FormatCodeComplementaire"), []),
    ("tre_a11", "TRE_A11-IheFormatCode", "1.3.6.1.4.1.19376.1.2.3", nos("TRE_A11-IheFormatCode"),
     ["http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"]),
    ("tre_a09", "TRE_A09-DICOMuidRegistry", "1.2.840.10008.2.6.1", nos("TRE_A09-DICOMuidRegistry"), []),
]
# Sources of the system table: the ANS terminology IG (ansforge/ig-terminlogie-de-sante, CodeSystem
# definitions: ^url and ^identifier), the IHE FormatCode IG and MHD examples for the IHE alias.

# -- ASS_X04-CorrespondanceType-Classe-CISIS, version 20250415120000 -------------------------------
X04_META = {
    "name": "ASS_X04-CorrespondanceType-Classe-CISIS",
    "oid": "1.2.250.1.213.1.1.4.249",
    "url": nos("ASS_X04-CorrespondanceType-Classe-CISIS"),
    "version": "20250415120000",
    "date": "2025-04-15T12:00:00+01:00",
    "source": {"origin": "ANS association table ASS_X04 (FHIR ConceptMap), transcribed from its definition "
                         "in github ansforge/ig-terminlogie-de-sante, DM/input/fsh/Done/GitHub/"
                         "ASS-X04-CorrespondanceType-Classe-CISIS.fsh, commit "
                         "1cc4d5563cac5ed60f43aa97d4a2b685ee3e2bb2"},
}
X04_LOINC = """
10213-7 10  11369-6 52  11488-4 10  11490-0 10  11493-4 10  11502-2 10  11505-5 10  11506-3 10
11526-1 10  11528-7 10  15507-7 10  15508-5 10  18748-4 31  18761-7 11  18776-5 44  24611-6 10
27899-4 10  28617-9 10  28653-4 10  29274-8 10  29550-1 43  29551-9 42  29554-3 10  34112-3 10
34120-6 10  34133-9 11  34749-2 10  34794-8 10  34842-5 11  34874-8 10  34875-5 10  34876-3 10
39256-3 10  46241-6 10  47420-5 10  51851-4 95  51969-4 10  52040-3 31  52063-5 42  52521-2 42
55115-0 42  56445-0 11  56446-8 95  57055-6 11  57057-2 11  57075-4 11  57828-6 42  57832-8 42
57833-6 42  59283-2 10  59284-0 95  60280-5 11  60568-3 10  60591-5 11  60593-1 43  61357-0 42
67851-6 10  68599-0 11  68814-3 10  68817-6 11  70004-7 10  74207-2 11  74465-6 90  75468-9 42
75482-0 10  75492-9 10  75497-8 10  75496-0 10  77436-4 10  77604-7 44  78341-5 11  78489-2 11
78513-9 10  78601-2 10  80565-5 45  80771-9 44  80788-3 44  80820-4 11  83836-7 11  83869-8 44
83901-9 11  83981-1 10  85208-7 10  86531-1 95  87273-9 52  89233-1 10  89235-6 11  88348-8 11
89601-9 52  93024-8 10  96349-6 10  96874-3 52  96173-0 52
"""
X04_TRE_A05 = """
ATTEST-ASS-COMPL 95  ATTEST-HEBGT 95  ATTEST-RESID 95  ATTEST-DROITS-AM 95  AUTORIS-SOINS 95
BIL_AUTO 10  CERT_DECL 52  DISP_AUT 43  EXPPAT_1 90  EXPPAT_2 90  EXPORT_DUI 11  EXPPAT_3 90
DOCPAT01 11  DOCPAT02 42  DOCPAT03 10  DOCPAT04 31  DOCPAT05 10  DOCPAT06 10  DOCPAT07 52  DOCPAT08 11
DOCPAT09 95  IMG-KOS 31  PROT_ALD 44  REMB 60  SYNTH 11  PRESC-AAT 42  PIECE-IDENTITE 95  PRESC-BIO 42
PRESC-KINE 42  PRESC-INF 42  PRESC-PEDI 42  PRESC-ORTHOPHO 42  PRESC-ORTHOPTIE 42  FEUILLE-DE-STYLE 99
FICHE-CONTACTS 95
"""
# ASTM E1762 "Full Document" (signature documents) maps to the TRE_A10 URN of IHE DSG.
X04_TRE_A12 = {"E1762": ("tre_a10", "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1")}

# -- JDV_J10-XdsFormatCode-CISIS 1.1.0 ----------------------------------------------------------------
J10_META = {
    "name": "JDV_J10-XdsFormatCode-CISIS",
    "oid": "1.2.250.1.213.1.1.5.465",
    "url": nos("JDV_J10-XdsFormatCode-CISIS"),
    "version": "1.1.0",
    "date": "2024-04-26T12:00:00+01:00",
    "source": {"origin": "ANS value set J10 (FHIR ValueSet compose), transcribed from github "
                         "ansforge/IG-terminologie-de-sante, "
                         "input/ontoserver/JDV/JDV_J10_XdsFormatCode_CISIS.json, "
                         "commit 0acfa841f0564eb2768c09d53c3efcc37b56d335; plus "
                         "urn:ihe:iti:xds:2017:mimeTypeSufficient from the IHE FormatCode code system "
                         "(IHE MHD)"},
}
J10_TRE_A06 = """
urn:ans:ci-sis:bio-ep-bio:2022|Prescription d'actes de biologie médicale
urn:ans:ci-sis:cse-mde:2023|Mesures de signes vitaux
urn:asip:ci-sis:aunv:2013|Fiche d'admission en unité neuro-vasculaire
urn:asip:ci-sis:avk:2009|Fiche patient à risque en cardiologie - Traitement AVK
urn:asip:ci-sis:crgm:2018|Compte rendu de génétique moléculaire
urn:asip:ci-sis:crrtn:2013|Compte-rendu de rétinographie
urn:asip:ci-sis:cr-anest:2020|Compte rendu d'anesthésie
urn:asip:ci-sis:cr-cpa:2020|Compte rendu de consultation pré-anesthésique
urn:asip:ci-sis:cse-cs24:2017|Certificat de santé du 24ème mois de l'enfant
urn:asip:ci-sis:cse-cs8:2017|Certificat de santé du 8ème jour de l'enfant
urn:asip:ci-sis:cse-cs9:2017|Certificat de santé du 9ème mois de l'enfant
urn:asip:ci-sis:d2lm-fidd:2017|Seconde lecture de mammographie - Fiche d'interprétation du bilan de \
diagnostic différé
urn:asip:ci-sis:d2lm-fin:2017|Seconde lecture de mammographie - Fiche d'interprétation nationale
urn:asip:ci-sis:dci:2009|Fiche patient à risque en cardiologie - Défibrillateur cardiaque interne
urn:asip:ci-sis:dlu:2015|Document de liaison d'urgence
urn:asip:ci-sis:eunv:2013|Fiche d'épisode de soin en unité neuro-vasculaire
urn:asip:ci-sis:fludr:2017|Fiche de liaison d'urgence - Retour des urgences vers l'EHPAD
urn:asip:ci-sis:fludt:2017|Fiche de liaison d'urgence - Transfert de l'EHPAD vers les urgences
urn:asip:ci-sis:dlu-fludr-dom:2022|Fiche de liaison d'urgence - Retour des urgences vers le domicile
urn:asip:ci-sis:dlu-fludt-dom:2022|Fiche de liaison d'urgence - Transfert du domicile vers les urgences
urn:asip:ci-sis:dlu-dlu-dom:2022|Document de liaison d'urgence DOM
urn:asip:ci-sis:frcp:2011|Fiche de réunion de concertation pluridisciplinaire
urn:asip:ci-sis:hr:2019|Données de remboursement
urn:asip:ci-sis:idap:2011|Information et directives anticipées du patient
urn:asip:ci-sis:ldl-ees:2017|Lettre de Liaison à l'entrée d'un établissement de santé
urn:asip:ci-sis:ldl-ses:2017|Lettre de Liaison à la sortie de l'établissement de santé
urn:ans:ci-sis:img-da:2022|Demande d'actes d'imagerie
urn:asip:ci-sis:pavc:2016|Compte-rendu de consultation d'évaluation pluri-professionnelle post AVC
urn:asip:ci-sis:ppp:2023|Plan personnalisé de prévention
urn:asip:ci-sis:pps-cancer:2017|Programme Personnalisé de Soins - Cancer
urn:asip:ci-sis:pps-paerpa:2017|Plan Personnalisé de Santé - PAERPA
urn:asip:ci-sis:ppv:2009|Fiche patient à risque en cardiologie - Porteur d'une prothèse valvulaire
urn:asip:ci-sis:psc:2009|Fiche patient à risque en cardiologie - Porteur d'un stimulateur cardiaque
urn:asip:ci-sis:sdm-mr:2017|Set de Données Minimum - Maladies Rares
urn:asip:ci-sis:sunv:2013|Fiche de sortie d'unité neuro-vasculaire
urn:asip:ci-sis:tap:2009|Fiche patient à risque en cardiologie - Traitement antiagrégant plaquettaire, stent
urn:asip:ci-sis:tlm-da:2020|Demande d'acte de télémédecine
urn:asip:ci-sis:vac:2019|Historique des vaccinations
urn:asip:ci-sis:vac-note:2021|Note de vaccination
urn:asip:ci-sis:vsm:2012|Synthèse médicale
urn:asipSante:modelesHorsProfils:2011|Document non référencé IHE ou CI-SIS
urn:asip:ci-sis:obp-sap:2023|Synthèse antepartum
urn:asip:ci-sis:obp-snm:2023|Synthèse Salle de Naissance Mère
urn:asip:ci-sis:obp-sne:2023|Synthèse Salle de Naissance Enfant
urn:asip:ci-sis:obp-scm:2023|Synthèse Suites de Couches Mère
urn:asip:ci-sis:obp-sem:2023|Synthèse Enfant en Maternité
urn:ans:ci-sis:feuille-de-style:2023|Feuille de style
urn:asip:ci-sis:dlu:2024|Document de liaison d'urgence
urn:asip:ci-sis:ft-su:2024|Fiche de transfert vers le service des urgences
urn:asip:ci-sis:fr-su:2024|Fiche de retour du service des urgences
urn:asip:ci-sis:export-dui:2023|Export du Dossier Usager informatisé
urn:asip:ci-sis:cva:2017|Carnet de vaccination électronique
"""
APSR = ["breast", "colon", "prostate", "thyroid", "lung", "skin", "kidney", "cervix", "endometrium",
        "ovary", "esophagus", "stomach", "liver", "pancreas", "testis", "urinary_bladder", "lip_oral_cavity",
        "pharynx", "salivary_gland", "larynx"]
J10_TRE_A11 = """
urn:ihe:iti:dsg:detached:2014|Signature détachée
urn:ihe:iti:dsg:enveloping:2014|Document signé avec une signature enveloppante
urn:ihe:iti:xds-sd:pdf:2008|Document à corps non structuré en Pdf/A-1
urn:ihe:iti:xds-sd:text:2008|Document à corps non structuré en texte brut
urn:ihe:iti-fr:xds-sd:jpeg:2010|Document à corps non structuré en format jpeg
urn:ihe:iti-fr:xds-sd:rtf:2010|Document à corps non structuré en format rtf
urn:ihe:iti-fr:xds-sd:tiff:2010|Document à corps non structuré en format tiff
urn:ihe:lab:xd-lab:2008|Compte rendu structuré d'examens de biologie médicale
urn:ihe:pharm:dis:2010|Dispensation médicamenteuse
urn:ihe:pcc:ips:2020|Synthèse médicale
urn:ihe:pharm:pre:2010|Prescription de médicaments
urn:ihe:palm:apsr:2016|CR d'anatomie et de cytologie pathologiques
urn:ihe:eyecare:geneyeevalcn:2014|CR de consultation en ophtalmologie
urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013|Compte-rendu d'imagerie médicale
urn:ihe:pat:apsr:all:2010|Compte rendu d'anatomie et de cytologie pathologiques - Modèle générique
""" + "".join(f"urn:ihe:pat:apsr:{organ}:2010|\n" for organ in APSR)
J10_OTHERS = [
    ("tre_a09", "1.2.840.10008.5.1.4.1.1.88.59",
     "Document Références d'objets d'un examen d'imagerie selon profil IHE RAD XDS-I"),
    ("tre_a10", "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "Digital Signature"),
]
MIME_TYPE_SUFFICIENT = ("tre_a11", "urn:ihe:iti:xds:2017:mimeTypeSufficient", "mimeType Sufficient")

# -- ASS_A12-CorresMediaTypeCDANonStructure-XdsFormatCode-CISIS 5.0.0 --------------------------------
A12 = {
    "name": "ASS_A12-CorresMediaTypeCDANonStructure-XdsFormatCode-CISIS",
    "url": f"{NOS}/ASS_A12_CorresMediaTypeCDANonStructure-XdsFormatCode-CISIS",
    "version": "5.0.0",
    "source": {"origin": "ANS association table ASS_A12 (FHIR ConceptMap), transcribed from github "
                         "ansforge/ig-terminlogie-de-sante, DM/input/fsh/Done/GitHub/"
                         "ASS-A12-CorresMediaTypeCDANonStructure-XdsFormatCode-CISIS.fsh, commit "
                         "20ba6c0326d611a921bdf64b65977559f3ccfda4"},
    "format_system": "tre_a11",
    "map": {"application/pdf": "urn:ihe:iti:xds-sd:pdf:2008", "text/plain": "urn:ihe:iti:xds-sd:text:2008",
            "text/rtf": "urn:ihe:iti-fr:xds-sd:rtf:2010", "image/jpeg": "urn:ihe:iti-fr:xds-sd:jpeg:2010",
            "image/tiff": "urn:ihe:iti-fr:xds-sd:tiff:2010"},
}


def pairs(text: str) -> dict[str, str]:
    words = text.split()
    return dict(zip(words[::2], words[1::2], strict=True))


def lines(text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for line in text.strip().splitlines():
        code, _, display = line.partition("|")
        out.append((code, display or None))
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Systems:
    def __init__(self) -> None:
        self.by_oid = {oid: key for key, _, oid, _, _ in CODE_SYSTEMS}
        self.by_url = {url: key for key, _, _, url, _ in CODE_SYSTEMS}

    def key(self, system: str) -> str:
        found = self.by_oid.get(system) or self.by_url.get(system)
        if found is None:
            raise SystemExit(f"unknown code system {system!r}: add it to CODE_SYSTEMS")
        return found


def read_svs(root: Path, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = root / "svs" / name
    vs = ET.parse(path).getroot().find(f"{SVS}ValueSet")
    if vs is None:
        raise SystemExit(f"{path}: no SVS ValueSet")
    nos_name = vs.get("urlFichier", "").rsplit("/", 1)[-1]  # JDV_J07-XdsTypeCode-CISIS
    meta = {
        "name": nos_name,
        "oid": vs.get("id"),
        "url": nos(nos_name),
        "version": vs.get("dateMaj"),
        "date": vs.get("revisionDate"),
        "effective": vs.get("effectiveDate"),
        "description": vs.get("description"),
        "source": {"file": f"fr-xds-valuesets/svs/{name}", "sha256": sha256(path), "origin": TEST_CONTENU},
    }
    concepts = [{"system": c.get("codeSystem", ""), "code": c.get("code", ""),
                 "display": c.get("displayName")} for c in vs.iter(f"{SVS}Concept")]
    return meta, concepts


def read_j06(root: Path, systems: Systems) -> dict[str, Any]:
    path = root / "fhir" / "ValueSet-JDV-J06-XdsClassCode-CISIS.json"
    vs = json.loads(path.read_text(encoding="utf-8"))
    concepts = [{"system": systems.key(inc["system"]), "code": c["code"], "display": c.get("display")}
                for inc in vs["compose"]["include"] for c in inc["concept"]]
    return {"name": vs["url"].split("/")[-1], "oid": vs["identifier"][0]["value"].removeprefix("urn:oid:"),
            "url": vs["url"], "version": vs["version"], "date": vs["date"],
            "description": vs.get("description"),
            "source": {"file": "fr-xds-valuesets/fhir/ValueSet-JDV-J06-XdsClassCode-CISIS.json",
                       "sha256": sha256(path), "origin": TERMINOLOGY_IG},
            "concepts": concepts}


def with_systems(concepts: list[dict[str, Any]], systems: Systems) -> list[dict[str, Any]]:
    return [{**c, "system": systems.key(c["system"])} for c in concepts]


def build_types(root: Path, systems: Systems) -> tuple[dict[str, Any], dict[str, Any]]:
    meta, raw = read_svs(root, "JDV_J07_XdsTypeCode_CISIS.xml")
    x04: dict[tuple[str, str], tuple[str, str]] = {}
    x04.update({("loinc", code): ("tre_a03", cls) for code, cls in pairs(X04_LOINC).items()})
    x04.update({("tre_a05", code): ("tre_a03", cls) for code, cls in pairs(X04_TRE_A05).items()})
    x04.update({("tre_a12", code): target for code, target in X04_TRE_A12.items()})
    concepts = []
    listed = set()
    for c in with_systems(raw, systems):
        key = (c["system"], c["code"])
        listed.add(key)
        target = x04.get(key)
        concepts.append({**c, "status": "active", "class_system": target[0] if target else None,
                         "class": target[1] if target else None})
    retired = sorted(k for k in x04 if k not in listed)
    for system, code in retired:
        cls_system, cls = x04[(system, code)]
        concepts.append({"system": system, "code": code, "display": None, "status": "retired",
                         "class_system": cls_system, "class": cls})
    unmapped = [c["code"] for c in concepts if c["class"] is None]
    mapping = {**X04_META, "entries": len(x04),
               "retired_types": [code for _, code in retired], "unmapped_types": unmapped}
    return {**meta, "concepts": concepts}, mapping


def build_formats() -> dict[str, Any]:
    concepts = [{"system": "tre_a06", "code": c, "display": d} for c, d in lines(J10_TRE_A06)]
    concepts += [{"system": "tre_a11", "code": c, "display": d} for c, d in lines(J10_TRE_A11)]
    concepts += [{"system": s, "code": c, "display": d} for s, c, d in J10_OTHERS]
    system, code, display = MIME_TYPE_SUFFICIENT
    concepts.append({"system": system, "code": code, "display": display, "origin": "IHE"})
    return {**J10_META, "concepts": concepts}


def dump(value: Any, indent: str = "") -> str:
    """Indented JSON with one line per concept or code system, so that diffs show what changed."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {dump(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = [inner + json.dumps(v, ensure_ascii=False) for v in value]
        return "[\n" + ",\n".join(rows) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def main(root: Path, out: Path) -> None:
    systems = Systems()
    types, mapping = build_types(root, systems)
    value_sets: dict[str, Any] = {"type": types, "class": read_j06(root, systems)}
    for key, name in (("confidentiality", "JDV_J08_XdsConfidentialityCode_CISIS.xml"),
                      ("facility_type", "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS.xml"),
                      ("practice_setting", "JDV_J04_XdsPracticeSettingCode_CISIS.xml")):
        meta, raw = read_svs(root, name)
        value_sets[key] = {**meta, "concepts": with_systems(raw, systems)}
    value_sets["format"] = build_formats()
    body = {
        "code_systems": [{"key": k, "name": n, "oid": o, "url": u, "aliases": a}
                         for k, n, o, u, a in CODE_SYSTEMS],
        "value_sets": value_sets,
        "type_class_map": mapping,
        "nonxml_format_map": A12,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    data = {
        "format": 1,
        "version": f"{types['version']}-{digest}",
        "generated_by": "scripts/build_document_valuesets.py",
        "note": "Generated file: edit the script or its inputs, then run it again.",
        **body,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump(data) + "\n", encoding="utf-8")
    counts = ", ".join(f"{k} {len(v['concepts'])}" for k, v in value_sets.items())
    print(f"{out}: version {data['version']}; {counts}; retired types {mapping['retired_types']}; "
          f"types without class {mapping['unmapped_types']}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
