"""Load and soak (issue 8): a steady mixed load for ``--minutes`` minutes; p99 stable, server RSS
growth < 10 %, no error.

Starts ``carnet serve --workers 2`` on a fresh data folder (or a fresh PostgreSQL database), seeds it
with ``carnet demo --patients N`` (patients with a qualified INS, their documents, care teams and
médecin traitant), and issues tokens with ``carnet token --as …``: a system client (the document
producer), the demo's libéral physician (every adult's médecin traitant) and nurse (care team), and
``--patient-tokens`` patients. Then it drives an **open-loop** load: request *i* is due at
``t0 + i / rate`` whatever happened to the earlier ones (a constant arrival rate, as from many
independent users), and its latency is measured from that due time, not from when it was sent, so a
stalled server shows in the latency instead of lowering the rate (no coordinated omission). The mix
(weights in ``MIX``):

- ``publish_iti65``: an ITI-65 transaction (SubmissionSet, DocumentReference, Binary with a
  ``--content-bytes`` PDF) by the system client;
- ``publish_iti105``: an ITI-105 Simplified Publish (DocumentReference with the PDF in
  ``attachment.data``) by the system client, authored by the médecin traitant;
- ``iti67_search``: ``DocumentReference?patient=…&status=current`` by a professional;
- ``iti68_retrieve``: ``GET`` of a document's ``attachment.url`` by a professional (documents
  published during the run join the pool);
- ``patient_documents``: the patient's own documents as the portal asks for them;
- ``patient_history``: the patient's own access history (``AuditEvent?patient=…&_sort=-date``);
- ``pro_patient_read``, ``pro_observations``: a professional reads the Patient and its latest
  observations.

Every few seconds the RSS of every process of the server's session (the supervisor and its workers)
is summed from ``/proc``. Per minute: p50/p99/max latency, counts by status, errors, server CPU, load
average. Before the soak, ``--ramp`` measures the capacity with short steps of increasing rate (the
highest rate served at ≥ 97 % of the offered rate with p50 under ``--ramp-p50-ms``); without
``--rate`` the soak runs at ``--fraction`` of that capacity.

    .venv/bin/python bench/soak.py --db sqlite --minutes 10 --rate 40
    .venv/bin/python bench/soak.py --db postgres --minutes 10 --rate 40
    .venv/bin/python bench/soak.py --db sqlite --minutes 2 --ramp          # capacity, then 40 %

Results in bench/results/soak-<db>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from common import REPO, Server, carnet_server, log, machine, python, save, session_pids, workdir
from mhd import Pdf, pdfs, submission, when_text

from carnet import demo_access, demo_documents, demo_people

SEED = 2026  # carnet demo's default seed: the directory (and so the professionals' ids) follows from it
MIX = {  # weight of each operation in the load
    "publish_iti65": 5,
    "publish_iti105": 5,
    "iti67_search": 20,
    "iti68_retrieve": 20,
    "patient_documents": 15,
    "patient_history": 10,
    "pro_patient_read": 10,
    "pro_observations": 15,
}
TARGET_RSS_GROWTH = 0.10
FHIR = {"Accept": "application/fhir+json"}


# -- setup ------------------------------------------------------------------------------------
def seed_demo(srv: Server, data: Path, patients: int) -> str:
    t0 = time.monotonic()
    r = subprocess.run(
        [
            python(),
            "-m",
            "carnet.cli.main",
            "demo",
            "--data",
            str(data),
            "--patients",
            str(patients),
            "--seed",
            str(SEED),
        ],
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"carnet demo failed:\n{r.stdout}\n{r.stderr}")
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("demo data loaded")), r.stdout[:300])
    log(f"{line} ({time.monotonic() - t0:.0f} s)")
    return line


def snapshot(work: Path) -> tuple[str, dict[str, str]]:
    """The last commit's ``src`` (``git archive HEAD``) in the run's folder, first on the server's
    ``PYTHONPATH``: the checkout is edited while the run lasts, and a server started on a half-edited
    file answers 500s that no commit has (answers (commit, extra environment))."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
    )
    dest = work / "source"
    dest.mkdir()
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    path = str(dest / "src") + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    return commit, {"PYTHONPATH": path}


