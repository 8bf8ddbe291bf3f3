"""An in-memory DataKeyStore, for tests and throwaway runs."""

from __future__ import annotations

import bisect
import threading

from carnet.crypto.keys import WrappedKey


class InMemoryDataKeyStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, WrappedKey] = {}

    def __repr__(self) -> str:
        return f"InMemoryDataKeyStore({len(self._keys)} keys)"

    def get(self, patient_id: str) -> WrappedKey | None:
        return self._keys.get(patient_id)

    def add(self, patient_id: str, wrapped: WrappedKey) -> WrappedKey:
        with self._lock:
            return self._keys.setdefault(patient_id, wrapped)

    def replace(self, patient_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        with self._lock:
            if self._keys.get(patient_id) != old:
                return False
            self._keys[patient_id] = new
            return True

    def delete(self, patient_id: str) -> bool:
        with self._lock:
            return self._keys.pop(patient_id, None) is not None

    def scan(self, after: str | None = None, limit: int = 500) -> list[tuple[str, WrappedKey]]:
        with self._lock:
            ids = sorted(self._keys)
            start = 0 if after is None else bisect.bisect_right(ids, after)
            return [(pid, self._keys[pid]) for pid in ids[start:start + limit]]
