"""What Carnet reads from a CDA R2 header: plain frozen dataclasses, and the HL7 v3 ``TS`` timestamps.

A CDA ``TS`` is ``YYYY[MM[DD[HH[MM[SS[.F+]]]]]][+|-ZZZZ]``: its precision is how many digits it has.
:class:`CdaTime` keeps that precision and gives the instant it starts at as a timezone-aware
``datetime``. A time written without an offset is read in Europe/Paris time (*assumption*: the CI-SIS
documents are French and the offset is mandatory for times in its rules; the Paris reading is only a
fallback for documents that omit it). Offsets are ``+HHMM``; ``+HH`` and ``+HMM`` are read too, as
some published examples write ``+100`` for ``+0100``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from carnet.errors import Issue
from carnet.identity.nir import InsOid, Matricule

PARIS = ZoneInfo("Europe/Paris")
PRECISIONS = ("year", "month", "day", "hour", "minute", "second", "fraction")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,9}))?([+-]\d{2,4})?$")


@dataclass(frozen=True)
class CdaTime:
    """A CDA ``TS`` value: the instant its period starts at, and its precision."""

    text: str
    value: datetime  # timezone-aware start of the period the value covers
    precision: str  # one of PRECISIONS
    offset_given: bool  # False when read in Paris time for want of an offset
    fraction_digits: int = 0

    @classmethod
    def parse(cls, text: str) -> CdaTime | None:
        """The time, or None when ``text`` is not a valid ``TS``."""
        m = _TS.match(text.strip())
        if m is None:
            return None
        year, month, day, hour, minute, second, fraction, offset = m.groups()
        if (hour is not None and day is None) or (fraction is not None and second is None):
            return None
        digits = [year, month, day, hour, minute, second]
        count = sum(1 for d in digits if d is not None)
        precision = PRECISIONS[count - 1] if fraction is None else "fraction"
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        tz: timezone | ZoneInfo = PARIS
        if offset is not None:
            # +HHMM; +HH and +HMM are read too (published examples carry "+100" for "+0100").
            hhmm = offset[1:].rjust(4, "0") if len(offset) == 4 else offset[1:].ljust(4, "0")
            minutes = int(hhmm[:2]) * 60 + int(hhmm[2:])
            if int(hhmm[2:]) > 59 or minutes > 14 * 60:
                return None
            tz = timezone((1 if offset[0] == "+" else -1) * timedelta(minutes=minutes))
        try:
            value = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                             int(second or 0), micro, tzinfo=tz)
            parsed = cls(text.strip(), value, precision, offset is not None, len(fraction or ""))
            _ = parsed.end  # its period must end within datetime's range: "9999" does not
        except (ValueError, OverflowError):
            return None
        return parsed

    @property
    def end(self) -> datetime:
        """The instant just after the period the value covers (exclusive end)."""
        v = self.value
        if self.precision == "year":
            return v.replace(year=v.year + 1)
        if self.precision == "month":
            return v.replace(year=v.year + (v.month == 12), month=v.month % 12 + 1)
        steps = {"day": timedelta(days=1), "hour": timedelta(hours=1), "minute": timedelta(minutes=1),
                 "second": timedelta(seconds=1)}
        if self.precision in steps:
            return v + steps[self.precision]
        return v + timedelta(microseconds=10 ** (6 - min(self.fraction_digits, 6)))

    def covers(self, low: datetime, high: datetime) -> bool:
        """True when the period of this value and ``[low, high]`` (inclusive) overlap."""
        return self.value <= high and low < self.end

    def _offset(self) -> str:
        text = self.value.strftime("%z")  # +0100
        return f"{text[:3]}:{text[3:]}"

    def to_fhir(self) -> str:
        """FHIR ``dateTime`` at the same precision (times are given to the second, with their offset)."""
        v = self.value
        if self.precision == "year":
            return f"{v.year:04d}"
        if self.precision == "month":
            return f"{v.year:04d}-{v.month:02d}"
        if self.precision == "day":
            return v.date().isoformat()
        return self.to_fhir_instant()

    def to_fhir_instant(self) -> str:
        """FHIR ``instant``: to the second at least, with an offset (a date alone gives its midnight)."""
        v = self.value
        text = v.strftime("%Y-%m-%dT%H:%M:%S")
        if self.precision == "fraction":
            text += f".{v.microsecond:06d}".rstrip("0") if v.microsecond else ""
        return text + self._offset()

    def to_date(self) -> date:
        return self.value.date()


@dataclass(frozen=True)
class InstanceId:
    """A CDA ``II``: root (an OID or UUID) and optional extension."""

    root: str
    extension: str | None = None

    @property
    def unique_id(self) -> str:
        """The XDS uniqueId form: ``root^extension``, or the root alone (CI-SIS rule)."""
        return f"{self.root}^{self.extension}" if self.extension else self.root

    def identifier(self) -> dict[str, str]:
        """The FHIR Identifier: ``urn:oid:root`` + extension, or ``urn:ietf:rfc:3986`` + the root URI."""
        if self.extension:
            return {"system": f"urn:oid:{self.root}", "value": self.extension}
        if _UUID.match(self.root):
            return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{self.root.lower()}"}
        return {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{self.root}"}


@dataclass(frozen=True)
class Code:
    """A CDA ``CD``/``CE``: code, code system (OID), display name."""

    code: str
    code_system: str | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class PersonName:
    """A ``PN``. For the patient, CI-SIS qualifiers apply: ``family@BR`` birth name, ``family@CL`` (or
    ``SP``) used name, unqualified ``given`` the list of birth first names, ``given@BR`` the first one,
    ``given@CL`` the used first name."""

    birth_family: str | None = None
    used_family: str | None = None
    birth_given_names: tuple[str, ...] = ()
    first_birth_given: str | None = None
    used_given: str | None = None
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()

    @property
    def family(self) -> str | None:
        return self.birth_family or self.used_family

    @property
    def given(self) -> tuple[str, ...]:
        if self.birth_given_names:
            return self.birth_given_names
        first = self.first_birth_given or self.used_given
        return (first,) if first else ()

    def display(self) -> str:
        return " ".join([*self.given, self.used_family or self.birth_family or ""]).strip()


@dataclass(frozen=True)
class InsIdentifier:
    """A recordTarget id whose root is an INS OID (1.2.250.1.213.1.4.8, .9, .10, .11)."""

    value: str
    oid: InsOid
    matricule: Matricule | None  # None when the layout is wrong
    issues: tuple[Issue, ...]  # what parse_matricule says, key included (empty when valid)

    @property
    def key_valid(self) -> bool:
        return self.matricule is not None and self.matricule.key_valid

    def identifier(self) -> dict[str, str]:
        return {"system": self.oid.system, "value": self.value}


@dataclass(frozen=True)
class Place:
    insee_code: str | None = None  # birthplace/place/addr/county: COG commune (or 99xxx country) code
    city: str | None = None
    name: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Patient:
    ids: tuple[InstanceId, ...]
    ins: tuple[InsIdentifier, ...]
    name: PersonName | None
    gender: str | None  # administrativeGenderCode: F, M, UN
    birth_time: CdaTime | None
    birthplace: Place | None

    @property
    def fhir_gender(self) -> str | None:
        return {"F": "female", "M": "male", "UN": "unknown"}.get(self.gender or "")


@dataclass(frozen=True)
class Organization:
    ids: tuple[InstanceId, ...] = ()
    name: str | None = None
    industry_class: Code | None = None  # standardIndustryClassCode: the CI-SIS practice setting


@dataclass(frozen=True)
class Participant:
    """An author (assignedAuthor) or an authenticator (assignedEntity)."""

    ids: tuple[InstanceId, ...]
    name: PersonName | None
    profession: Code | None  # assignedAuthor/code: TRE_G15 profession (and specialty)
    time: CdaTime | None
    organization: Organization | None
    device: str | None = None  # assignedAuthoringDevice: software name (and model)
    function: Code | None = None  # author/functionCode

    @property
    def ps_idnat(self) -> str | None:
        """The national identifier of the professional (id with root 1.2.250.1.71.4.2.1)."""
        return next((i.extension for i in self.ids if i.root == "1.2.250.1.71.4.2.1" and i.extension), None)


@dataclass(frozen=True)
class ServiceEvent:
    code: Code | None
    low: CdaTime | None
    high: CdaTime | None
    # performer/assignedEntity/representedOrganization/standardIndustryClassCode
    practice_setting: Code | None


@dataclass(frozen=True)
class Encounter:
    low: CdaTime | None
    high: CdaTime | None
    facility_ids: tuple[InstanceId, ...]
    facility_type: Code | None  # location/healthCareFacility/code: TRE_R02 secteur d'activité
    location_name: str | None


@dataclass(frozen=True)
class NonXmlBody:
    media_type: str | None
    representation: str | None
    content: bytes  # decoded (B64) or encoded text (TXT)
    reference: str | None = None  # text/reference/@value when the content is outside the document


@dataclass(frozen=True)
class CdaHeader:
    id: InstanceId | None
    code: Code | None
    title: str | None
    effective_time: CdaTime | None
    confidentiality: Code | None
    language: str | None
    set_id: InstanceId | None
    version_number: int | None
    patient: Patient | None
    authors: tuple[Participant, ...]
    custodian: Organization | None
    legal_authenticator: Participant | None
    service_events: tuple[ServiceEvent, ...]
    encounter: Encounter | None
    practice_setting: Code | None
    template_ids: tuple[InstanceId, ...]
    structured: bool  # structuredBody (True) or nonXMLBody (False)
    non_xml_body: NonXmlBody | None
    problems: tuple[Issue, ...] = field(default=())  # what could not be read (bad TS, bad base64...)

    @property
    def unique_id(self) -> str | None:
        return self.id.unique_id if self.id else None

    @property
    def ins(self) -> InsIdentifier | None:
        """The patient's INS: a NIR identifier before an NIA one, in document order otherwise."""
        if self.patient is None or not self.patient.ins:
            return None
        return sorted(self.patient.ins, key=lambda i: i.oid.type_code.startswith("INS-NIA"))[0]

    @property
    def service_period(self) -> tuple[CdaTime | None, CdaTime | None]:
        """documentationOf/serviceEvent effectiveTime low and high (first event with a low)."""
        event = next((e for e in self.service_events if e.low is not None), None)
        return (event.low, event.high) if event else (None, None)
