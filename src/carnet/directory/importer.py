"""Directory extracts turned into FHIR resources, in batches, idempotently.

Two sources are read:

* the public extraction of the ANS national directory ("annuaire santé", file
  ``PS_LibreAcces_Personne_activite``): one row per situation of practice, ``|``-separated with a
  trailing separator, UTF-8, no quoting. Columns are matched by name (case, accents and spacing
  ignored), so older and newer layouts both read; ``;``, ``,`` and tab separated files with the same
  headers are accepted too. Each row gives a Practitioner, a PractitionerRole and, when the row names
  a structure (FINESS site, SIRET, SIREN or national structure identifier), an Organization.
* a FHIR Bundle (any type) of Practitioner, PractitionerRole and Organization resources.

Ids are derived from the national identifiers (:mod:`carnet.directory.fhir`), and each batch is
compared with what is stored: only new or changed resources are written (``PUT`` by id), so importing
the same file twice reports everything unchanged the second time and creates no duplicate. Keys are
checked (:mod:`carnet.directory.keys`); a row that fails is rejected with the reason and the line, the
others go on.

Rows met again later in the same extract (an organisation shared by many practitioners, a
practitioner with two professions) add up: qualifications and specialties are merged with what is
stored, never dropped (*assumption*: an extract adds to the directory; it does not delete).
"""

from __future__ import annotations

import csv
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from carnet.directory import fhir as d
from carnet.directory import keys
from carnet.directory.keys import IdNatKind, PsIdNat
from carnet.errors import CarnetError, Invalid, Issue

Key = tuple[str, str]  # (resource type, id)
Lookup = Callable[[Sequence[Key]], Mapping[Key, dict[str, Any]]]
Validator = Callable[[dict[str, Any]], list[Issue]]
DIRECTORY_TYPES = ("Organization", "Practitioner", "PractitionerRole")
MAX_DETAILS = 10_000


# -- Reports -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rejection:
    line: int  # 1-based line of the CSV file, or entry number in a Bundle
    identifier: str  # the national identifier the row is about, when readable
    reason: str  # French / English


@dataclass
class ImportReport:
    rows: int = 0
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    rejected_rows: int = 0
    rejections: list[Rejection] = field(default_factory=list)  # the first MAX_DETAILS

    def reject(self, rejection: Rejection) -> None:
        self.rejected_rows += 1
        if len(self.rejections) < MAX_DETAILS:
            self.rejections.append(rejection)


@dataclass(frozen=True)
class Record:
    """One source row converted: its resources, or why it was rejected."""

    line: int
    identifier: str
    resources: tuple[dict[str, Any], ...] = ()
    reason: str | None = None


@dataclass
class Batch:
    bundle: dict[str, Any] | None  # a transaction of PUTs; None when nothing needs writing
    outcomes: list[tuple[Key, str]]  # (resource, "created" | "updated" | "unchanged")
    lines: list[tuple[int, str]]  # the rows it comes from


# -- Reading the ANS CSV extraction ------------------------------------------------------------------

def _column_key(name: str) -> str:
    bare = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return " ".join(bare.lower().replace("’", "'").split())


COLUMNS = {
    "id_type": "Type d'identifiant PP", "id": "Identifiant PP", "idnat": "Identification nationale PP",
    "title": "Code civilité d'exercice", "civility": "Code civilité", "family": "Nom d'exercice",
    "given": "Prénom d'exercice", "profession": "Code profession",
    "category": "Code catégorie professionnelle", "skill_type": "Code type savoir-faire",
    "skill": "Code savoir-faire", "skill_label": "Libellé savoir-faire",
    "mode": "Code mode exercice", "siret": "Numéro SIRET site", "siren": "Numéro SIREN site",
    "finess": "Numéro FINESS site", "finess_ej": "Numéro FINESS établissement juridique",
    "name": "Raison sociale site", "sign": "Enseigne commerciale site",
    "number": "Numéro Voie (coord. structure)", "repeat": "Indice répétition voie (coord. structure)",
    "street_type": "Libellé type de voie (coord. structure)", "street": "Libellé Voie (coord. structure)",
    "distribution": "Mention distribution (coord. structure)", "cedex": "Bureau cedex (coord. structure)",
    "postal_code": "Code postal (coord. structure)", "commune": "Code commune (coord. structure)",
    "city": "Libellé commune (coord. structure)", "phone": "Téléphone (coord. structure)",
    "email": "Adresse e-mail (coord. structure)", "structure_idnat": "Ancien identifiant de la structure",
}
_BY_HEADER = {_column_key(v): k for k, v in COLUMNS.items()}


