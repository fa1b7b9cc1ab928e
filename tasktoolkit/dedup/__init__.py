"""Dedup stores: one algorithm (:class:`DedupStore`), three backends.

``RedisDedupStore`` is imported on first use, so redis-py is only needed when it is used.
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
    from tasktoolkit.dedup.redis import RedisDedupStore as RedisDedupStore

__all__ = [
    "DedupRecord",
    "DedupStatus",
    "DedupStore",
    "MemoryDedupStore",
    "RedisDedupStore",
    "SQLiteDedupStore",
    "StoredResponse",
]


def __getattr__(name: str) -> Any:
    if name == "RedisDedupStore":
        from tasktoolkit.dedup.redis import RedisDedupStore

        return RedisDedupStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
