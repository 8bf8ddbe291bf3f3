"""Run one fuzz harness for a number of executions, then minimise its corpus.

    .venv/bin/python bench/fuzz/run.py TARGET [--runs 1000000] [--reseed] [--update-corpus]

TARGET is ``cda``, ``cda_html``, ``matricule`` or ``search`` (``bench/fuzz/TARGET.py``). The harness runs
under libFuzzer (atheris, the ``fuzz`` extra: ``.venv/bin/pip install -e '.[fuzz]'``) on a copy of
``bench/fuzz/corpus/TARGET/`` (plus the seeds of ``seeds.py`` with ``--reseed``), with a time limit per
input (``-timeout``), a memory limit (``-rss_limit_mb``) and a largest input size (``-max_len``). A
crash (an unexpected exception, a property that does not hold, a timeout, the memory limit) stops
the run and leaves the input in ``bench/results/fuzz-crashes/``. With ``--update-corpus`` the
committed corpus is replaced by the minimised merge (``-merge=1`` into a fresh folder) of the run's
corpus. Results: ``bench/results/fuzz-TARGET.json`` (executions, seconds, executions per second,
coverage counters, corpus sizes, crashes), with the commit, the machine and the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: common.py
sys.path.insert(0, str(HERE))

import seeds  # noqa: E402
from common import RESULTS, log, machine, save  # noqa: E402

# largest input, seconds per input: a CDA is a document, a matricule a short value, a query a URL
LIMITS = {"cda": (8192, 10), "cda_html": (8192, 10), "matricule": (64, 5), "search": (256, 10)}
RSS_LIMIT_MB = 2048
CRASHES = RESULTS / "fuzz-crashes"


def _dict_flag(target: str) -> list[str]:
    path = HERE / f"{target.removesuffix('_html')}.dict"
    return [f"-dict={path}"] if path.exists() else []


def _files(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.iterdir() if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _stats(output: str) -> dict[str, Any]:
    """libFuzzer's counters: the last status line and -print_final_stats=1's lines."""
    out: dict[str, Any] = {}
    lines = [ln for ln in output.splitlines() if re.match(r"#\d+\s", ln)]
    if lines:
        last = lines[-1]
        for key, pattern in (("coverage_edges", r"cov: (\d+)"), ("coverage_features", r"ft: (\d+)"),
                             ("corpus_units", r"corp: (\d+)/"), ("rss_mb", r"rss: (\d+)Mb")):
            m = re.search(pattern, last)
            if m:
                out[key] = int(m.group(1))
    for m in re.finditer(r"^stat::(\w+):\s+(\d+)", output, re.MULTILINE):
        out[m.group(1)] = int(m.group(2))
    return out


def run(target: str, runs: int, seconds_max: int, reseed: bool, update: bool,
        extra: list[str]) -> dict[str, Any]:
    max_len, timeout = LIMITS[target]
    harness = HERE / f"{target}.py"
    committed = HERE / "corpus" / target
    # libFuzzer's -merge runs argv[0] again: the harness itself (executable, "#!/usr/bin/env python3"),
    # which must find this interpreter first
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = machine()
    with tempfile.TemporaryDirectory(prefix=f"carnet-fuzz-{target}-") as tmp:
        work = Path(tmp) / "corpus"
        work.mkdir()
        if committed.is_dir():
            for p in committed.iterdir():
                shutil.copy(p, work / p.name)
        if reseed:
            log(f"{seeds.write(target, work)} seeds added")
        before = _files(work)
        artifacts = Path(tmp) / "artifacts"
        artifacts.mkdir()
        cmd = [sys.executable, str(harness), f"-runs={runs}", f"-max_len={max_len}", f"-timeout={timeout}",
               f"-rss_limit_mb={RSS_LIMIT_MB}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
               *([f"-max_total_time={seconds_max}"] if seconds_max else []), *_dict_flag(target), *extra,
               str(work)]
        log(" ".join(cmd))
        start = time.monotonic()
        log_path = Path(tempfile.gettempdir()) / f"carnet-fuzz-{target}.log"  # libFuzzer's progress
        log(f"progress in {log_path}")
        with open(log_path, "w") as progress:
            proc = subprocess.run(cmd, cwd=HERE, env=env, stdout=progress, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - start
        output = log_path.read_text(errors="replace")
        stats = _stats(output)
        crashes = []
        for p in sorted(artifacts.iterdir()):
            CRASHES.mkdir(parents=True, exist_ok=True)
            kept = CRASHES / f"{target}-{p.name}"
            shutil.copy(p, kept)
            crashes.append({"file": str(kept.relative_to(HERE.parents[1])), "bytes": p.stat().st_size,
                            "input": p.read_bytes()[:300].decode("latin-1")})
        if crashes:
            tail = "\n".join(output.splitlines()[-60:])
            log(f"crash:\n{tail}")
        after = _files(work)
        merged = None
        if update and not crashes:
            fresh = Path(tmp) / "merged"
            fresh.mkdir()
            merge = subprocess.run([sys.executable, str(harness), "-merge=1", f"-max_len={max_len}",
                                    f"-timeout={timeout}", f"-rss_limit_mb={RSS_LIMIT_MB}", str(fresh),
                                    str(work)],
                                   cwd=HERE, env=env, capture_output=True, text=True, errors="replace")
            if merge.returncode != 0:
                raise RuntimeError(f"merge failed:\n{merge.stderr[-3000:]}")
            shutil.rmtree(committed, ignore_errors=True)
            shutil.copytree(fresh, committed)
            merged = _files(committed)
            log(f"corpus/{target}: {merged[0]} files, {merged[1]} bytes")
    executions = stats.get("number_of_executed_units", 0)
    result = {
        "benchmark": "fuzz", "target": target, "harness": f"bench/fuzz/{target}.py", "machine": started,
        "loadavg_at_end": os.getloadavg(),
        "command": " ".join(c.split("=", 1)[0] + "=…" if c.startswith(("-artifact_prefix", "-dict")) else
                            "CORPUS" if c == str(work) else Path(c).name if "/" in c else c for c in cmd),
        "runs_asked": runs, "seconds_asked": seconds_max or None, "executions": executions,
        "seconds": round(seconds, 1),
        "executions_per_second": round(executions / seconds, 1) if seconds else 0.0,
        "libfuzzer": stats, "exit_code": proc.returncode, "crashes": crashes,
        "corpus_before": {"files": before[0], "bytes": before[1]},
        "corpus_after_run": {"files": after[0], "bytes": after[1]},
        "corpus_committed": {"files": merged[0], "bytes": merged[1]} if merged else None,
        "limits": {"max_len": max_len, "timeout_s": timeout, "rss_limit_mb": RSS_LIMIT_MB},
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=sorted(LIMITS))
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=0, help="stop after this many seconds (-max_total_time)")
    ap.add_argument("--reseed", action="store_true", help="add the seeds of seeds.py to the run's corpus")
    ap.add_argument("--update-corpus", action="store_true", help="replace the committed corpus by the merge")
    ap.add_argument("--name", help="results file name (default fuzz-TARGET)")
    args, libfuzzer = ap.parse_known_args()  # any other -flag=value is libFuzzer's (-seed=1, -jobs=...)
    if any(not f.startswith("-") or f.startswith("--") for f in libfuzzer):
        ap.error(f"unknown arguments: {' '.join(libfuzzer)}")
    result = run(args.target, args.runs, args.seconds, args.reseed, args.update_corpus, libfuzzer)
    path = save(args.name or f"fuzz-{args.target}", result)
    log(f"{result['executions']:,} executions in {result['seconds']} s "
        f"({result['executions_per_second']:,} /s), {len(result['crashes'])} crash(es): {path}")
    if result["crashes"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