def _delimiter(header: str) -> str:
    for candidate in ("|", ";", "\t"):
        if candidate in header:
            return candidate
    return ","


def csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column key: value}) for each data row; Invalid when the header lacks the columns
    a practitioner needs."""
    it = iter(lines)
    header = next(it, "")
    delimiter = _delimiter(header)
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if delimiter == "|" else csv.QUOTE_MINIMAL
    names = next(csv.reader([header], delimiter=delimiter, quoting=quoting))
    index = {_BY_HEADER[k]: i for i, k in enumerate(_column_key(n) for n in names) if k in _BY_HEADER}
    if "profession" not in index or "family" not in index or not (
            "idnat" in index or {"id_type", "id"} <= index.keys()):
        wanted = ", ".join(f"« {COLUMNS[k]} »" for k in ("idnat", "family", "profession"))
        raise Invalid(f"En-tête non reconnu : colonnes {wanted} attendues (extraction de l'annuaire santé) / "
                      f"Unrecognised header: columns {wanted} expected (national directory extraction)")
    reader = csv.reader(it, delimiter=delimiter, quoting=quoting)
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        yield line, {k: values[i].strip() for k, i in index.items() if i < len(values)}


def _ps(row: Mapping[str, str]) -> PsIdNat:
    idnat = row.get("idnat", "")
    from_parts = row.get("id_type", "") + row.get("id", "")
    ps = keys.parse_ps_idnat(idnat or from_parts, expression="Identification nationale PP")
    if idnat and from_parts and keys.parse_ps_idnat(from_parts).value != ps.value:
        raise Invalid(f"« Identification nationale PP » ({idnat}) ne correspond pas au type et à "
                      f"l'identifiant ({from_parts}) / \"Identification nationale PP\" ({idnat}) does not "
                      f"match the type and identifier ({from_parts})")
    if ps.kind not in (IdNatKind.RPPS, IdNatKind.ADELI):
        raise Invalid(f"PS_IdNat {ps.value} : seuls les types 8 (RPPS) et 0 (ADELI) sont importés / "
                      f"PS_IdNat {ps.value}: only types 8 (RPPS) and 0 (ADELI) are imported")
    return ps


def _address(row: Mapping[str, str]) -> d.Address:
    street = " ".join(x for x in (row.get("number"), row.get("repeat"), row.get("street_type"),
                                  row.get("street")) if x)
    lines = tuple(x for x in (street, row.get("distribution")) if x)
    city = row.get("city") or " ".join((row.get("cedex") or "").split()[1:]) or None
    return d.Address(lines, row.get("postal_code") or None, city, row.get("commune") or None, None)


def convert_row(line: int, row: Mapping[str, str]) -> Record:
    """The resources of one row of the ANS extraction, or its rejection."""
    identifier = row.get("idnat") or row.get("id_type", "") + row.get("id", "")
    try:
        ps = _ps(row)
        family = row.get("family", "")
        if not family:
            raise Invalid("« Nom d'exercice » vide / empty \"Nom d'exercice\"")
        code = keys.profession(row.get("profession", ""), expression="Code profession").code
        structure = None
        if any(row.get(k) for k in ("finess", "siret", "siren", "structure_idnat")):
            other = row.get("structure_idnat") or None
            if other and other[0] not in "1234":
                other = None  # ADELI-rank and other historical identifiers: not a structure id we check
            if row.get("finess") or row.get("siret") or row.get("siren") or other:
                structure = d.structure_idnat(finess=row.get("finess") or None,
                                              siret=row.get("siret") or None,
                                              siren=row.get("siren") or None, other=other)
        specialties = [(row["skill"], row.get("skill_label") or None)] if (
            row.get("skill_type") == "S" and row.get("skill")) else []
        practitioner = d.practitioner(ps, family=family, given=row.get("given") or None,
                                      prefix=row.get("civility") or None, suffix=row.get("title") or None,
                                      professions=[code], category=row.get("category") or "C")
        name = row.get("name") or row.get("sign") or None
        resources = [practitioner]
        if structure is not None:
            resources.append(d.organization(
                structure, name=name or f"Structure {structure.value}",
                finess_ej=row.get("finess_ej") or None, address=_address(row), phone=row.get("phone") or None,
                email=row.get("email") or None, alias=row.get("sign") or None))
        resources.append(d.practitioner_role(ps, code, structure=structure, structure_name=name,
                                             mode=row.get("mode") or None, specialties=specialties))
    except (CarnetError, ValueError) as exc:
        return Record(line, identifier, reason=exc.message if isinstance(exc, CarnetError) else str(exc))
    return Record(line, ps.value, tuple(resources))


def csv_records(lines: Iterable[str]) -> Iterator[Record]:
    for line, row in csv_rows(lines):
        yield convert_row(line, row)


# -- Reading a FHIR Bundle ---------------------------------------------------------------------------

def _identifier(resource: Mapping[str, Any], *systems: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") in systems and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return None


def _bundle_ps(resource: Mapping[str, Any]) -> PsIdNat:
    idnat = _identifier(resource, d.PS_IDNAT_SYSTEM)
    rpps = _identifier(resource, d.RPPS_SYSTEM)
    if idnat is None and rpps is None:
        raise Invalid("Practitioner sans PS_IdNat (urn:oid:1.2.250.1.71.4.2.1) ni RPPS / "
                      "Practitioner without a PS_IdNat (urn:oid:1.2.250.1.71.4.2.1) or RPPS")
    ps = keys.parse_ps_idnat(idnat, expression="Practitioner.identifier") if idnat else PsIdNat(
        IdNatKind.RPPS, keys.validate_rpps(rpps or "", expression="Practitioner.identifier"))
    if rpps is not None and (ps.kind is not IdNatKind.RPPS or keys.validate_rpps(rpps) != ps.identifier):
        raise Invalid(f"Le RPPS {rpps} ne correspond pas au PS_IdNat {ps.value} / RPPS {rpps} does not match "
                      f"PS_IdNat {ps.value}")
    return ps


def _bundle_structure(resource: Mapping[str, Any]) -> keys.StructureIdNat:
    idnat = _identifier(resource, d.STRUCTURE_IDNAT_SYSTEM)
    finess = _identifier(resource, d.FINESS_SYSTEM, "http://finess.sante.gouv.fr")
    siret = next((i["value"] for i in resource.get("identifier") or [] if isinstance(i, dict)
                  and i.get("system") == d.SIRENE_SYSTEM and len(str(i.get("value", ""))) == 14), None)
    if not (idnat or finess or siret):
        raise Invalid("Organization sans identifiant national de structure, FINESS ni SIRET / "
                      "Organization without a national structure identifier, FINESS or SIRET")
    return keys.parse_structure_idnat(idnat) if idnat else d.structure_idnat(finess=finess, siret=siret)


def _codes(concepts: Iterable[Any], system: str) -> list[str]:
    return [c["code"] for concept in concepts if isinstance(concept, dict)
            for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("system") == system]


def bundle_records(bundle: Mapping[str, Any]) -> Iterator[Record]:
    """Directory resources of a Bundle, with ids derived from their national identifiers and the
    references between them rewritten accordingly; other resource types are rejected."""
    if bundle.get("resourceType") != "Bundle" or not isinstance(bundle.get("entry", []), list):
        raise Invalid("Un Bundle FHIR est attendu / A FHIR Bundle is expected")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    aliases: dict[str, str] = {}  # fullUrl or Type/id in the file -> our Type/id
    practitioners: dict[str, PsIdNat] = {}
    structures: dict[str, keys.StructureIdNat] = {}
    early: dict[int, str] = {}
    for n, entry in enumerate(entries, start=1):
        resource = entry.get("resource") or {}
        rtype = resource.get("resourceType")
        try:
            if rtype == "Practitioner":
                ps = _bundle_ps(resource)
                ours = f"Practitioner/{d.practitioner_id(ps)}"
                practitioners[ours] = ps
            elif rtype == "Organization":
                structure = _bundle_structure(resource)
                ours = f"Organization/{d.organization_id(structure)}"
                structures[ours] = structure
            else:
                continue
        except (CarnetError, ValueError) as exc:
            early[n] = exc.message if isinstance(exc, CarnetError) else str(exc)
            continue
        for alias in (entry.get("fullUrl"), f"{rtype}/{resource.get('id')}" if resource.get("id") else None):
            if alias:
                aliases[alias] = ours
    for n, entry in enumerate(entries, start=1):
        resource = dict(entry.get("resource") or {})
        rtype = resource.get("resourceType", "?")
        if n in early:
            yield Record(n, _identifier(resource, d.PS_IDNAT_SYSTEM, d.STRUCTURE_IDNAT_SYSTEM) or rtype,
                         reason=early[n])
            continue
        try:
            yield _bundle_resource(n, resource, aliases, practitioners, structures)
        except (CarnetError, ValueError) as exc:
            yield Record(n, rtype, reason=exc.message if isinstance(exc, CarnetError) else str(exc))


def _rewrite(node: Any, aliases: Mapping[str, str]) -> None:
    """References to directory resources of the Bundle, by fullUrl or by their id in the file, now name
    them by our ids."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in aliases:
                node[key] = aliases[value]
            else:
                _rewrite(value, aliases)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, aliases)