def token(srv: Server, data: Path, who: str) -> str:
    r = subprocess.run(
        [python(), "-m", "carnet.cli.main", "token", "--data", str(data), "--as", who, "--ttl", "86400"],
        env={**srv.env, "CARNET_PORT": str(srv.port)},  # the issuer names the server
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"carnet token --as {who} failed:\n{r.stderr}")
    return r.stdout.strip()


def claims(jwt: str) -> dict[str, Any]:
    body = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def professionals() -> dict[str, tuple[str, str]]:
    """name → (Practitioner reference, national id) of the demo's médecin traitant and nurse."""
    directory = demo_people.directory(SEED)
    who = demo_access.roles(directory)
    found = {
        f"Practitioner/{e['resource']['id']}": e["resource"]
        for e in directory.bundle["entry"]
        if e["resource"]["resourceType"] == "Practitioner"
    }
    out = {}
    for name, key in (("physician", "10/L"), ("nurse", "60/L")):
        ids = found[who[key]]["identifier"]
        out[name] = (who[key], next(i["value"] for i in ids if i["system"] == "urn:oid:1.2.250.1.71.4.2.1"))
    return out


@dataclass
class World:
    tokens: dict[str, str]  # system, physician, nurse
    patients: list[tuple[str, str]]  # (Patient id, token) of the patients with a token
    all_patients: list[str]  # Patient ids of every adult with an INS (professionals read these)
    documents: list[str]  # attachment urls (relative to the server) to retrieve
    physician: str  # Practitioner reference


def prepare(srv: Server, data: Path, patient_tokens: int) -> World:
    pros = professionals()
    physician = pros["physician"][0]
    with httpx.Client(base_url=srv.base, timeout=60, headers=FHIR) as http:
        # the médecin traitant's patients: every adult with an INS (their INS gives their token)
        bundle = (
            http.get("/fhir/Patient", params={"general-practitioner": physician, "_count": "1000"})
            .raise_for_status()
            .json()
        )
    adults: list[tuple[str, str]] = []
    qualified: list[str] = []  # professionals see the records of qualified identities only (RECUP/VALI: 404)
    for e in bundle.get("entry") or []:
        patient = e["resource"]
        ins = [
            i["value"]
            for i in patient.get("identifier") or []
            if i.get("system", "").startswith("urn:oid:1.2.250.1.213.1.4.")
        ]
        if ins:
            adults.append((patient["id"], ins[0]))
            if '"QUAL"' in json.dumps(patient.get("extension") or []):
                qualified.append(patient["id"])
    chosen = adults[:patient_tokens]
    whos = [
        "system",
        *(f"practitioner:{nid}" for _, nid in pros.values()),
        *(f"patient:{m}" for _, m in chosen),
    ]
    with ThreadPoolExecutor(2) as pool:
        issued = dict(zip(whos, pool.map(lambda w: token(srv, data, w), whos), strict=True))
    tokens = {"system": issued["system"]}
    for name, (_, nid) in pros.items():
        tokens[name] = issued[f"practitioner:{nid}"]
    patients = []
    for pid, m in chosen:
        t = issued[f"patient:{m}"]
        if claims(t).get("patient") != pid:
            raise RuntimeError(f"the token of patient:{m} is not bound to Patient/{pid}: {claims(t)}")
        patients.append((pid, t))
    all_patients = qualified
    documents = []
    with httpx.Client(
        base_url=srv.base, timeout=60, headers={**FHIR, "Authorization": f"Bearer {tokens['physician']}"}
    ) as http:
        for pid in all_patients:
            b = (
                http.get(
                    "/fhir/DocumentReference",
                    params={"patient": f"Patient/{pid}", "status": "current", "_count": "100"},
                )
                .raise_for_status()
                .json()
            )
            for e in b.get("entry") or []:
                if e["resource"]["resourceType"] != "DocumentReference":
                    continue
                url = e["resource"]["content"][0]["attachment"]["url"]
                documents.append(url.split("/fhir/", 1)[1] if "/fhir/" in url else url)
    if not all_patients or not documents:
        raise RuntimeError("the demo data gave no patient or no document to read")
    return World(tokens, patients, all_patients, documents, physician)


