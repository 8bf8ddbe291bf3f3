"""schemathesis against ``GET /openapi.json`` (the endpoints outside /fhir) on a live server, over
real HTTP: no 5xx, and every status, content type and JSON body as the document
declares. Deterministic and bounded here (``SCHEMATHESIS_EXAMPLES`` raises the count); the long run,
with schemathesis's coverage phase, is ``bench/fuzz_http.py``.

schemathesis runs as its command-line tool in a child process: loaded inside pytest, its modules
would go through pytest's assertion rewriting on every run (the plugin is disabled in pyproject).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LiveServer

EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "1")
API_TAGS = "^(service|ledger|oauth)$"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def schemathesis_command() -> list[str]:
    found = Path(sys.executable).with_name("schemathesis")
    if found.exists():
        return [str(found)]
    on_path = shutil.which("schemathesis")
    assert on_path, "schemathesis is not installed: pip install -e '.[dev]'"
    return [on_path]


def run_schemathesis(base_url: str, examples: str, phases: str, workdir: Path, timeout: float,
                     *extra: str) -> str:
    cmd = [*schemathesis_command(), "run", base_url + "/openapi.json", *extra, "--checks", CHECKS,
           "--mode", "positive",
           "--phases", phases, "--max-examples", examples, "--generation-deterministic",
           "--request-timeout", "20", "--max-redirects", "0", "--workers", "1", "--no-color",
           "--warnings", "off"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


# one database in the suite (the command's start and its generation cost seconds); both in the bench
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_endpoints_outside_fhir_answer_as_their_openapi_document_says(live: LiveServer,
                                                                          tmp_path: Path) -> None:
    # here the machine-facing endpoints (the sign-in and portal pages run in bench/fuzz_http.py)
    out = run_schemathesis(live.url, EXAMPLES, "fuzzing", tmp_path, 300, "--include-tag-regex", API_TAGS)
    generated = re.search(r"(\d+) generated, (\d+) passed", out)
    assert generated, out
    assert int(generated.group(1)) >= 19 and generated.group(1) == generated.group(2), out
