"""Benchmark data: ~2 KB Patient and Observation bodies, and a concurrent transaction-Bundle loader.

The resources come from ``carnet.demo`` (synthetic, seeded, no real person), enriched to a
realistic size (a generated narrative, contacts, reference ranges, notes) for the CRUD mix.
The loader posts ``carnet.demo.patient_bundles`` over HTTP with a few concurrent clients and keeps
a uniform sample of the created patients (id, INS identifier, names, birth date), from which the
benchmarks build their queries.
"""

from __future__ import annotations

import html
import random
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from carnet import demo

XHTML = "http://www.w3.org/1999/xhtml"
LOCAL_MRN = "urn:oid:1.2.250.1.999.1.1"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _div(rows: list[tuple[str, str]], title: str) -> dict[str, str]:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return {"status": "generated",
            "div": f'<div xmlns="{XHTML}"><p><b>{html.escape(title)}</b></p><table>{cells}</table></div>'}


def patient_2k(rng: random.Random) -> dict[str, Any]:
    p = demo._patient(rng)
    name = p["name"][0]
    addr = p["address"][0]
    contact_family = rng.choice(demo.FAMILY)
    contact_given = rng.choice(demo.GIVEN_F + demo.GIVEN_M)
    p["identifier"].append({"use": "usual", "type": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        "system": LOCAL_MRN, "value": f"MRN{rng.randrange(10**8, 10**9)}"})
    p["telecom"].append({"system": "email", "use": "home",
                         "value": f"{name['given'][0].lower()}.{name['family'].lower()}@example.org"})
    p["maritalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                      "code": "M", "display": "Married"}]}
    p["contact"] = [{
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                      "code": "C", "display": "Emergency Contact"}]}],
        "name": {"family": contact_family, "given": [contact_given]},
        "telecom": [{"system": "phone", "value": f"07{rng.randrange(10**7, 10**8)}", "use": "mobile"}],
        "address": {"city": addr["city"], "postalCode": addr["postalCode"], "country": "FR"}}]
    p["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr-FR",
                                                     "display": "French (France)"}]}, "preferred": True}]
    p["text"] = _div([("Nom", f"{name['family'].upper()} {' '.join(name['given'])}"),
                      ("Sexe", p["gender"]), ("Naissance", p["birthDate"]),
                      ("INS", p["identifier"][0]["value"]),
                      ("Adresse", f"{addr['line'][0]}, {addr['postalCode']} {addr['city']}"),
                      ("Téléphone", p["telecom"][0]["value"]), ("Courriel", p["telecom"][1]["value"]),
                      ("Contact", f"{contact_family} {contact_given} (urgence)")], "Patient")
    return p


def observation_2k(rng: random.Random, subject: str, performer: str | None = None) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    when = datetime(2026, 11, 1, tzinfo=UTC) - timedelta(days=rng.randrange(0, 3650),
                                                          minutes=rng.randrange(0, 1440))
    o = demo._observation(rng, subject, performer or "Practitioner/unknown", when)
    if performer is None:
        o.pop("performer")
    coding = o["code"]["coding"][0]
    value = o.get("valueQuantity")
    shown = f"{value['value']} {value['unit']}" if value else "voir composants"
    o["identifier"] = [{"system": "urn:oid:1.2.250.1.999.1.2", "value": f"OBS{rng.randrange(10**9, 10**10)}"}]
    o["issued"] = o["effectiveDateTime"]
    o["interpretation"] = [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "N", "display": "Normal"}], "text": "Normal"}]
    o["method"] = {"coding": [{"system": "http://snomed.info/sct", "code": "258104002",
                               "display": "Measured (qualifier value)"}]}
    if value:
        lo, hi = value["value"] * 0.8, value["value"] * 1.2
        unit = {"unit": value["unit"], "system": demo.UCUM, "code": value["code"]}
        o["referenceRange"] = [{
            "low": {"value": round(lo, 1), **unit}, "high": {"value": round(hi, 1), **unit},
            "text": "Valeurs habituelles pour l'âge et le sexe"}]
    o["note"] = [{"text": "Mesure réalisée au repos, patient assis depuis cinq minutes; "
                          "appareil étalonné le mois précédent. Résultat transmis au médecin traitant."}]
    o["text"] = _div([("Examen", f"{o['code']['text']} ({coding['display']}, LOINC {coding['code']})"),
                      ("Date", o["effectiveDateTime"]), ("Résultat", shown), ("Statut", o["status"]),
                      ("Interprétation", "Normal"), ("Méthode", "Mesure directe"),
                      ("Commentaire", o["note"][0]["text"])], "Observation")
    return o


