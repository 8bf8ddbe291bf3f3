"""Property: for random worlds (patients, a minor and a parent, professionals of several professions,
care teams, authorisations, blocks, médecins traitants, emergency oppositions, documents with random
types and visibility codes), what each person finds with a search equals what a deliberately simple
second reading of the rules (SPEC C4), written here and only here, says they may see.

The server's rules live in SQL predicates over derived tables; the oracle below reads the world as
a plain Python structure, rule by rule, in the words of the SPEC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carnet.auth.principal import AccessMode
from carnet.documents import valuesets
from tests.conftest import Fhir
from tests.functional.dicah_world import LAB_REPORT, PRESCRIPTION, VACCINATION, Actor, World

IMAGING = "18748-4"
TYPES = (LAB_REPORT, PRESCRIPTION, VACCINATION, IMAGING)
PROFESSIONS = ("10", "21", "60", "40")
LABELS = ("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX")
RELATIONS = ("none", "none", "care_team", "permit", "permit_full", "block", "care_team_and_block")
MATRIX = json.loads((Path(__file__).parents[2] / "src/carnet/policy/data/habilitations.json").read_text())


# -- the oracle: the rules as the SPEC states them ---------------------------------------------------
@dataclass
class PatientSpec:
    qualified: bool
    closed: bool
    opposed: bool
    relations: list[str]  # one per professional
    treating: int | None  # index of the médecin traitant


@dataclass
class DocSpec:
    patient: int
    type: str
    labels: frozenset[str]
    author: int | None  # index of the publishing professional


@dataclass
class WorldSpec:
    patients: list[PatientSpec]
    professions: list[str]
    strong: list[bool]
    docs: list[DocSpec]
    child_of_first: bool  # the last patient is a minor whose representative is the first
    emergency: tuple[int, int] | None  # (professional, patient) holding an emergency token
    facts: dict[str, object] = field(default_factory=dict)


def may_read_type(profession: str, doc_type: str) -> bool:
    entry = MATRIX["professions"].get(profession)
    if entry is None:
        return False
    if entry.get("all"):
        return True
    cls = valuesets.class_for_type(doc_type)
    return cls is not None and cls.code in entry.get("classes", [])


def professional_sees(w: WorldSpec, pro: int, doc: DocSpec, emergency: bool) -> bool:
    p = w.patients[doc.patient]
    relation = p.relations[pro]
    if not w.strong[pro]:  # A: strong authentication
        return False
    if p.closed or not p.qualified:  # D and I
        return False
    if "block" in relation:  # a blocked professional is always refused
        return False
    treating = p.treating == pro
    consent = treating or relation in ("care_team", "permit", "permit_full")
    if emergency and not p.opposed:
        consent = True
    if not consent:  # C
        return False
    if not may_read_type(w.professions[pro], doc.type):  # H
        return False
    if "MASQUE_PS" in doc.labels:
        return treating or relation == "permit_full" or doc.author == pro
    return True


def patient_sees(w: WorldSpec, who: int, doc: DocSpec) -> bool:
    if doc.patient == who:
        return "INVISIBLE_PATIENT" not in doc.labels
    last = len(w.patients) - 1
    if w.child_of_first and who == 0 and doc.patient == last:
        p = w.patients[last]
        return not p.closed and not doc.labels & {"INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"}
    return False


# -- random worlds ------------------------------------------------------------------------------------
@st.composite
def worlds(draw: st.DrawFn) -> WorldSpec:
    n_pros = draw(st.integers(2, 4))
    n_patients = draw(st.integers(1, 3))
    patients = []
    for _ in range(n_patients):
        relations = [draw(st.sampled_from(RELATIONS)) for _ in range(n_pros)]
        treating = draw(st.none() | st.integers(0, n_pros - 1))
        patients.append(PatientSpec(qualified=draw(st.integers(0, 3)) > 0,
                                    closed=draw(st.integers(0, 9)) == 0, opposed=draw(st.booleans()),
                                    relations=relations, treating=treating))
    docs = [DocSpec(draw(st.integers(0, n_patients - 1)), draw(st.sampled_from(TYPES)),
                    frozenset(draw(st.sets(st.sampled_from(LABELS), max_size=2))),
                    draw(st.none() | st.integers(0, n_pros - 1)))
            for _ in range(draw(st.integers(1, 6)))]
    emergency = draw(st.none() | st.tuples(st.integers(0, n_pros - 1), st.integers(0, n_patients - 1)))
    return WorldSpec(patients, [draw(st.sampled_from(PROFESSIONS)) for _ in range(n_pros)],
                     [draw(st.integers(0, 6)) > 0 for _ in range(n_pros)], docs,
                     child_of_first=n_patients >= 2 and draw(st.booleans()), emergency=emergency)


def build(world: World, w: WorldSpec) -> tuple[list[Actor], list[Actor], list[str]]:
    pros = [world.professional(f"pro{i}", prof, strong=w.strong[i]) for i, prof in enumerate(w.professions)]
    people: list[Actor] = []
    for i, p in enumerate(w.patients):
        if w.child_of_first and i == len(w.patients) - 1:
            people.append(world.minor(f"child{i}", people[0]) if p.qualified else world.patient(f"p{i}"))
        else:
            people.append(world.patient(f"p{i}", qualified=p.qualified))
    if w.child_of_first and not w.patients[-1].qualified:
        w.child_of_first = False  # an unqualified minor was built without a representative link
    for p, actor in zip(w.patients, people, strict=True):
        for pro, relation in zip(pros, p.relations, strict=True):
            if "care_team" in relation:
                world.care_team(actor, pro)
            if relation in ("permit", "permit_full"):
                world.authorise(actor, pro, full=relation == "permit_full")
            if "block" in relation:
                world.block(actor, pro)
        if p.treating is not None:
            world.treating(actor, pros[p.treating])
        if p.opposed:
            world.oppose_emergency(actor)
    ids = [world.document(people[d.patient], d.type, labels=tuple(sorted(d.labels)),
                          author=pros[d.author] if d.author is not None else None) for d in w.docs]
    for p, actor in zip(w.patients, people, strict=True):  # closing last: the record keeps its rules
        if p.closed:
            current = world.fhir.get(f"Patient/{actor.id}").json()
            current["active"] = False
            assert world.fhir.put(f"Patient/{actor.id}", json=current).status_code == 200
    return pros, people, ids


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(w=worlds())
def test_every_search_result_equals_the_simple_reading_of_the_rules(fhir: Fhir, w: WorldSpec) -> None:
    world = World(fhir)
    pros, people, ids = build(world, w)
    query = "DocumentReference?_count=100"
    for i, pro in enumerate(pros):
        expected = sorted(ids[k] for k, d in enumerate(w.docs) if professional_sees(w, i, d, False))
        assert world.search(pro, query) == expected, (i, w)
    for i, person in enumerate(people):
        expected = sorted(ids[k] for k, d in enumerate(w.docs) if patient_sees(w, i, d))
        assert world.search(person, query) == expected, (i, w)
    if w.emergency is not None:
        pro, patient = w.emergency
        expected = sorted(ids[k] for k, d in enumerate(w.docs)
                          if professional_sees(w, pro, d, d.patient == patient))
        found = world.search(pros[pro], query, mode=AccessMode.EMERGENCY, patient=people[patient].id,
                             reason="property test")
        assert found == expected, ("emergency", w)
