"""Opens a dedup store from a URL (the ``TASKTOOLKIT_STORE`` setting)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from tasktoolkit.dedup.base import DedupStore
from tasktoolkit.dedup.memory import MemoryDedupStore
from tasktoolkit.dedup.sqlite import SQLiteDedupStore

SCHEMES = ("memory://", "sqlite:///<path>", "redis://...", "rediss://...", "unix://...")


def store_from_url(url: str) -> DedupStore:
    """Returns the dedup store a URL names.

    ``memory://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``, or a redis-py URL
    (``redis://``, ``rediss://``, ``unix://``).

    Raises:
        ValueError: Unknown scheme or missing SQLite path.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryDedupStore()
    if scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"a SQLite store URL needs a path, like sqlite:///dedup.db, got {url!r}")
        return SQLiteDedupStore(path)
    if scheme in ("redis", "rediss", "unix"):
        from tasktoolkit.dedup.redis import RedisDedupStore

        return RedisDedupStore.from_url(url)
    raise ValueError(f"unknown dedup store URL {url!r}; expected one of {', '.join(SCHEMES)}")