def _bundle_resource(n: int, resource: dict[str, Any], aliases: Mapping[str, str],
                     practitioners: Mapping[str, PsIdNat],
                     structures: Mapping[str, keys.StructureIdNat]) -> Record:
    rtype = resource.get("resourceType")
    if rtype not in DIRECTORY_TYPES:
        raise Invalid(f"Type de ressource {rtype} hors annuaire / resource type {rtype} is not a directory "
                      "type")
    resource.pop("meta", None)
    _rewrite(resource, aliases)
    for code in _codes([q.get("code") for q in resource.get("qualification") or [] if isinstance(q, dict)]
                       + list(resource.get("code") or []), d.profession_system()):
        keys.profession(code)
    if rtype == "Practitioner":
        ps = _bundle_ps(resource)
        resource["id"] = d.practitioner_id(ps)
        return Record(n, ps.value, (resource,))
    if rtype == "Organization":
        idnat = _bundle_structure(resource)
        resource["id"] = d.organization_id(idnat)
        return Record(n, idnat.value, (resource,))
    ref = (resource.get("practitioner") or {}).get("reference")
    ours = aliases.get(ref or "", ref)
    if ours not in practitioners:
        raise Invalid(f"PractitionerRole : praticien « {ref} » absent du Bundle ou rejeté / "
                      f'PractitionerRole: practitioner "{ref}" is not in the Bundle or was rejected')
    ps = practitioners[str(ours)]
    resource["practitioner"] = {**resource["practitioner"], "reference": ours}
    org_ref = (resource.get("organization") or {}).get("reference")
    structure: keys.StructureIdNat | None = None
    if org_ref:
        org_ours = aliases.get(org_ref, org_ref)
        if org_ours not in structures:
            raise Invalid(f"PractitionerRole : organisation « {org_ref} » absente du Bundle ou rejetée / "
                          f'PractitionerRole: organization "{org_ref}" is not in the Bundle or was rejected')
        structure = structures[org_ours]
        resource["organization"] = {**resource["organization"], "reference": org_ours}
    professions = _codes(resource.get("code") or [], d.profession_system())
    modes = _codes(resource.get("code") or [], d.MODE_SYSTEM)
    resource["id"] = d.role_id(ps, professions[0] if professions else "",
                               structure.value if structure else None, modes[0] if modes else None)
    return Record(n, ps.value, (resource,))


