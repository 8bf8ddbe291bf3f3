"""Directory operations over the FHIR engine: loading an extract (``carnet directory import``)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from carnet.auth.principal import Principal
from carnet.config import Settings
from carnet.directory.importer import (
    Batch,
    ImportReport,
    Key,
    Record,
    bundle_records,
    csv_records,
    import_rows,
)
from carnet.errors import Invalid

LOOKUP_CHUNK = 500  # ids per search when comparing a batch with what is stored


@dataclass
class Source:
    path: Path
    kind: str  # "csv" | "bundle"
    total: int  # rows (CSV) or entries (Bundle), for progress
    records: Iterator[Record]


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _csv(path: Path) -> Iterator[Record]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            yield from csv_records(f)
    except UnicodeDecodeError as exc:
        raise Invalid(f"{path.name} n'est pas en UTF-8 (octet {exc.start}) / {path.name} is not UTF-8 "
                      f"(byte {exc.start})") from None


def open_source(path: Path) -> Source:
    """A directory extract: a FHIR Bundle (JSON) or the national directory's CSV extraction."""
    with path.open("rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        try:
            bundle = json.loads(path.read_text(encoding="utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid(f"JSON illisible : {exc} / Unreadable JSON: {exc}") from None
        if not isinstance(bundle, dict):
            raise Invalid("Un Bundle FHIR est attendu / A FHIR Bundle is expected")
        entries = bundle.get("entry")
        total = len(entries) if isinstance(entries, list) else 0
        return Source(path, "bundle", total, bundle_records(bundle))
    return Source(path, "csv", max(0, _count_lines(path) - 1), _csv(path))


def import_source(settings: Settings, engine: Engine, source: Source, *, batch_size: int = 200,
                  progress: Callable[[int], None] | None = None) -> ImportReport:
    """Load ``source`` through the FHIR engine in transactions of ``batch_size`` rows: each batch is
    validated and compared with what is stored, only new or changed resources are written. ``progress``
    is called with the number of rows handled since its previous call."""
    from carnet.fhir import jsonio
    from carnet.fhir.router import FhirRequest
    from carnet.fhir.validation import validate
    from carnet.wiring import build_router

    router = build_router(settings, engine)
    principal = Principal.system("carnet-directory-import")

    def lookup(keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        by_type: dict[str, list[str]] = defaultdict(list)
        for rtype, rid in keys:
            by_type[rtype].append(rid)
        found: dict[Key, dict[str, Any]] = {}
        for rtype, ids in by_type.items():
            for start in range(0, len(ids), LOOKUP_CHUNK):
                chunk = ids[start:start + LOOKUP_CHUNK]
                query = [("_id", ",".join(chunk)), ("_count", str(len(chunk)))]
                resp = router.handle(FhirRequest("GET", rtype, query, {}), principal)
                if resp.status != 200:
                    raise RuntimeError(f"directory lookup failed: {resp.json_bytes()[:500]!r}")
                for entry in jsonio.loads(resp.json_bytes()).get("entry") or []:
                    resource = entry["resource"]
                    found[(rtype, resource["id"])] = resource
        return found

    def post(batch: Batch) -> str | None:
        if batch.bundle is None:
            return None
        resp = router.handle(FhirRequest("POST", "", [], {}, jsonio.dumps(batch.bundle)), principal)
        if resp.status == 200:
            return None
        body = jsonio.loads(resp.json_bytes()) if resp.body is not None else {}
        return "; ".join(i.get("diagnostics", "") for i in body.get("issue") or []) or f"HTTP {resp.status}"

    job = import_rows(source.records, lookup, batch_size=batch_size, validator=validate)
    done = 0
    for batch in job.batches():
        reason = post(batch)
        if reason is None:
            job.applied(batch)
        else:
            job.failed(batch, f"transaction refusée / transaction refused: {reason}")
        if progress is not None:
            progress(job.report.rows - done)
            done = job.report.rows
    if progress is not None and job.report.rows > done:
        progress(job.report.rows - done)
    return job.report


def import_file(settings: Settings, engine: Engine, path: Path, *, batch_size: int = 200,
                progress: Callable[[int], None] | None = None) -> ImportReport:
    return import_source(settings, engine, open_source(path), batch_size=batch_size, progress=progress)


def describe(report: ImportReport, *, unit: str = "line", details: int = 20) -> list[str]:
    """The report as the command prints it (``unit``: "line" for CSV rows, "entry" for a Bundle)."""
    def counts(counter: dict[str, int]) -> str:
        return ", ".join(f"{n} {t}" for t, n in sorted(counter.items()) if n) or "none"

    lines = [f"{report.rows} rows read",
             f"created: {counts(report.created)}",
             f"updated: {counts(report.updated)}",
             f"unchanged: {counts(report.unchanged)}",
             f"rejected: {report.rejected_rows} row{'s' if report.rejected_rows != 1 else ''}"]
    for r in report.rejections[:details]:
        lines.append(f"  {unit} {r.line} ({r.identifier}): {r.reason}")
    if report.rejected_rows > details:
        lines.append(f"  ... and {report.rejected_rows - details} more")
    return lines
