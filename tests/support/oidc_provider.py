"""A real OpenID Connect provider for the tests: Node.js running the certified ``oidc-provider``
package (``oidc_provider/provider.js``), with Pro Santé Connect-style claims.

:meth:`OidcProvider.start` installs the pinned packages once (``npm ci``, when ``node_modules`` is
missing; a file lock keeps parallel test workers from racing), starts ``node provider.js`` on a
free loopback port and waits for its discovery document. Node.js and npm are required: without
them this fails, it does not skip. :func:`browser_sign_in` plays the browser: it follows the
provider's redirects with cookies, posts the sign-in form and returns the query the provider sent
to the redirect URI (read from the ``Location`` header; nothing listens there).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
NODE_MIN_MAJOR = 20


class ProviderError(RuntimeError):
    """The test provider could not be installed or started."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ProviderError(f"{name} not found on PATH: the OpenID provider tests need Node.js "
                            f">= {NODE_MIN_MAJOR} and npm (CI and development machines have them)")
    return path


def ensure_installed() -> str:
    """The node executable, once the provider's packages are installed (``npm ci`` if needed)."""
    node = _tool("node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    found = re.match(r"v(\d+)", version)
    major = int(found.group(1)) if found else 0
    if major < NODE_MIN_MAJOR:
        raise ProviderError(f"Node.js {version} is too old for the test OpenID provider "
                            f"(>= {NODE_MIN_MAJOR} needed)")
    marker = PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json"
    if marker.exists():
        return node
    npm = _tool("npm")
    digest = hashlib.sha256(str(PROVIDER_DIR.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"carnet-oidc-provider-{digest}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not marker.exists():
                done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR,
                                      capture_output=True, text=True, timeout=600, check=False)
                if done.returncode != 0 or not marker.exists():
                    raise ProviderError("npm ci failed for the test OpenID provider:\n"
                                        + (done.stdout + done.stderr)[-4000:])
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return node


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OidcProvider:
    """One running provider; ``issuer`` is its base URL."""

    issuer: str
    port: int
    client_id: str
    client_secret: str
    redirect_uri: str
    process: subprocess.Popen[bytes]
    log_path: Path
    extra_clients: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, *, client_id: str = "carnet-test", client_secret: str = "carnet-test-secret-0123456789",
              redirect_uri: str = "http://127.0.0.1:9/oauth/psc/callback",
              token_auth_method: str = "client_secret_basic",
              extra_clients: Iterable[Mapping[str, Any]] = (), timeout: float = 30.0) -> OidcProvider:
        node = ensure_installed()
        port = _free_port()
        extra = [dict(c) for c in extra_clients]
        env = {**os.environ, "OIDC_PORT": str(port), "OIDC_CLIENT_ID": client_id,
               "OIDC_CLIENT_SECRET": client_secret, "OIDC_REDIRECT_URIS": redirect_uri,
               "OIDC_TOKEN_AUTH_METHOD": token_auth_method, "OIDC_EXTRA_CLIENTS": json.dumps(extra)}
        log_fd, log_name = tempfile.mkstemp(prefix="carnet-oidc-provider-", suffix=".log")
        with os.fdopen(log_fd, "wb") as log:
            process = subprocess.Popen([node, "provider.js", "--port", str(port)], cwd=PROVIDER_DIR, env=env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        provider = cls(f"http://127.0.0.1:{port}", port, client_id, client_secret, redirect_uri, process,
                       Path(log_name), extra)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as http:
            while True:
                if process.poll() is not None:
                    raise ProviderError(f"the test OpenID provider exited ({process.returncode}):\n"
                                        f"{provider.log()}")
                try:
                    r = http.get(provider.issuer + "/.well-known/openid-configuration")
                    if r.status_code == 200 and r.json().get("issuer") == provider.issuer:
                        return provider
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    provider.stop()
                    raise ProviderError(f"the test OpenID provider did not answer in {timeout:.0f} s:\n"
                                        f"{provider.log()}")
                time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log_path.unlink(missing_ok=True)


_FORM_ACTION = re.compile(r'<form[^>]*\baction="([^"]+)"', re.IGNORECASE)


def browser_sign_in(authorization_url: str, *, redirect_uri: str, login: str, acr: str = "eidas1",
                    cancel: bool = False, max_steps: int = 20) -> dict[str, str]:
    """Sign in as ``login`` like a browser would; the query sent back to ``redirect_uri``."""
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        url = authorization_url
        response = browser.get(url)
        for _ in range(max_steps):
            if response.status_code in (302, 303, 307):
                url = urljoin(url, response.headers["location"])
                if url.startswith(redirect_uri):
                    return dict(parse_qsl(urlsplit(url).query))
                response = browser.get(url)
                continue
            if response.status_code == 200 and "<form" in response.text:
                match = _FORM_ACTION.search(response.text)
                assert match, response.text
                form = {"login": login, "acr": acr}
                if cancel:
                    form["cancel"] = "1"
                url = urljoin(url, match.group(1))
                response = browser.post(url, data=form)
                continue
            raise AssertionError(f"unexpected answer {response.status_code} at {url}: {response.text[:500]}")
    raise AssertionError("too many redirects while signing in")