# -- the loader -------------------------------------------------------------------------------
@dataclass
class PatientSample:
    id: str
    ins: str
    family: str
    given: str
    birthdate: str
    observations: list[str] = field(default_factory=list)


@dataclass
class LoadStats:
    bundles: int = 0
    resources: int = 0
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    errors: int = 0
    first_error: str | None = None
    aborted: str | None = None
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else 0.0

        return {"bundles": self.bundles, "resources": self.resources, "seconds": round(self.seconds, 2),
                "resources_per_s": round(self.resources / self.seconds, 1) if self.seconds else 0.0,
                "bundle_p50_ms": pct(0.5), "bundle_p99_ms": pct(0.99),
                "client_cores": round(self.client_cpu_s / self.seconds, 3) if self.seconds else 0.0,
                "server_cores": round(self.server_cpu_s / self.seconds, 3) if self.seconds else 0.0,
                "errors": self.errors, "first_error": self.first_error, "aborted": self.aborted}


class Loader:
    """Posts transaction Bundles with ``clients`` concurrent HTTP clients (threads, one connection each)."""

    def __init__(self, base: str, *, clients: int = 4, per_bundle: int = 5, sample_size: int = 1000,
                 keep_all: bool = False, seed: int = 2026, disk: Path | None = None,
                 min_free_bytes: int = 20 * 2**30) -> None:
        self.base = base.rstrip("/") + "/fhir"
        self.clients = clients
        self.per_bundle = per_bundle
        self.sample_size = sample_size
        self.keep_all = keep_all
        self.seed = seed
        self.performers: list[str] = []
        self.sample: list[PatientSample] = []
        self.seen = 0
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self.disk = disk  # stop loading when the disk holding the data gets this full
        self.min_free_bytes = min_free_bytes

    def directory(self) -> list[str]:
        r = httpx.post(self.base, content=orjson.dumps(demo.directory_bundle(self.seed)), headers=FHIR_JSON,
                       timeout=120)
        r.raise_for_status()
        self.performers = [e["response"]["location"].rsplit("/_history", 1)[0] for e in r.json()["entry"]
                           if e["response"]["location"].startswith("Practitioner")]
        return self.performers

    def bundles(self, patients: int, stage: int) -> Iterator[dict[str, Any]]:
        return demo.patient_bundles(self.seed + 1000 * stage, patients, per_bundle=self.per_bundle,
                                    performers=self.performers or None)

    def _keep(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        current: PatientSample | None = None
        for req_e, resp_e in zip(request["entry"], response["entry"], strict=True):
            res = req_e["resource"]
            loc = resp_e["response"]["location"]
            rid = loc.split("/")[1]
            if res["resourceType"] == "Patient":
                current = None
                name = res["name"][0]
                candidate = PatientSample(rid, res["identifier"][0]["value"], name["family"],
                                          name["given"][0], res["birthDate"])
                with self._lock:  # reservoir sampling: a uniform sample of every patient loaded
                    self.seen += 1
                    if self.keep_all or len(self.sample) < self.sample_size:
                        self.sample.append(candidate)
                        current = candidate
                    else:
                        j = self.rng.randrange(self.seen)
                        if j < self.sample_size:
                            self.sample[j] = candidate
                            current = candidate
            elif current is not None:
                current.observations.append(rid)

    def load(self, patients: int, stage: int = 0, server_cpu: Any = None,
             progress_every: float = 60.0) -> LoadStats:
        stats = LoadStats()
        source = self.bundles(patients, stage)
        source_lock = threading.Lock()
        stop = threading.Event()
        t0 = time.perf_counter()
        c0 = time.process_time()
        s0 = server_cpu() if server_cpu else 0.0
        last = [t0]

        def worker() -> None:
            with httpx.Client(timeout=600, headers=FHIR_JSON) as client:
                while not stop.is_set():
                    if self.disk is not None and shutil.disk_usage(self.disk).free < self.min_free_bytes:
                        with self._lock:
                            stats.aborted = (f"stopped: less than {self.min_free_bytes / 2**30:.0f} GiB "
                                             f"free on the data disk")
                        stop.set()
                        return
                    with source_lock:
                        bundle = next(source, None)
                    if bundle is None:
                        return
                    body = orjson.dumps(bundle)
                    t = time.perf_counter()
                    try:
                        r = client.post(self.base, content=body)
                    except httpx.HTTPError as exc:
                        ok, text = False, repr(exc)
                    else:
                        ok, text = r.status_code == 200, r.text[:500]
                    took = (time.perf_counter() - t) * 1000
                    with self._lock:
                        stats.latencies_ms.append(took)
                        if not ok:
                            stats.errors += 1
                            stats.first_error = stats.first_error or text
                            if stats.errors >= 20:
                                stop.set()
                            continue
                        stats.bundles += 1
                        stats.resources += len(bundle["entry"])
                        now = time.perf_counter()
                        if now - last[0] >= progress_every:
                            last[0] = now
                            rate = stats.resources / (now - t0)
                            print(f"    ... {stats.resources:,} resources, {rate:,.0f}/s", flush=True)
                    self._keep(bundle, orjson.loads(r.content))

        with ThreadPoolExecutor(self.clients) as pool:
            futures = [pool.submit(worker) for _ in range(self.clients)]
            for f in futures:
                f.result()
        stats.seconds = time.perf_counter() - t0
        stats.client_cpu_s = time.process_time() - c0
        stats.server_cpu_s = (server_cpu() - s0) if server_cpu else 0.0
        return stats


# -- query paths ------------------------------------------------------------------------------
def q(value: str) -> str:
    return quote(value, safe="")


def query_paths(sample: list[PatientSample]) -> dict[str, list[str]]:
    """The four search benchmarks' queries, one per sampled patient (selective criteria)."""
    return {
        "patient_identifier": [f"/fhir/Patient?identifier={q(demo.INS_TEST_OID + '|' + p.ins)}"
                               for p in sample],
        "patient_name_birthdate": [f"/fhir/Patient?family={q(p.family)}&given={q(p.given)}"
                                   f"&birthdate={p.birthdate}" for p in sample],
        "observation_weight_sorted": [f"/fhir/Observation?subject=Patient%2F{p.id}"
                                      f"&code={q(demo.LOINC + '|29463-7')}&_sort=-date" for p in sample],
        "observation_recent": [f"/fhir/Observation?subject=Patient%2F{p.id}&date=ge2025-01-01&_count=50"
                               for p in sample],
    }


QUERY_TEXT = {
    "patient_identifier": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|<INS>",
    "patient_name_birthdate": "Patient?family=<F>&given=<G>&birthdate=<YYYY-MM-DD>",
    "observation_weight_sorted": "Observation?subject=Patient/<id>&code=http://loinc.org|29463-7&_sort=-date",
    "observation_recent": "Observation?subject=Patient/<id>&date=ge2025-01-01&_count=50",
}


def lua_str(value: str) -> str:
    """A Lua string literal (bytes outside printable ASCII as decimal escapes)."""
    out = ['"']
    for b in value.encode():
        if b in (0x22, 0x5C) or b < 0x20 or b > 0x7E:
            out.append(f"\\{b:03d}")
        else:
            out.append(chr(b))
    out.append('"')
    return "".join(out)


def lua_list(values: list[str]) -> str:
    return "{" + ",\n".join(lua_str(v) for v in values) + "}"
