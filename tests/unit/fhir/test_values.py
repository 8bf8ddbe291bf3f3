"""Value semantics: date ranges, number precision, normalised strings, the JSON codec."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carnet.errors import Invalid
from carnet.fhir import jsonio
from carnet.fhir.values import date_range, from_us, normalise, number_range, to_us


def us(*args: int) -> int:
    return to_us(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


@pytest.mark.parametrize(("text", "low", "high"), [
    ("2024", us(2024, 1, 1), us(2025, 1, 1) - 1),
    ("2024-02", us(2024, 2, 1), us(2024, 3, 1) - 1),
    ("2024-12", us(2024, 12, 1), us(2025, 1, 1) - 1),
    ("2024-02-29", us(2024, 2, 29), us(2024, 3, 1) - 1),
    ("2024-01-15T10:00:00+01:00", us(2024, 1, 15, 9), us(2024, 1, 15, 9, 0, 1) - 1),
    ("2024-01-15T10:00:00Z", us(2024, 1, 15, 10), us(2024, 1, 15, 10, 0, 1) - 1),
    ("2024-01-15T10:00:00.250Z", us(2024, 1, 15, 10, 0, 0, 250000), us(2024, 1, 15, 10, 0, 0, 251000) - 1),
])
def test_date_ranges(text: str, low: int, high: int) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize("text", ["", "24", "2024-13", "2024-02-30", "12/04/1980", "2024-01-01T25:00:00Z"])
def test_bad_dates_have_no_range(text: str) -> None:
    assert date_range(text) is None


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_instant_range_contains_the_instant(dt: datetime) -> None:
    text = f"{dt.year:04d}-" + dt.strftime("%m-%dT%H:%M:%S.%fZ")
    rng = date_range(text)
    assert rng is not None
    assert rng[0] == to_us(dt) == rng[1]
    assert from_us(rng[0]) == dt


def test_numbers_carry_their_implicit_precision() -> None:
    assert number_range("100") == (100.0, 99.5, 100.5)
    assert number_range("1.50") == (1.5, 1.495, 1.505)
    assert number_range(True) is None
    assert number_range("abc") is None


def test_normalise_ignores_case_and_accents() -> None:
    assert normalise("  Lefèvre ") == "lefevre"
    assert normalise("ÉMILIE") == "emilie"


def test_json_codec_keeps_decimals_and_rejects_duplicates() -> None:
    assert jsonio.dumps(jsonio.loads(b'{"a":1.50,"b":[1e3,0.1],"c":2}')) == b'{"a":1.50,"b":[1e3,0.1],"c":2}'
    assert jsonio.dumps(jsonio.loads(b'{"a":1.5}')) == b'{"a":1.5}'
    with pytest.raises(Invalid, match="duplicate"):
        jsonio.loads(b'{"a":1,"a":2}')
    with pytest.raises(Invalid):
        jsonio.loads(b'{"a":')
    big = b'{"a":123456789012345678901234567890}'
    assert jsonio.dumps(jsonio.loads(big)) == big


@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                                        max_size=4)))
def test_json_codec_round_trips_any_document(value: object) -> None:
    assert jsonio.loads(jsonio.dumps(value)) == value
