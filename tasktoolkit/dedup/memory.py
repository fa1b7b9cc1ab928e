"""MemoryDedupStore: records in a per-process, thread-safe cachetools TLRU cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cachetools

from tasktoolkit.dedup.base import DedupRecord, DedupStatus, DedupStore

DEFAULT_MAX_RECORDS = 100_000


class MemoryDedupStore(DedupStore):
    """Dedup records in this process's memory, each evicted when it expires.

    Good for tests and single-process workers. Duplicates delivered to another process (another gunicorn
    worker or Cloud Run instance) are not seen: use SQLite (one host) or Redis (many) there. When more than
    ``max_records`` live records exist, the least recently used are evicted early.

    Args:
        max_records: Capacity of the cache.
        clock: Seconds since the epoch (injectable for tests).
    """

    def __init__(
        self, *, max_records: int = DEFAULT_MAX_RECORDS, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(clock=clock)
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records!r}")
        self._records: cachetools.TLRUCache[str, DedupRecord] = cachetools.TLRUCache(
            maxsize=max_records, ttu=lambda _key, record, _now: record.expires_at, timer=clock
        )
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> DedupRecord | None:
        record = self._records.get(key)
        return record if record is not None and now < record.expires_at else None

    def _held(self, key: str, owner: str, now: float) -> bool:
        record = self._live(key, now)
        return record is not None and record.owner == owner and record.status is DedupStatus.IN_PROGRESS

    def _claim(self, record: DedupRecord, now: float) -> DedupRecord | None:
        with self._lock:
            existing = self._live(record.key, now)
            if existing is None:
                self._records[record.key] = record
            return existing

    def _replace(self, record: DedupRecord, now: float) -> bool:
        with self._lock:
            if not self._held(record.key, record.owner, now):
                return False
            self._records[record.key] = record
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
