"""The `carnet` command, run as a user runs it: a real process."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CARNET = [sys.executable, "-m", "carnet.cli.main"]


def run(*args: str, data: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    full_env.update(env or {})
    return subprocess.run([*CARNET, *args, "--data", str(data)], capture_output=True, text=True,
                          env=full_env, timeout=120, check=False)


def test_config_lists_every_setting_with_source_and_masks_secrets(tmp_path: Path) -> None:
    r = run("config", data=tmp_path, env={"CARNET_SECRET_KEY": "tres-secret", "CARNET_PORT": "9001"})
    assert r.returncode == 0, r.stderr
    assert "tres-secret" not in r.stdout
    assert "CARNET_SECRET_KEY" in r.stdout and "********" in r.stdout
    port_line = next(line for line in r.stdout.splitlines() if line.startswith("CARNET_PORT"))
    assert "9001" in port_line and "env CARNET_PORT" in port_line
    assert "sqlite:///" in r.stdout


def test_token_works_in_development_and_is_refused_in_production(tmp_path: Path) -> None:
    r = run("token", "--as", "system", data=tmp_path)
    assert r.returncode == 0, r.stderr
    header = json.loads(base64.urlsafe_b64decode(r.stdout.split(".")[0] + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    r = run("token", "--as", "practitioner:899999999999", data=tmp_path)
    assert r.returncode != 0
    assert "899999999999" in r.stderr and "directory" in r.stderr
    r = run("token", "--as", "system", data=tmp_path, env={"CARNET_MODE": "production"})
    assert r.returncode != 0
    assert "development mode only" in r.stderr


def test_migrate_demo_and_serve(tmp_path: Path) -> None:
    assert run("migrate", data=tmp_path).returncode == 0
    r = run("demo", "--patients", "3", data=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 Patient" in r.stdout and "57 Observation" in r.stdout
    assert "14 Practitioner" in r.stdout and "14 PractitionerRole" in r.stdout
    assert "demo sign-in" in r.stdout  # patient accounts for the sign-in page
    insi = json.loads((tmp_path / "insi" / "identities.json").read_text(encoding="utf-8"))
    assert len(insi["identities"]) == 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a token is for one server (its audience is that server's FHIR base)
    token = run("token", "--as", "system", data=tmp_path, env={"CARNET_PORT": str(port)}).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    env["CARNET_MODE"] = "production"
    with subprocess.Popen([*CARNET, "serve", "--data", str(tmp_path), "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as proc:
        _check_server(proc, port, token)


def _check_server(proc: subprocess.Popen[str], port: int, token: str) -> None:
    try:
        assert proc.stdout is not None
        first_line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first_line
        base = f"http://127.0.0.1:{port}/fhir"
        deadline = time.monotonic() + 30
        while True:
            try:
                r2 = httpx.get(f"{base}/Patient", headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert r2.status_code == 200
        assert r2.json()["total"] == 3
        # Production mode: no token, no data.
        anonymous = httpx.get(f"{base}/Patient")
        assert anonymous.status_code == 401
        assert anonymous.json()["resourceType"] == "OperationOutcome"
        forged = httpx.get(f"{base}/Patient", headers={"Authorization": f"Bearer {token[:-2]}xx"})
        assert forged.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_readme_documents_every_setting_and_command() -> None:
    from carnet.cli.main import main
    from carnet.config import Settings

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"CARNET_{name.upper()}" in readme, name
    for command in main.commands:
        assert f"carnet {command}" in readme, command
