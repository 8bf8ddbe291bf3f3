"""Work a server process does by itself, in a daemon thread: numbering the audit log
(:class:`carnet.ledger.sequencer.LedgerWorker`), deriving again the rights of records whose day
has come (:class:`carnet.policy.rights.RightsWorker`)."""

from __future__ import annotations

import logging
import threading
import time


class Background:
    """Runs :meth:`step` at once while it reports more work waiting, else every ``interval``
    seconds; a failed step is logged and retried after ``retry_after`` seconds."""

    name = "carnet-background"
    failure = "a background task failed; retrying"

    def __init__(self, interval: float, retry_after: float | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.interval = interval
        self.retry_after = interval if retry_after is None else retry_after
        self.log = logger or logging.getLogger("carnet")
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def step(self) -> bool:
        """One pass; True when more work is already waiting."""
        raise NotImplementedError

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = self.step()
            except Exception:  # the next pass retries
                self.log.exception(self.failure)
                self.stopping.wait(self.retry_after)
                continue
            if busy:
                time.sleep(0)  # let request threads in between two full batches
            else:
                self.stopping.wait(self.interval)
