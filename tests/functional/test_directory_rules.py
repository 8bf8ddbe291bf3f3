"""Directory identifiers are checked on every write (C2): a bad key is refused with where and why."""

from __future__ import annotations

from carnet.directory import fhir as dfhir
from carnet.directory import keys
from tests.conftest import Fhir


def test_bad_rpps_finess_and_ps_idnat_keys_are_refused_on_write(fhir: Fhir) -> None:
    rpps = keys.make_rpps("1099529223")
    bad_rpps = rpps[:-1] + str((int(rpps[-1]) + 1) % 10)
    ok = {"resourceType": "Practitioner", "identifier": [
        {"system": dfhir.RPPS_SYSTEM, "value": rpps}, {"system": dfhir.PS_IDNAT_SYSTEM, "value": "8" + rpps}],
        "name": [{"family": "Lefèvre"}]}
    assert fhir.post("Practitioner", json=ok).status_code == 201
    bad = dict(ok, identifier=[{"system": dfhir.RPPS_SYSTEM, "value": bad_rpps},
                               {"system": dfhir.PS_IDNAT_SYSTEM, "value": "8" + bad_rpps}])
    r = fhir.post("Practitioner", json=bad)
    assert r.status_code == 422
    issues = r.json()["issue"]
    assert [i["expression"] for i in issues] == [["Practitioner.identifier[0].value"],
                                                 ["Practitioner.identifier[1].value"]]
    assert "RPPS" in issues[0]["diagnostics"] and "Luhn" in issues[0]["diagnostics"]
    finess = keys.make_finess("76000001")
    bad_finess = finess[:-1] + str((int(finess[-1]) + 1) % 10)
    org = {"resourceType": "Organization", "name": "Centre hospitalier",
           "identifier": [{"system": dfhir.FINESS_SYSTEM, "value": bad_finess}]}
    r = fhir.post("Organization", json=org)
    assert r.status_code == 422 and "FINESS" in r.json()["issue"][0]["diagnostics"]
    org["identifier"][0]["value"] = finess
    assert fhir.post("Organization", json=org).status_code == 201
    # a Bundle is held to the same rules, atomically
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": dict(ok, name=[{"family": "Roux"}]), "request": {"method": "POST", "url": "Practitioner"}},
        {"resource": bad, "request": {"method": "POST", "url": "Practitioner"}}]}
    assert fhir.post("", json=tx).status_code == 422
    assert fhir.get("Practitioner?_summary=count").json()["total"] == 1
