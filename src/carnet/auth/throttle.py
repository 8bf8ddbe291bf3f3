"""Sign-in throttling by network address: after too many failed sign-ins from one address in a
window, that address is refused for a while, whatever account it tries (password spraying).

Per-account lockout (:mod:`carnet.auth.accounts`) stops guessing one account's password; this stops
guessing many accounts from one place. The counts live in the server process (each node counts
its own), which bounds an attacker's rate per node; a deployment behind a proxy gives each
client's address to the server (uvicorn ``--proxy-headers`` with ``--forwarded-allow-ips``).
"""

from __future__ import annotations

import threading
import time
from collections import deque


class FailureThrottle:
    def __init__(self, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def blocked(self, key: str) -> bool:
        """Whether ``key`` has used up its failures in the current window."""
        with self._lock:
            now = time.monotonic()
            recent = self._recent(key, now)
            if not recent:
                self._failures.pop(key, None)
            return len(recent) >= self.max_failures

    def failed(self, key: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # a flood of addresses: forget the oldest windows
                for stale in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window]:
                    del self._failures[stale]
