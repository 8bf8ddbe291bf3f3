"""The INSi teleservice: its interface, its results, and a local reference implementation.

INSi is run by the national health insurance. Two operations matter here:

* ``lookup(traits)``: find the INS of a person from their traits;
* ``verify(matricule, oid, traits)``: check that a matricule and traits belong together.

Both answer one identity (with the authoritative traits), several, or none; when the service cannot
answer they raise :class:`InsiUnavailable`, and the caller must then change nothing.

Implementations are chosen by a configuration string given to :func:`load_insi`:

* ``local:<path>`` — :class:`LocalInsi`, backed by the JSON file at ``<path>``;
* ``<module>:<Class>`` — ``Class()`` imported from the dotted ``module``;
* ``<module>:<Class>:<argument>`` — ``Class(argument)``, the argument being everything after the
  second colon (so it may itself contain colons, e.g. a URL).

The data file of :class:`LocalInsi` is a JSON object ``{"identities": [...]}`` (or a bare list), each
entry ``{"matricule": "...", "oid": "1.2.250.1.213.1.4.10", "traits": {"birth_family_name": "...",
"birth_given_names": ["...", ...], "birth_date": "YYYY-MM-DD", "sex": "female",
"birthplace_code": "51215"}}``. A missing or unreadable file makes the service unavailable.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from carnet.errors import Unavailable, Unprocessable
from carnet.identity import nir
from carnet.identity.matching import normalise_name
from carnet.identity.status import Traits


class InsiUnavailable(Unavailable):
    """The teleservice could not answer (down, timed out, misconfigured). Nothing may be changed."""

    code = "transient"

    def __init__(self, reason_fr: str, reason_en: str, detail: str = "") -> None:
        super().__init__(f"Téléservice INSi indisponible : {reason_fr} / "
                         f"INSi teleservice unavailable: {reason_en}" + (f" ({detail})" if detail else ""))
        self.reason_fr = reason_fr
        self.reason_en = reason_en


@dataclass(frozen=True)
class InsiIdentity:
    matricule: str
    oid: str
    traits: Traits


@dataclass(frozen=True)
class InsiFound:
    """Exactly one identity: its authoritative matricule, OID and traits."""

    identity: InsiIdentity


@dataclass(frozen=True)
class InsiMultiple:
    """Several identities match; like the real service, none is disclosed."""

    count: int


@dataclass(frozen=True)
class InsiNotFound:
    reason: str = ""


InsiResult = InsiFound | InsiMultiple | InsiNotFound


@runtime_checkable
class InsiClient(Protocol):
    def lookup(self, traits: Traits) -> InsiResult: ...

    def verify(self, matricule: str, oid: str, traits: Traits) -> InsiResult: ...


# -- Matching rules of the reference implementation ------------------------------------------------

def _words(names: tuple[str, ...]) -> list[str]:
    return normalise_name(" ".join(names)).split()


def traits_match(query: Traits, known: Traits) -> bool:
    """The rule :class:`LocalInsi` applies, modelled on the real service: birth family name equal once
    normalised (case, accents, hyphens, apostrophes, spaces); the given names asked for are the first
    given names on record, in order; birth date and sex exact; birthplace compared only when given."""
    if normalise_name(query.birth_family_name) != normalise_name(known.birth_family_name):
        return False
    asked, recorded = _words(query.birth_given_names), _words(known.birth_given_names)
    if not asked or recorded[:len(asked)] != asked:
        return False
    if query.birth_date != known.birth_date or query.sex != known.sex:
        return False
    return not query.birthplace_code or (
        known.birthplace_code or "").upper() == query.birthplace_code.strip().upper()


class LocalInsi:
    """Reference INSi backed by a JSON file of known identities, re-read when the file changes.

    ``unavailable=True`` makes every call raise :class:`InsiUnavailable` (for tests and drills); so does a
    missing or malformed file.
    """

    def __init__(self, path: str | Path, *, unavailable: bool = False) -> None:
        self.path = Path(path)
        self.unavailable = unavailable
        self._cache: tuple[float, int, tuple[InsiIdentity, ...]] | None = None

    def _identities(self) -> tuple[InsiIdentity, ...]:
        if self.unavailable:
            raise InsiUnavailable("service désactivé", "service switched off")
        try:
            st = self.path.stat()
            if self._cache and self._cache[:2] == (st.st_mtime, st.st_size):
                return self._cache[2]
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InsiUnavailable(f"fichier de référence absent ({self.path.name})",
                                  f"reference file missing ({self.path.name})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InsiUnavailable(f"fichier de référence illisible ({self.path.name})",
                                  f"reference file unreadable ({self.path.name})") from exc
        identities = _parse_identities(raw, self.path.name)
        self._cache = (st.st_mtime, st.st_size, identities)
        return identities

    def lookup(self, traits: Traits) -> InsiResult:
        found = [i for i in self._identities() if traits_match(traits, i.traits)]
        if len(found) == 1:
            return InsiFound(found[0])
        if found:
            return InsiMultiple(len(found))
        return InsiNotFound("aucune identité ne correspond aux traits / no identity matches the traits")

    def verify(self, matricule: str, oid: str, traits: Traits) -> InsiResult:
        wanted, system = nir.compact(matricule), oid.removeprefix("urn:oid:").strip()
        same = [i for i in self._identities() if i.matricule == wanted and i.oid == system]
        if not same:
            return InsiNotFound("matricule inconnu pour cet OID / unknown matricule for this OID")
        found = [i for i in same if traits_match(traits, i.traits)]
        if len(found) == 1:
            return InsiFound(found[0])
        if found:
            return InsiMultiple(len(found))
        return InsiNotFound("les traits ne correspondent pas au matricule / "
                            "the traits do not match the matricule")


def _parse_identities(raw: Any, source: str) -> tuple[InsiIdentity, ...]:
    entries = raw.get("identities") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise InsiUnavailable(f"fichier de référence mal formé ({source}) : liste « identities » attendue",
                              f'malformed reference file ({source}): an "identities" list is expected')
    out = []
    for n, entry in enumerate(entries, start=1):
        try:
            t = entry["traits"]
            given = t["birth_given_names"]
            if isinstance(given, str):
                given = given.split()
            traits = Traits(birth_family_name=str(t["birth_family_name"]),
                            birth_given_names=tuple(str(g) for g in given),
                            birth_date=date.fromisoformat(t["birth_date"]), sex=str(t["sex"]),
                            birthplace_code=t.get("birthplace_code") or None)
            m = nir.parse_matricule(str(entry["matricule"]))
            oid = str(entry["oid"]).removeprefix("urn:oid:").strip()
            nir.check_oid(oid, production=False)
        except (KeyError, TypeError, ValueError, AttributeError, Unprocessable) as exc:
            detail = exc.message if isinstance(exc, Unprocessable) else f"{type(exc).__name__}: {exc}"
            raise InsiUnavailable(f"entrée {n} invalide dans {source}", f"invalid entry {n} in {source}",
                                  detail) from exc
        out.append(InsiIdentity(matricule=m.value, oid=oid, traits=traits))
    return tuple(out)


def load_insi(spec: str) -> InsiClient:
    """Build the INSi client named by a configuration string (see the module documentation)."""
    spec = spec.strip()
    if spec.startswith("local:"):
        path = spec[len("local:"):]
        if not path:
            raise ValueError("INSi configuration 'local:' needs a file path, e.g. local:data/insi.json")
        return LocalInsi(path)
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"INSi configuration {spec!r}: expected 'local:<path>', '<module>:<Class>' "
                         "or '<module>:<Class>:<argument>'")
    module_name, class_name = parts[0], parts[1]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"INSi configuration {spec!r}: cannot import module {module_name!r} "
                         f"({exc})") from exc
    factory = getattr(module, class_name, None)
    if factory is None or not callable(factory):
        raise ValueError(f"INSi configuration {spec!r}: {module_name} has no class {class_name!r}")
    client = factory(parts[2]) if len(parts) == 3 else factory()
    if not isinstance(client, InsiClient):
        raise ValueError(f"INSi configuration {spec!r}: {class_name} does not provide lookup() and verify()")
    return client