# -- the load ---------------------------------------------------------------------------------
@dataclass
class Sample:
    due: float  # seconds since the start of the phase
    op: str
    status: int  # 0: transport error
    latency_ms: float  # from the due time to the end of the answer
    error: str = ""


@dataclass
class Phase:
    name: str
    rate: float
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    # (t, RSS bytes, processes, anonymous bytes, file-backed bytes)
    rss: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    late_starts: int = 0  # requests sent more than 100 ms after their due time (generator behind)
    max_in_flight: int = 0
    skipped: int = 0  # requests not sent because --max-in-flight were outstanding
    # (t, server CPU s, load 1 min, this generator's CPU s)
    cpu: list[tuple[float, float, float, float]] = field(default_factory=list)


class Load:
    def __init__(self, srv: Server, world: World, args: argparse.Namespace) -> None:
        self.srv, self.world, self.args = srv, world, args
        self.rng = random.Random(8)
        self.ops = list(MIX)
        self.weights = [MIX[o] for o in self.ops]
        self.docs: list[Pdf] = pdfs(8, args.content_bytes, seed=2028)
        self.counter = 0
        self.auth = {k: {"Authorization": f"Bearer {v}"} for k, v in world.tokens.items()}
        self.json_headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        self.today = date.today()

    def request(self, op: str) -> tuple[str, str, dict[str, str], Any, bytes | None]:
        """(method, path, headers, params, body) of one operation."""
        rng, w = self.rng, self.world
        pro = "physician" if rng.random() < 0.7 else "nurse"
        if op == "publish_iti65":
            self.counter += 1
            n = self.counter
            pid = rng.choice(w.all_patients)
            uid = f"urn:oid:1.2.250.1.999.8.{os.getpid()}.{n}"
            when = when_text(3000 + n % 300, n % 1440)
            body = submission(
                pid,
                f"{uid}.1",
                [(f"{uid}.2", self.docs[n % len(self.docs)], rng.choice(demo_documents.KINDS)[0], when)],
            )
            return (
                "POST",
                "/fhir",
                {**self.json_headers, **self.auth["system"]},
                None,
                json.dumps(body).encode(),
            )
        if op == "publish_iti105":
            self.counter += 1
            n = self.counter
            pid = rng.choice(w.all_patients)
            day = self.today - timedelta(days=rng.randrange(1, 900))
            body = demo_documents.document(
                SEED + 1,
                10_000 + n,
                pid,
                "Patient de test",
                w.physician,
                rng.choice(demo_documents.KINDS),
                day,
            )
            body["masterIdentifier"]["value"] = f"urn:uuid:{uuid.uuid4()}"
            return (
                "POST",
                "/fhir/DocumentReference",
                {**self.json_headers, **self.auth["system"]},
                None,
                json.dumps(body).encode(),
            )
        if op == "iti67_search":
            pid = rng.choice(w.all_patients)
            return (
                "GET",
                "/fhir/DocumentReference",
                {**FHIR, **self.auth[pro]},
                {"patient": f"Patient/{pid}", "status": "current"},
                None,
            )
        if op == "iti68_retrieve":
            return (
                "GET",
                "/fhir/" + rng.choice(w.documents),
                {"Accept": "*/*", **self.auth["physician"]},
                None,
                None,
            )
        if op == "patient_documents":
            pid, tok = rng.choice(w.patients)
            return (
                "GET",
                "/fhir/DocumentReference",
                {**FHIR, "Authorization": f"Bearer {tok}"},
                {
                    "patient": f"Patient/{pid}",
                    "status": "current",
                    "_sort": "-date",
                    "_include": "DocumentReference:author",
                    "_count": "20",
                },
                None,
            )
        if op == "patient_history":
            pid, tok = rng.choice(w.patients)
            return (
                "GET",
                "/fhir/AuditEvent",
                {**FHIR, "Authorization": f"Bearer {tok}"},
                {"patient": f"Patient/{pid}", "_sort": "-date", "_count": "20"},
                None,
            )
        if op == "pro_patient_read":
            return (
                "GET",
                f"/fhir/Patient/{rng.choice(w.all_patients)}",
                {**FHIR, **self.auth[pro]},
                None,
                None,
            )
        if op == "pro_observations":
            pid = rng.choice(w.all_patients)
            return (
                "GET",
                "/fhir/Observation",
                {**FHIR, **self.auth[pro]},
                {"subject": f"Patient/{pid}", "_sort": "-date", "_count": "20"},
                None,
            )
        raise ValueError(op)

    def learn(self, op: str, resp: httpx.Response) -> None:
        """Documents published during the run join the retrieve pool."""
        if resp.status_code not in (200, 201):
            return
        try:
            if op == "publish_iti65":
                for e in resp.json().get("entry") or []:
                    loc = (e.get("response") or {}).get("location", "")
                    if loc.startswith("Binary/"):
                        self.world.documents.append(loc.split("/_history")[0])
            elif op == "publish_iti105":
                url = resp.json()["content"][0]["attachment"]["url"]
                self.world.documents.append(url.split("/fhir/", 1)[1] if "/fhir/" in url else url)
        except (ValueError, KeyError, IndexError, TypeError):
            pass

    async def one(
        self, client: httpx.AsyncClient, phase: Phase, t0: float, due: float, op: str, inflight: list[int]
    ) -> None:
        method, path, headers, params, body = self.request(op)
        inflight[0] += 1
        phase.max_in_flight = max(phase.max_in_flight, inflight[0])
        status, error = 0, ""
        try:
            resp = await client.request(method, path, headers=headers, params=params, content=body)
            status = resp.status_code
            if status >= 400:
                error = resp.text[:300]
            else:
                self.learn(op, resp)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            inflight[0] -= 1
        phase.samples.append(Sample(round(due, 4), op, status, (time.monotonic() - t0 - due) * 1000, error))

    async def sampler(self, phase: Phase, t0: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            phase.rss.append((round(time.monotonic() - t0, 2), *server_rss(self.srv)))
            phase.cpu.append(
                (
                    round(time.monotonic() - t0, 2),
                    self.srv.cpu_seconds(),
                    os.getloadavg()[0],
                    time.process_time(),
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.args.rss_every)

    async def run(self, phase: Phase, report_every: float = 60.0) -> Phase:
        limits = httpx.Limits(
            max_connections=self.args.max_in_flight,
            max_keepalive_connections=64,
            # below uvicorn's 5-s keep-alive: a request never goes out on a connection the server is
            # closing at that instant (a client-side race, not an answer of the server)
            keepalive_expiry=2.0,
        )
        async with httpx.AsyncClient(
            base_url=self.srv.base, timeout=self.args.timeout, limits=limits
        ) as client:
            stop = asyncio.Event()
            t0 = time.monotonic()
            sampler = asyncio.create_task(self.sampler(phase, t0, stop))
            tasks: set[asyncio.Task[None]] = set()
            inflight = [0]
            total = int(phase.rate * phase.seconds)
            next_report = report_every
            for i in range(total):
                due = i / phase.rate
                delay = t0 + due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.1:
                    phase.late_starts += 1
                if due >= next_report:
                    progress(phase, next_report - report_every, next_report)
                    next_report += report_every
                op = self.rng.choices(self.ops, self.weights)[0]
                if inflight[0] >= self.args.max_in_flight:
                    phase.skipped += 1
                    phase.samples.append(Sample(round(due, 4), op, 0, 0.0, "skipped: too many in flight"))
                    continue
                task = asyncio.create_task(self.one(client, phase, t0, due, op, inflight))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks)
            stop.set()
            await sampler
            phase.rss.append((round(time.monotonic() - t0, 2), *server_rss(self.srv)))
            phase.cpu.append(
                (
                    round(time.monotonic() - t0, 2),
                    self.srv.cpu_seconds(),
                    os.getloadavg()[0],
                    time.process_time(),
                )
            )
        return phase


def server_rss(srv: Server) -> tuple[int, int, int, int]:
    """(sum of VmRSS over the server's processes, number of processes, sum of RssAnon, sum of
    RssFile): anonymous memory is the heap; file pages are mostly SQLite's memory-mapped database."""
    total = n = anon = filed = 0
    for pid in session_pids(srv.sid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        n += 1
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
                    elif line.startswith("RssFile:"):
                        filed += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total, n, anon, filed


# -- figures ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def window(samples: list[Sample], start: float, end: float) -> dict[str, Any]:
    chosen = [s for s in samples if start <= s.due < end]
    lat = [s.latency_ms for s in chosen if s.status and s.status < 400]
    statuses: dict[str, int] = {}
    for s in chosen:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    errors = [s for s in chosen if not s.status or s.status >= 400]
    return {
        "requests": len(chosen),
        "ok": len(lat),
        "errors": len(errors),
        "statuses": statuses,
        "p50_ms": round(pct(lat, 0.50), 2),
        "p99_ms": round(pct(lat, 0.99), 2),
        "max_ms": round(max(lat), 2) if lat else 0.0,
    }


def progress(phase: Phase, start: float, end: float) -> None:
    w = window(phase.samples, start, end)  # requests due in the window that have already answered
    rss = phase.rss[-1][1] / 2**20 if phase.rss else 0
    log(
        f"  {phase.name} {start / 60:4.1f}-{end / 60:4.1f} min: {w['requests']:,} answered, p50 "
        f"{w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms, max {w['max_ms']:.1f} ms, errors {w['errors']}, "
        f"RSS {rss:.1f} MiB, load {os.getloadavg()[0]:.2f}"
    )


def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def rss_at(rss: list[tuple[float, int, int, int, int]], t: float) -> tuple[float, int, int, int, int]:
    return min(rss, key=lambda s: abs(s[0] - t))


def summarise(phase: Phase, warmup: float) -> dict[str, Any]:
    minutes = []
    n = math.ceil(phase.seconds / 60)
    cpu = phase.cpu
    for m in range(n):
        w = window(phase.samples, m * 60, (m + 1) * 60)
        inside = [c for c in cpu if m * 60 <= c[0] <= (m + 1) * 60]
        if len(inside) >= 2:
            w["server_cores"] = round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 2)
            w["loadavg_1m"] = round(inside[-1][2], 2)
            w["generator_cores"] = round((inside[-1][3] - inside[0][3]) / (inside[-1][0] - inside[0][0]), 3)
            # the server's CPU per request: flat while the latency drifts means the wait is outside it
            w["server_cpu_ms_per_request"] = round(1000 * w["server_cores"] / phase.rate, 1)
        w["by_operation"] = {
            op: {
                k: v
                for k, v in window([x for x in phase.samples if x.op == op], m * 60, (m + 1) * 60).items()
                if k in ("requests", "p50_ms", "p99_ms")
            }
            for op in MIX
        }
        r = [s[1] for s in phase.rss if m * 60 <= s[0] < (m + 1) * 60]
        if r:
            w["rss_mib_end"] = round(r[-1] / 2**20, 1)
        w["minute"] = m + 1
        minutes.append(w)
    steady = [w for w in minutes if w["minute"] * 60 > warmup and w["ok"]]
    p99s = [w["p99_ms"] for w in steady]
    by_op = {op: window([s for s in phase.samples if s.op == op], warmup, phase.seconds) for op in MIX}
    errors: dict[str, int] = {}
    for s in phase.samples:
        if not s.status or s.status >= 400:
            key = f"{s.op} {s.status}: {s.error[:160]}"
            errors[key] = errors.get(key, 0) + 1
    first, last = rss_at(phase.rss, warmup), phase.rss[-1]
    t_first, rss_first, t_last, rss_last = first[0], first[1], last[0], last[1]
    rss_growth = (rss_last - rss_first) / rss_first if rss_first else 0.0
    xs = [float(w["minute"]) for w in steady]
    total = window(phase.samples, 0, phase.seconds)
    after = window(phase.samples, warmup, phase.seconds)
    out = {
        "rate": phase.rate,
        "seconds": phase.seconds,
        "requests": total["requests"],
        "errors": total["errors"],
        "statuses": total["statuses"],
        "p50_ms": after["p50_ms"],
        "p99_ms": after["p99_ms"],
        "max_ms": after["max_ms"],
        "achieved_rate": round(total["requests"] / phase.seconds, 2),
        "late_starts": phase.late_starts,
        "skipped": phase.skipped,
        "max_in_flight": phase.max_in_flight,
        "per_minute": minutes,
        "per_operation_after_warmup": by_op,
        "error_messages": errors,
        "p99_stability": {
            "minutes": [w["minute"] for w in steady],
            "max_over_min": round(max(p99s) / min(p99s), 3) if p99s and min(p99s) > 0 else None,
            "slope_ms_per_minute": round(slope(xs, p99s), 3),
            "slope_pct_of_mean_per_minute": round(100 * slope(xs, p99s) / statistics.fmean(p99s), 2)
            if p99s
            else None,
            "first_half_p99_ms": window(phase.samples, warmup, (warmup + phase.seconds) / 2)["p99_ms"],
            "second_half_p99_ms": window(phase.samples, (warmup + phase.seconds) / 2, phase.seconds)[
                "p99_ms"
            ],
        },
        "rss": {
            "at_s": t_first,
            "at_mib": round(rss_first / 2**20, 1),
            "end_s": t_last,
            "end_mib": round(rss_last / 2**20, 1),
            "growth_pct": round(100 * rss_growth, 2),
            "max_mib": round(max(s[1] for s in phase.rss) / 2**20, 1),
            "processes": phase.rss[-1][2],
            "anon_at_mib": round(first[3] / 2**20, 1),
            "anon_end_mib": round(last[3] / 2**20, 1),
            "anon_growth_pct": round(100 * (last[3] - first[3]) / first[3], 2) if first[3] else None,
            "file_at_mib": round(first[4] / 2**20, 1),
            "file_end_mib": round(last[4] / 2**20, 1),
            # (t s, RSS MiB, anonymous MiB, file-backed MiB)
            "samples": [
                (s[0], round(s[1] / 2**20, 1), round(s[3] / 2**20, 1), round(s[4] / 2**20, 1))
                for s in phase.rss
            ],
        },
    }
    out["server_cores"] = (
        round((cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0]), 2) if len(cpu) > 1 else None
    )
    out["verdict"] = {
        "rss_growth_under_10pct": rss_growth < TARGET_RSS_GROWTH,
        "no_errors": total["errors"] == 0,
    }
    return out


