"""Shared machinery of the benchmarks: servers, databases, the wrk generator, CPU accounting.

Every benchmark starts its own ``carnet serve --workers 2`` process on a fresh data folder (and,
for PostgreSQL, a fresh database), talks to it over loopback only, and stops it (and its workers)
when done, whatever happens. The ceiling is a bare Starlette app (``bench/ceiling_app.py``) run by
uvicorn with the same settings (2 workers, uvloop, httptools, no access log) and measured with the
same generator (wrk) and the same connection count, in the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LUA = BENCH / "lua"
RESULTS = BENCH / "results"
PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}")


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: servers stopped, databases dropped


signal.signal(signal.SIGTERM, _terminate)
signal.signal(signal.SIGHUP, _terminate)


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- CPU accounting ---------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(sid: int) -> float:
    """user+system CPU of every live process in session ``sid`` (a server and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        # fields[0] is state (3rd field of stat); session is field 6 -> index 3; utime 14 -> 11
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds spent by the whole machine (every process, PostgreSQL included), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if int(fields[3]) == sid:
            pids.append(int(entry))
    return sorted(pids)


# -- servers ----------------------------------------------------------------------------------
class Server:
    """A server process in its own session; ``stop`` ends that session's processes only."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str], health: str,
                 workdir: Path) -> None:
        self.name, self.cmd, self.port, self.env, self.health = name, cmd, port, env, health
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> Server:
        logf = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(self.base + self.health, timeout=2)
                # every worker must be up: uvicorn answers as soon as one is
                if r.status_code == 200 and len(session_pids(self.proc.pid)) >= self.expected_processes():
                    time.sleep(1.0)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.base}{self.health}:\n{self.log_tail()}")

    def expected_processes(self) -> int:
        workers = int(self.env.get("BENCH_WORKERS", "2"))
        return 1 + workers if workers > 1 else 1

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @property
    def sid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return session_cpu_seconds(self.sid)

    def wait_idle(self, threshold: float = 0.1, timeout: float = 300.0) -> float:
        """Wait until the server uses less than ``threshold`` cores over one second (requests left
        in flight by a previous run are finished); returns the seconds waited."""
        start = time.monotonic()
        last = self.cpu_seconds()
        while time.monotonic() - start < timeout:
            time.sleep(1.0)
            now = self.cpu_seconds()
            if now - last < threshold:
                break
            last = now
        return time.monotonic() - start

    def worker_pids(self) -> list[int]:
        return [p for p in session_pids(self.sid) if p != self.sid]

    def stop(self) -> None:
        if self.proc is None or (self.proc.poll() is not None and not session_pids(self.sid)):
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not session_pids(pgid):
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def python() -> str:
    return sys.executable


def base_env(workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    env["BENCH_WORKERS"] = str(workers)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def carnet_server(db: str, workdir: Path, workers: int = 2, extra_env: dict[str, str] | None = None
                  ) -> Iterator[Server]:
    """``carnet serve --workers N`` on a fresh data folder and, for PostgreSQL, a fresh database."""
    data = workdir / "data"
    port = free_port()
    env = base_env(workers)
    env["CARNET_LOG_LEVEL"] = "warning"
    pg_db = None
    if db == "postgres":
        pg_db = "bench_" + uuid.uuid4().hex[:10]
        pg_create(pg_db)
        env["CARNET_DATABASE_URL"] = PG_URL.format(db=pg_db)
    env.update(extra_env or {})
    cmd = [python(), "-m", "carnet.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data", str(data), "--workers", str(workers)]
    server = Server("carnet", cmd, port, env, "/healthz", workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if pg_db:
            pg_drop(pg_db)


def refresh_statistics(server: Server) -> str:
    """After a bulk load, refresh the planner's statistics as an operator (or, within a minute or
    so, autovacuum) would; otherwise PostgreSQL plans with the empty tables' statistics."""
    url = server.env.get("CARNET_DATABASE_URL")
    if not url:
        return "sqlite: statistics seeded at migration"
    from sqlalchemy import create_engine

    from carnet.db.migrate import analyze

    engine = create_engine(url)
    try:
        analyze(engine)
    finally:
        engine.dispose()
    log("ANALYZE after the bulk load")
    return "postgresql: ANALYZE after the bulk load"


