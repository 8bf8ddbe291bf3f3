#!/usr/bin/env python3
"""Fuzz harness of the CDA R2 reader (``carnet.documents.cda``, ``cda_model``, ``cda_checks``).

The input is a CDA document's bytes, read as an MHD publication reads it. Properties, beyond
"no unexpected exception":

* a refusal is ``Invalid`` (``UnsafeXml`` included) or ``TooLarge``, with bilingual issues that name
  the attachment;
* a header that was read has only bilingual problems, and ``check_header`` (in production and not)
  gives bilingual issues only;
* the DocumentReference metadata derived from a header is JSON and agrees with that header:
  ``check_against_metadata(header, metadata_from_header(header))`` finds nothing.

Run: ``.venv/bin/python bench/fuzz/run.py cda`` (or this file with libFuzzer flags).
"""

from __future__ import annotations

import json

if __name__ == "__main__":
    from _fuzzing import instrumented

    instrumented("carnet.documents.cda")

from _fuzzing import check_error, fuzz, is_bilingual, require

from carnet.documents import cda
from carnet.errors import Invalid, Issue, TooLarge

EXPRESSION = "DocumentReference.content[0].attachment"
MAX_BYTES = 1 << 20  # the fuzzer's inputs are far smaller; keeps the size refusal reachable


def _bilingual_issues(issues: list[Issue], what: str) -> None:
    for issue in issues:
        require(is_bilingual(issue.diagnostics), f"{what}: message not bilingual: {issue.diagnostics!r}")
        require(issue.severity in ("fatal", "error", "warning", "information"), f"{what}: severity")


def read(data: bytes) -> cda.CdaHeader | None:
    """The header of ``data``, or None when it was refused as documented."""
    try:
        return cda.read_header(data, max_bytes=MAX_BYTES, expression=EXPRESSION)
    except (Invalid, TooLarge) as exc:
        check_error(exc, (Invalid, TooLarge), bilingual=True, expression=[EXPRESSION])
        return None


def check(data: bytes) -> None:
    header = read(data)
    if header is None:
        return
    _bilingual_issues(list(header.problems), "header problems")
    for production in (False, True):
        _bilingual_issues(cda.check_header(header, production=production, expression=EXPRESSION),
                          "check_header")
    metadata = cda.metadata_from_header(header)
    json.dumps(metadata)  # a DocumentReference fragment: JSON only
    against = cda.check_against_metadata(header, metadata)
    require(not against, f"the metadata derived from the header contradicts it: {against}")


if __name__ == "__main__":
    fuzz(check)
