"""Identity status (RNIV): the I/C facts, flags, strict-trait edits and the transition history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from itertools import product

import pytest

from carnet.errors import Unprocessable
from carnet.identity.status import (
    STRICT_TRAITS,
    DocumentType,
    Event,
    IdentityFlag,
    IdentityState,
    IdentityStatus,
    Traits,
    apply_traits_edit,
    edit_strict_traits,
    given_names_from_list,
    may_share_matricule,
    record_document_check,
    record_insi_verification,
    require_qualified,
    set_flag,
    status,
    strict_traits_changed,
)

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
AGENT = "agent-accueil-17"

TRAITS = Traits(birth_family_name="PAT-TROIS", birth_given_names=("DOMINIQUE", "MARIE-LOUISE"),
                birth_date=date(1979, 3, 28), sex="female", birthplace_code="51215")


def qualified() -> IdentityState:
    state = record_insi_verification(IdentityState(), AGENT, T0)
    return record_document_check(state, DocumentType.PASSPORT, AGENT, T0 + timedelta(minutes=1))


@pytest.mark.parametrize(("has_i", "has_c", "expected"), [
    (False, False, IdentityStatus.PROV), (True, False, IdentityStatus.RECUP),
    (False, True, IdentityStatus.VALI), (True, True, IdentityStatus.QUAL),
])
def test_status_follows_from_i_and_c(has_i: bool, has_c: bool, expected: IdentityStatus) -> None:
    state = IdentityState(has_i=has_i, has_c=has_c)
    assert status(state) is expected and state.status is expected


def test_labels() -> None:
    assert IdentityStatus.QUAL.label_fr == "Identité qualifiée"
    assert IdentityStatus.PROV.label_en == "Provisional identity"
    assert [d.value for d in DocumentType] == ["PA", "CN", "CS", "LE"]
    assert DocumentType.RESIDENCE_PERMIT.label_fr == "Titre de séjour"
    assert DocumentType.FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT.label_en == (
        "Family record book and a parent's identity document (minor)")
    assert IdentityFlag.DOUTEUSE.label_en == "doubtful identity"


@pytest.mark.parametrize("document", list(DocumentType))
def test_every_accepted_document_gives_c(document: DocumentType) -> None:
    state = record_document_check(IdentityState(), document, AGENT, T0)
    assert state.status is IdentityStatus.VALI and state.document_type is document


def test_document_type_given_as_a_code() -> None:
    assert record_document_check(IdentityState(), "CN", AGENT, T0).document_type is DocumentType.NATIONAL_ID_CARD
    with pytest.raises(Unprocessable) as caught:
        record_document_check(IdentityState(), "PC", AGENT, T0, expression="Patient.extension[0]")
    issue = caught.value.issues[0]
    assert issue.diagnostics.startswith("Type de pièce non accepté « PC » : attendu PA (Passeport), CN (Carte "
                                        "nationale d'identité), CS (Titre de séjour), LE (Livret de famille")
    assert 'Document type not accepted "PC": expected PA (Passport)' in issue.diagnostics
    assert issue.expression == ["Patient.extension[0]"]


def test_the_path_to_qualified_and_its_history() -> None:
    state = IdentityState()
    state = record_insi_verification(state, AGENT, T0, detail="lookup")
    assert state.status is IdentityStatus.RECUP
    state = record_document_check(state, DocumentType.NATIONAL_ID_CARD, "agent-2", T0 + timedelta(hours=1))
    assert state.status is IdentityStatus.QUAL
    first, second = state.history
    assert (first.who, first.when, first.what, first.from_status, first.to_status, first.detail) == (
        AGENT, T0, Event.INSI_VERIFICATION, IdentityStatus.PROV, IdentityStatus.RECUP, "lookup")
    assert (second.who, second.what, second.from_status, second.to_status, second.detail) == (
        "agent-2", Event.DOCUMENT_CHECK, IdentityStatus.RECUP, IdentityStatus.QUAL, "CN")


def test_c_then_i_also_qualifies() -> None:
    state = record_document_check(IdentityState(), DocumentType.PASSPORT, AGENT, T0)
    state = record_insi_verification(state, AGENT, T0)
    assert [t.to_status for t in state.history] == [IdentityStatus.VALI, IdentityStatus.QUAL]


def test_states_are_immutable_and_functions_pure() -> None:
    before = IdentityState()
    after = record_insi_verification(before, AGENT, T0)
    assert before == IdentityState() and before.history == () and after.has_i
    with pytest.raises(AttributeError):
        after.has_c = True  # type: ignore[misc]


@pytest.mark.parametrize(("start", "expected"), [
    (IdentityStatus.QUAL, IdentityStatus.VALI), (IdentityStatus.RECUP, IdentityStatus.PROV),
    (IdentityStatus.VALI, IdentityStatus.VALI), (IdentityStatus.PROV, IdentityStatus.PROV),
])
def test_editing_a_strict_trait_drops_i(start: IdentityStatus, expected: IdentityStatus) -> None:
    state = IdentityState(has_i=start in (IdentityStatus.RECUP, IdentityStatus.QUAL),
                          has_c=start in (IdentityStatus.VALI, IdentityStatus.QUAL))
    edited = edit_strict_traits(state, ["birth_date"], AGENT, T0)
    assert edited.status is expected
    step = edited.history[-1]
    assert (step.what, step.from_status, step.to_status, step.detail) == (
        Event.STRICT_TRAITS_EDIT, start, expected, "birth_date")


def test_a_new_insi_check_after_an_edit_requalifies() -> None:
    state = edit_strict_traits(qualified(), ["birth_family_name", "sex"], AGENT, T0 + timedelta(days=1))
    assert state.status is IdentityStatus.VALI and state.history[-1].detail == "birth_family_name,sex"
    state = record_insi_verification(state, AGENT, T0 + timedelta(days=2))
    assert state.status is IdentityStatus.QUAL
    assert [t.to_status for t in state.history] == [
        IdentityStatus.RECUP, IdentityStatus.QUAL, IdentityStatus.VALI, IdentityStatus.QUAL]


def test_no_change_records_nothing() -> None:
    state = qualified()
    assert edit_strict_traits(state, [], AGENT, T0) is state


def test_unknown_trait_names_are_refused() -> None:
    with pytest.raises(Unprocessable) as caught:
        edit_strict_traits(qualified(), ["birth_date", "used_name"], AGENT, T0)
    assert caught.value.issues[0].diagnostics == (
        "Trait strict inconnu : used_name (attendu : birth_family_name, birth_given_names, birth_date, sex, "
        "birthplace_code) / Unknown strict trait: used_name (expected: birth_family_name, birth_given_names, "
        "birth_date, sex, birthplace_code)")


@pytest.mark.parametrize("flag", list(IdentityFlag))
def test_flags_forbid_c(flag: IdentityFlag) -> None:
    state = set_flag(IdentityState(), flag, AGENT, T0)
    with pytest.raises(Unprocessable) as caught:
        record_document_check(state, DocumentType.PASSPORT, AGENT, T0, expression="Patient")
    issue = caught.value.issues[0]
    assert issue.diagnostics == (
        f"Contrôle par pièce d'identité refusé : l'identité est marquée « {flag.label_fr} » / "
        f'Identity document check refused: the identity is flagged "{flag.label_en}"')
    assert issue.expression == ["Patient"] and issue.code == "business-rule"


def test_flag_messages_in_both_languages() -> None:
    state = set_flag(IdentityState(), IdentityFlag.FICTIVE, AGENT, T0)
    with pytest.raises(Unprocessable, match=r'« identité fictive » / .*"fictitious identity"'):
        record_document_check(state, DocumentType.PASSPORT, AGENT, T0)


def test_setting_a_flag_withdraws_c_but_keeps_i() -> None:
    state = set_flag(qualified(), IdentityFlag.DOUTEUSE, AGENT, T0 + timedelta(hours=2))
    assert state.status is IdentityStatus.RECUP and state.document_type is None
    assert state.flags == {IdentityFlag.DOUTEUSE}
    step = state.history[-1]
    assert (step.what, step.from_status, step.to_status, step.detail) == (
        Event.FLAG_SET, IdentityStatus.QUAL, IdentityStatus.RECUP, "douteuse")
    # I is still allowed on a flagged identity
    assert record_insi_verification(set_flag(IdentityState(), IdentityFlag.FICTIVE, AGENT, T0), AGENT,
                                    T0).status is IdentityStatus.RECUP


def test_clearing_a_flag_allows_c_again_but_does_not_restore_it() -> None:
    flagged = set_flag(qualified(), IdentityFlag.DOUTEUSE, AGENT, T0)
    cleared = set_flag(flagged, IdentityFlag.DOUTEUSE, AGENT, T0, present=False)
    assert cleared.flags == frozenset() and cleared.status is IdentityStatus.RECUP
    assert cleared.history[-1].what is Event.FLAG_CLEARED
    assert record_document_check(cleared, DocumentType.PASSPORT, AGENT, T0).status is IdentityStatus.QUAL


def test_both_flags_must_be_cleared() -> None:
    state = set_flag(set_flag(IdentityState(), IdentityFlag.DOUTEUSE, AGENT, T0), IdentityFlag.FICTIVE, AGENT, T0)
    state = set_flag(state, IdentityFlag.DOUTEUSE, AGENT, T0, present=False)
    with pytest.raises(Unprocessable, match="identité fictive"):
        record_document_check(state, DocumentType.PASSPORT, AGENT, T0)


def test_redundant_flag_operations_record_nothing() -> None:
    flagged = set_flag(IdentityState(), IdentityFlag.FICTIVE, AGENT, T0)
    assert set_flag(flagged, IdentityFlag.FICTIVE, AGENT, T0) is flagged
    plain = IdentityState()
    assert set_flag(plain, IdentityFlag.DOUTEUSE, AGENT, T0, present=False) is plain
    assert set_flag(plain, "fictive", AGENT, T0).flags == {IdentityFlag.FICTIVE}  # type: ignore[arg-type]


def test_times_are_timezone_aware_and_stored_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    state = record_insi_verification(IdentityState(), AGENT, datetime(2025, 3, 1, 10, 30, tzinfo=paris))
    assert state.history[0].when == T0 and state.history[0].when.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        record_insi_verification(IdentityState(), AGENT, datetime(2025, 3, 1, 10, 30))
    with pytest.raises(ValueError, match="who made it"):
        record_insi_verification(IdentityState(), "  ", T0)


# -- Traits -----------------------------------------------------------------------------------------

def test_strict_traits_changed_names_each_changed_field() -> None:
    assert strict_traits_changed(TRAITS, TRAITS) == []
    changes = {
        "birth_family_name": "PAT-QUATRE", "birth_given_names": ("DOMINIQUE",), "birth_date": date(1979, 3, 29),
        "sex": "male", "birthplace_code": "51454",
    }
    for name in STRICT_TRAITS:
        new = Traits(**{**TRAITS.__dict__, name: changes[name]})
        assert strict_traits_changed(TRAITS, new) == [name]
    everything = Traits(**changes)  # type: ignore[arg-type]
    assert strict_traits_changed(TRAITS, everything) == list(STRICT_TRAITS)


def test_strict_traits_are_compared_exactly() -> None:
    assert strict_traits_changed(TRAITS, Traits(**{**TRAITS.__dict__, "birth_family_name": "Pat-Trois"})) == [
        "birth_family_name"]
    reordered = Traits(**{**TRAITS.__dict__, "birth_given_names": ("MARIE-LOUISE", "DOMINIQUE")})
    assert strict_traits_changed(TRAITS, reordered) == ["birth_given_names"]


def test_apply_traits_edit() -> None:
    new = Traits(**{**TRAITS.__dict__, "birthplace_code": "75056"})
    state = apply_traits_edit(qualified(), TRAITS, new, AGENT, T0)
    assert state.status is IdentityStatus.VALI and state.history[-1].detail == "birthplace_code"
    unchanged = qualified()
    assert apply_traits_edit(unchanged, TRAITS, TRAITS, AGENT, T0) is unchanged


def test_traits_validation() -> None:
    assert TRAITS.first_given_name == "DOMINIQUE"
    assert Traits("X", (), date(2000, 1, 1), "unknown").first_given_name is None
    with pytest.raises(Unprocessable, match='Sexe invalide « F » : attendu male, female, other, unknown / '
                                            'Invalid sex "F"'):
        Traits("X", ("Y",), date(2000, 1, 1), "F")
    with pytest.raises(Unprocessable, match="date de naissance"):
        Traits("X", ("Y",), datetime(2000, 1, 1, tzinfo=UTC), "male")
    with pytest.raises(Unprocessable, match="must be a list"):
        Traits("X", "Y Z", date(2000, 1, 1), "male")  # type: ignore[arg-type]
    with pytest.raises(Unprocessable, match="birth family name is empty"):
        Traits(" ", ("Y",), date(2000, 1, 1), "male")


def test_given_names_from_list() -> None:
    assert given_names_from_list("JEAN  STÉPHANE PATRICK") == ("JEAN", "STÉPHANE", "PATRICK")
    assert given_names_from_list("DOMINIQUE MARIE-LOUISE") == ("DOMINIQUE", "MARIE-LOUISE")


# -- Only QUAL identities may carry their matricule --------------------------------------------------

def test_only_qualified_identities_share_their_matricule() -> None:
    for has_i, has_c in product([False, True], repeat=2):
        state = IdentityState(has_i=has_i, has_c=has_c)
        assert may_share_matricule(state) is (has_i and has_c)
    require_qualified(qualified())
    with pytest.raises(Unprocessable) as caught:
        require_qualified(IdentityState(has_c=True), expression="DocumentReference.subject")
    assert caught.value.issues[0].diagnostics == (
        "Identité non qualifiée (statut VALI, identité validée) : le matricule INS ne peut pas être transmis / "
        "Identity not qualified (status VALI, validated identity): the INS matricule may not be exchanged")
    assert caught.value.issues[0].expression == ["DocumentReference.subject"]