@contextlib.contextmanager
def ceiling_server(workdir: Path, workers: int = 2) -> Iterator[Server]:
    port = free_port()
    env = base_env(workers)
    cmd = [python(), "-m", "uvicorn", "--app-dir", str(BENCH), "ceiling_app:app", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    server = Server("ceiling", cmd, port, env, "/json", workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- PostgreSQL -------------------------------------------------------------------------------
def _psql(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def pg_create(name: str) -> None:
    assert re.fullmatch(r"bench_[0-9a-f]+", name)
    _psql(f"CREATE DATABASE {name}")
    log(f"created PostgreSQL database {name}")


def pg_drop(name: str) -> None:
    assert re.fullmatch(r"bench_[0-9a-f]+", name)
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    log(f"dropped PostgreSQL database {name}")


# -- wrk --------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors_status: int  # HTTP status > 399
    errors_socket: int  # connect + read + write + timeout
    generator_cpu_s: float  # wrk's own CPU time (user + system)
    server_cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def generator_cores(self) -> float:
        return self.generator_cpu_s / self.duration_s

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__.items())
        d["generator_cores"] = round(self.generator_cores, 3)
        if self.server_cpu_s is not None:
            d["server_cores"] = round(self.server_cpu_s / self.duration_s, 3)
        return d


def wrk(url: str, script: Path, *, duration: float, connections: int, threads: int = 2,
        args: list[str] | None = None, server: Server | None = None, timeout: str = "30s") -> WrkResult:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    threads = min(threads, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--timeout", timeout,
           "-s", str(script), url]
    if args:
        cmd += ["--", *args]
    waited = server.wait_idle() if server else 0.0
    cpu0 = server.cpu_seconds() if server else None
    load_before = os.getloadavg()[0]
    busy0 = machine_busy_seconds()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    _, status, rusage = os.wait4(proc.pid, 0)
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = server.cpu_seconds() - cpu0 if server and cpu0 is not None else None
    machine_busy = machine_busy_seconds() - busy0
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}\n{err}")
    d = json.loads(line[len("WRKJSON "):])
    dur = d["duration_us"] / 1e6
    keep = ("ops", "statuses", "bytes", "first_error")
    extra = {k: v for k, v in d.items() if k in keep and v is not None}
    # all cores busy on the machine during the run (server + database + wrk + anyone else)
    extra["machine_busy_cores"] = round(machine_busy / dur, 2)
    # the machine is shared: the 1-minute load average before and after tells whether others ran
    extra["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if waited > 1.5:
        extra["waited_for_idle_s"] = round(waited, 1)
    return WrkResult(
        requests=d["requests"], duration_s=round(dur, 3), rps=round(d["requests"] / dur, 1),
        p50_ms=d["p50"] / 1000, p90_ms=d["p90"] / 1000, p99_ms=d["p99"] / 1000, max_ms=d["max"] / 1000,
        mean_ms=round(d["mean"] / 1000, 3), errors_status=d["status"],
        errors_socket=d["connect"] + d["read"] + d["write"] + d["timeout"],
        generator_cpu_s=round(rusage.ru_utime + rusage.ru_stime, 3),
        server_cpu_s=round(server_cpu, 3) if server_cpu is not None else None, extra=extra)


def measure_ceiling(workdir: Path, *, duration: float, connections: int, threads: int = 2,
                    echo_body: Path | None = None) -> dict[str, Any]:
    """The bare Starlette app, same uvicorn settings and generator: the run's ceiling."""
    out: dict[str, Any] = {}
    paths = workdir / "ceiling-paths.txt"
    paths.write_text("/json\n")
    with ceiling_server(workdir) as srv:
        wrk(srv.base, LUA / "paths.lua", duration=2, connections=connections, threads=threads,
            args=[str(paths)])
        res = wrk(srv.base, LUA / "paths.lua", duration=duration, connections=connections,
                  threads=threads, server=srv, args=[str(paths)])
        out["get"] = res.as_dict()
        log(f"ceiling GET /json, {connections} connections: {res.rps:,.0f} req/s, "
            f"p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms (wrk {res.generator_cores:.2f} cores)")
        if echo_body is not None:
            res = wrk(srv.base, LUA / "post_files.lua", duration=duration, connections=connections,
                      threads=threads, server=srv, args=[str(echo_body), "/echo"])
            out["echo"] = res.as_dict()
            log(f"ceiling POST /echo (bundle bodies parsed and re-serialised): {res.rps:,.1f} req/s, "
                f"p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms")
    return out


# -- disk -------------------------------------------------------------------------------------
def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def sqlite_files(work: Path) -> dict[str, int]:
    """Sizes of the SQLite database and its WAL (the WAL grows when checkpoints cannot reset it)."""
    out = {}
    for suffix, key in (("", "db_bytes"), ("-wal", "wal_bytes")):
        p = work / "data" / f"carnet.db{suffix}"
        out[key] = p.stat().st_size if p.exists() else 0
    return out


# -- misc -------------------------------------------------------------------------------------
def cpu_calibration(loops: int = 3_000_000) -> float:
    """Seconds one core takes for a fixed pure-Python loop (the best of three), saved with every
    result: figures taken on different machines differ by this factor before any code does
    (0.19 s on the machine of 2026-12-02, whose directory load ran at half the rate of the one
    before it on the same code)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        x = 0
        for i in range(loops):
            x += i
        best = min(best, time.perf_counter() - t)
    return round(best, 3)


def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            return out.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "wrk": version(["wrk", "-v"]),
            "cpu_loop_3m_s": cpu_calibration(),
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "loadavg_at_start": os.getloadavg(),
            "commit": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            "src_modified": version(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"]) != "?"}


@contextlib.contextmanager
def workdir(keep: bool = False, prefix: str = "carnet-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return path


def ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0
