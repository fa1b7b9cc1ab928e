"""MemoryDedupStore: records in a per-process, thread-safe dict kept in least-recently-used order."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from tasktoolkit.dedup.base import DedupRecord, DedupStatus, DedupStore

DEFAULT_MAX_RECORDS = 100_000
#: Least time between two sweeps of expired records (sweeps happen only when the store is full).
SWEEP_INTERVAL_S = 60.0


class MemoryDedupStore(DedupStore):
    """Dedup records in this process's memory.

    Good for tests and single-process workers. Duplicates delivered to another process (another gunicorn
    worker or Cloud Run instance) are not seen: use SQLite (one host) or Redis (many) there. An expired record
    is dropped when it is next looked up; when more than ``max_records`` are kept, expired records are swept
    (at most once a minute) and then the least recently used are evicted.

    Args:
        max_records: Capacity of the store.
        clock: Seconds since the epoch (injectable for tests).
    """

    def __init__(
        self, *, max_records: int = DEFAULT_MAX_RECORDS, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(clock=clock)
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records!r}")
        self._max_records = max_records
        self._records: OrderedDict[str, DedupRecord] = OrderedDict()
        self._next_sweep = float("-inf")
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> DedupRecord | None:
        record = self._records.get(key)
        if record is None:
            return None
        if now < record.expires_at:
            self._records.move_to_end(key)
            return record
        del self._records[key]
        return None

    def _held(self, key: str, owner: str, now: float) -> bool:
        record = self._live(key, now)
        return record is not None and record.owner == owner and record.status is DedupStatus.IN_PROGRESS

    def _put(self, record: DedupRecord, now: float) -> None:
        self._records[record.key] = record
        self._records.move_to_end(record.key)
        if len(self._records) > self._max_records:
            if now >= self._next_sweep:
                self._next_sweep = now + SWEEP_INTERVAL_S
                for key in [key for key, kept in self._records.items() if kept.expires_at <= now]:
                    del self._records[key]
            while len(self._records) > self._max_records:
                self._records.popitem(last=False)

    def _claim(self, record: DedupRecord, now: float) -> DedupRecord | None:
        with self._lock:
            existing = self._live(record.key, now)
            if existing is None:
                self._put(record, now)
            return existing

    def _replace(self, record: DedupRecord, now: float) -> bool:
        with self._lock:
            if not self._held(record.key, record.owner, now):
                return False
            self._put(record, now)
            return True

    def _delete(self, key: str, owner: str, now: float) -> bool:
        with self._lock:
            if not self._held(key, owner, now):
                return False
            del self._records[key]
            return True

    def _get(self, key: str, now: float) -> DedupRecord | None:
        with self._lock:
            return self._live(key, now)
