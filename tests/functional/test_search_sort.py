"""Sorting on a string parameter with no criteria walks the parameter's value index: the order, the
pages and the resources without a value must be those of the general sort (each resource by its
lowest value ascending, its highest descending, then the ones without a value, ties by id)."""

from __future__ import annotations

from typing import Any

from tests.conftest import Fhir


def _patient(pid: str, *names: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "unknown", **({"name": list(names)} if names else {})}


PATIENTS = [
    _patient("s-a", {"family": "Zola", "given": ["Émile"]}),                 # emile … zola
    _patient("s-b", {"family": "Martin", "given": ["Bernard"]}, {"use": "usual", "family": "MARTIN"}),
    _patient("s-c", {"family": "Dupont", "given": ["Claire"]}),              # claire … dupont
    _patient("s-d"),                                                         # no name at all
    _patient("s-e", {"family": "Abel", "given": ["Yves"]}),                  # abel … yves
    _patient("s-f", {"family": "Aaron", "given": ["Zoé"]}),                  # deleted below
    _patient("s-g", {"family": "Dupont", "given": ["Claire"]}),              # ties s-c both ways
    _patient("s-h"),
]
ASCENDING = ["s-e", "s-b", "s-c", "s-g", "s-a", "s-d", "s-h"]
DESCENDING = ["s-a", "s-e", "s-b", "s-c", "s-g", "s-d", "s-h"]


def _pages(fhir: Fhir, query: str, count: int) -> list[str]:
    """Every page of a search, by its next links; asserts the links end."""
    ids: list[str] = []
    url: str | None = f"{query}&_count={count}"
    for _ in range(20):
        assert url is not None
        bundle = fhir.get(url).json()
        ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if url is None:
            return ids
    raise AssertionError("the pages never end")


def test_a_sort_on_names_without_criteria_pages_in_the_order_of_the_general_sort(fhir: Fhir) -> None:
    for p in PATIENTS:
        assert fhir.put(f"Patient/{p['id']}", json=p).status_code == 201
    assert fhir.delete("Patient/s-f").status_code in (200, 204)
    for query, expected in (("Patient?_sort=name", ASCENDING), ("Patient?_sort=-name", DESCENDING)):
        assert fhir.search_ids(f"{query}&_count=50") == expected
        for count in (1, 2, 3):
            assert _pages(fhir, query, count) == expected, (query, count)
        # a criterion that every patient meets takes the general sort: the same answer
        assert fhir.search_ids(f"{query}&gender=unknown&_count=50") == expected
    # a page that starts among the patients without a name
    assert fhir.search_ids("Patient?_sort=name&_count=1&_offset=6") == ["s-h"]
    assert fhir.search_ids("Patient?_sort=name&_count=5&_offset=7") == []
    page = fhir.get("Patient?_sort=family&_count=2&_offset=5").json()  # abel dupont dupont martin zola
    assert [e["resource"]["id"] for e in page["entry"]] == ["s-d", "s-h"]
    assert not any(link["relation"] == "next" for link in page["link"])