async def ramp(load: Load, args: argparse.Namespace) -> dict[str, Any]:
    """Steps of increasing rate; the capacity is the last step served at ≥ 97 % of its rate with p50
    under the bound (the generator falling behind or answers piling up are both saturation)."""
    steps = []
    capacity = 0.0
    for rate in (float(r) for r in args.ramp_rates.split(",")):
        phase = await load.run(Phase(f"ramp {rate:g}/s", rate, args.ramp_seconds), report_every=1e9)
        w = window(phase.samples, 2.0, phase.seconds)  # the step's first seconds: the rate settles
        end = max(s.due + s.latency_ms / 1000 for s in phase.samples)
        served = w["ok"] / max(1e-9, end - 2.0)
        ok = (
            w["errors"] == 0
            and served >= 0.97 * rate
            and w["p50_ms"] < args.ramp_p50_ms
            and not phase.skipped
        )
        steps.append(
            {
                "rate": rate,
                "served_per_s": round(served, 1),
                "p50_ms": w["p50_ms"],
                "p99_ms": w["p99_ms"],
                "errors": w["errors"],
                "skipped": phase.skipped,
                "within": ok,
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        )
        log(
            f"  ramp {rate:5g}/s: served {served:6.1f}/s, p50 {w['p50_ms']:.1f} ms, "
            f"p99 {w['p99_ms']:.1f} ms, "
            f"errors {w['errors']}, {'within' if ok else 'saturated'}"
        )
        if not ok:
            break
        capacity = rate
        load.srv.wait_idle(0.2, 60)
    return {
        "steps": steps,
        "capacity_per_s": capacity,
        "p50_bound_ms": args.ramp_p50_ms,
        "step_seconds": args.ramp_seconds,
    }


def print_table(out: dict[str, Any]) -> None:
    s = out["soak"]
    st, rss = s["p99_stability"], s["rss"]
    print(f"\nSoak ({out['db']}, {s['rate']:g} req/s for {s['seconds'] / 60:g} min, open loop)\n")
    print(
        "| minute | requests | p50 ms | p99 ms | max ms | errors | server cores | server CPU ms/request "
        "| generator cores | load 1 min | RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for w in s["per_minute"]:
        print(
            f"| {w['minute']} | {w['requests']:,} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} "
            f"| {w['max_ms']:.1f} "
            f"| {w['errors']} | {w.get('server_cores', '')} | {w.get('server_cpu_ms_per_request', '')} "
            f"| {w.get('generator_cores', '')} "
            f"| {w.get('loadavg_1m', '')} "
            f"| {w.get('rss_mib_end', '')} |"
        )
    print(
        f"\nTotal {s['requests']:,} requests, {s['errors']} errors, statuses {s['statuses']}; after warm-up "
        f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms."
    )
    print(
        f"p99 per minute (minutes {st['minutes'][0]}-{st['minutes'][-1]}): max/min {st['max_over_min']}, "
        f"trend {st['slope_ms_per_minute']:+.2f} ms/min ({st['slope_pct_of_mean_per_minute']:+.2f} %/min), "
        f"first half {st['first_half_p99_ms']:.1f} ms, second half {st['second_half_p99_ms']:.1f} ms."
    )
    print(
        f"Server RSS ({rss['processes']} processes): {rss['at_mib']:.1f} MiB at {rss['at_s']:.0f} s, "
        f"{rss['end_mib']:.1f} MiB at {rss['end_s']:.0f} s: {rss['growth_pct']:+.2f} % "
        f"(max {rss['max_mib']:.1f} MiB); anonymous {rss['anon_at_mib']:.1f} → {rss['anon_end_mib']:.1f} MiB "
        f"({rss['anon_growth_pct']:+.2f} %), file-backed {rss['file_at_mib']:.1f} → "
        f"{rss['file_end_mib']:.1f} MiB."
    )
    if "ramp" in out:
        r = out["ramp"]
        steps = ", ".join(
            f"{x['rate']:g}/s → {x['served_per_s']:g}/s p99 {x['p99_ms']:.0f} ms" for x in r["steps"]
        )
        print(f"Capacity (ramp, {r['step_seconds']:g}-s steps): {r['capacity_per_s']:g} req/s ({steps}).")
    print("\n| operation | requests | p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
    for op, w in s["per_operation_after_warmup"].items():
        print(f"| {op} | {w['requests']:,} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} | {w['errors']} |")
    for msg, n in list(s["error_messages"].items())[:10]:
        print(f"error ×{n}: {msg}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=None, help="requests/s (default: --fraction of the ramp)")
    ap.add_argument("--ramp", action="store_true", help="measure the capacity first")
    ap.add_argument("--ramp-rates", default="20,40,60,80,100,120,160,200,250,300")
    ap.add_argument("--ramp-seconds", type=float, default=20.0)
    ap.add_argument("--ramp-p50-ms", type=float, default=500.0, help="a step is saturated above this p50")
    ap.add_argument("--fraction", type=float, default=0.4, help="soak rate as a fraction of the capacity")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the stability figures")
    ap.add_argument("--patients", type=int, default=40, help="carnet demo --patients")
    ap.add_argument("--patient-tokens", type=int, default=6)
    ap.add_argument("--content-bytes", type=int, default=20 * 1024, help="size of each published PDF")
    ap.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--max-in-flight", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--env", action="append", default=[], metavar="CARNET_X=VALUE")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument(
        "--working-tree",
        action="store_true",
        help="run the checkout's src as it is (default: a copy of the last commit's)",
    )
    ap.add_argument("--name", default=None, help="results file name (default soak-<db>)")
    args = ap.parse_args()
    if args.rate is None and not args.ramp:
        ap.error("give --rate, or --ramp to choose it from the capacity")
    name = args.name or f"soak-{args.db}"
    out: dict[str, Any] = {
        "benchmark": "soak",
        "db": args.db,
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "keep"},
        "mix": MIX,
        "targets": {"rss_growth": TARGET_RSS_GROWTH, "errors": 0},
    }
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    with workdir(args.keep) as work:
        if not args.working_tree:
            out["source"], env = snapshot(work)
            extra_env.update(env)
            log(f"server on a copy of commit {out['source']}'s src")
        with carnet_server(args.db, work, extra_env=extra_env) as srv:
            data = work / "data"
            out["seed"] = seed_demo(srv, data, args.patients)
            world = prepare(srv, data, args.patient_tokens)
            out["world"] = {
                "patients_read": len(world.all_patients),
                "patients_with_token": len(world.patients),
                "documents_at_start": len(world.documents),
            }
            log(
                f"{len(world.all_patients)} patients to read, {len(world.patients)} patient tokens, "
                f"{len(world.documents)} documents"
            )
            srv.wait_idle(0.2, 120)
            load = Load(srv, world, args)
            rate = args.rate
            if args.ramp:
                log("capacity ramp")
                out["ramp"] = asyncio.run(ramp(load, args))
                save(name, out)
                if rate is None:
                    rate = round(args.fraction * out["ramp"]["capacity_per_s"], 1)
                    if not rate:
                        raise SystemExit(
                            "the first ramp step is already saturated: give --rate or lower --ramp-rates"
                        )
                srv.wait_idle(0.2, 120)
            assert rate
            log(f"soak: {rate:g} req/s for {args.minutes:g} min")
            out["loadavg_before_soak"] = os.getloadavg()
            phase = asyncio.run(load.run(Phase("soak", rate, args.minutes * 60)))
            out["loadavg_after_soak"] = os.getloadavg()
            out["soak"] = summarise(phase, min(args.warmup, phase.seconds / 2))
            out["documents_at_end"] = len(world.documents)
            lines = srv.log_path.read_text(errors="replace").splitlines() if srv.log_path.exists() else []
            out["server_log"] = {
                "lines": len(lines),
                "errors": [ln[:300] for ln in lines if "Error" in ln or "Traceback" in ln][:50],
            }
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save(name, out)
    print_table(out)
    log(f"results in {path}")


if __name__ == "__main__":
    main()