# -- Batches -------------------------------------------------------------------------------------------

def _content(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


class DirectoryImport:
    """Batches of an import and its report. Post each batch's bundle before asking for the next one
    (each batch is compared with what the previous ones wrote), then call :meth:`applied` or
    :meth:`failed`."""

    def __init__(self, records: Iterable[Record], lookup: Lookup, *, batch_size: int = 200,
                 validator: Validator | None = None) -> None:
        self.records = records
        self.lookup = lookup
        self.batch_size = batch_size
        self.validator = validator
        self.report = ImportReport()
        self._counted: set[Key] = set()

    def _invalid(self, record: Record) -> str | None:
        if self.validator is None:
            return None
        for resource in record.resources:
            bad = [i for i in self.validator(resource) if i.severity in ("error", "fatal")]
            if bad:
                where = f" ({', '.join(bad[0].expression)})" if bad[0].expression else ""
                return f"{resource['resourceType']} : {bad[0].diagnostics}{where}"
        return None

    def batches(self) -> Iterator[Batch]:
        pending: dict[Key, dict[str, Any]] = {}
        lines: list[tuple[int, str]] = []
        for record in self.records:
            self.report.rows += 1
            reason = record.reason or self._invalid(record)
            if reason is not None:
                self.report.reject(Rejection(record.line, record.identifier, reason))
                continue
            for resource in record.resources:
                key = (resource["resourceType"], resource["id"])
                pending[key] = d.merge_lists(pending[key], resource) if key in pending else resource
            lines.append((record.line, record.identifier))
            if len(lines) >= self.batch_size:
                yield self._batch(pending, lines)
                pending, lines = {}, []
        if lines:
            yield self._batch(pending, lines)

    def _batch(self, pending: dict[Key, dict[str, Any]], lines: list[tuple[int, str]]) -> Batch:
        stored = self.lookup(list(pending))
        entries, outcomes = [], []
        for key, resource in pending.items():
            current = stored.get(key)
            if current is None:
                merged, outcome = resource, "created"
            else:
                merged = d.merge_lists(current, resource)
                outcome = "unchanged" if _content(current) == _content(merged) else "updated"
            outcomes.append((key, outcome))
            if outcome != "unchanged":
                request = {"method": "PUT", "url": f"{key[0]}/{key[1]}"}
                entries.append({"resource": merged, "request": request})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries} if entries else None
        return Batch(bundle, outcomes, lines)

    def applied(self, batch: Batch) -> None:
        """The batch was stored: count its resources (each once per import)."""
        for key, outcome in batch.outcomes:
            if key not in self._counted:
                self._counted.add(key)
                getattr(self.report, outcome)[key[0]] += 1

    def failed(self, batch: Batch, reason: str) -> None:
        """The batch's transaction was refused: its rows are rejected with the server's reason."""
        for line, identifier in batch.lines:
            self.report.reject(Rejection(line, identifier, reason))


def import_rows(records: Iterable[Record], lookup: Lookup, *, batch_size: int = 200,
                validator: Validator | None = None) -> DirectoryImport:
    """Batches (transaction Bundles) for ``records`` and the report they fill: see
    :class:`DirectoryImport`."""
    return DirectoryImport(records, lookup, batch_size=batch_size, validator=validator)
