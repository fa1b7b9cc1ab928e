"""Dedup stores: one algorithm (:class:`DedupStore`), four backends.

``RedisDedupStore`` and ``FirestoreDedupStore`` are imported on first use, so redis-py and
google-cloud-firestore are only needed when they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasktoolkit.dedup.base import DedupRecord as DedupRecord
from tasktoolkit.dedup.base import DedupStatus as DedupStatus
from tasktoolkit.dedup.base import DedupStore as DedupStore
from tasktoolkit.dedup.base import StoredResponse as StoredResponse
from tasktoolkit.dedup.memory import MemoryDedupStore as MemoryDedupStore
from tasktoolkit.dedup.sqlite import SQLiteDedupStore as SQLiteDedupStore

if TYPE_CHECKING:
    from tasktoolkit.dedup.firestore import FirestoreDedupStore as FirestoreDedupStore
    from tasktoolkit.dedup.redis import RedisDedupStore as RedisDedupStore

__all__ = [
    "DedupRecord",
    "DedupStatus",
    "DedupStore",
    "FirestoreDedupStore",
    "MemoryDedupStore",
    "RedisDedupStore",
    "SQLiteDedupStore",
    "StoredResponse",
]


def __getattr__(name: str) -> Any:
    if name == "RedisDedupStore":
        from tasktoolkit.dedup.redis import RedisDedupStore

        return RedisDedupStore
    if name == "FirestoreDedupStore":
        from tasktoolkit.dedup.firestore import FirestoreDedupStore

        return FirestoreDedupStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
