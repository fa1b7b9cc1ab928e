"""Opens a dedup store from a URL (the ``TASKTOOLKIT_STORE`` setting)."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from tasktoolkit.dedup.base import DedupStore
from tasktoolkit.dedup.memory import MemoryDedupStore
from tasktoolkit.dedup.sqlite import SQLiteDedupStore

SCHEMES = (
    "memory://",
    "sqlite:///<path>",
    "redis://...",
    "rediss://...",
    "unix://...",
    "firestore://<project>/<collection>[?database=<id>]",
)


def store_from_url(url: str) -> DedupStore:
    """Returns the dedup store a URL names.

    ``memory://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``, or a redis-py URL
    (``redis://``, ``rediss://``, ``unix://``), or ``firestore://PROJECT/COLLECTION?database=ID`` (an empty
    PROJECT, ``firestore:///COLLECTION``, takes the project from the environment; ``database`` is optional).

    Raises:
        ValueError: Unknown scheme, missing SQLite path, or a malformed Firestore URL.
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
    if scheme == "firestore":
        return _firestore(url)
    raise ValueError(f"unknown dedup store URL {url!r}; expected one of {', '.join(SCHEMES)}")


def _firestore(url: str) -> DedupStore:
    parts = urlsplit(url)
    collection = unquote(parts.path.strip("/"))
    if not collection or "/" in collection:
        raise ValueError(f"a Firestore store URL is firestore://PROJECT/COLLECTION, got {url!r}")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"database"})
    if unknown:
        raise ValueError(f"a Firestore store URL takes only the 'database' option, got {', '.join(unknown)}")
    databases = options.get("database", [])
    if len(databases) > 1 or (databases and not databases[0]):
        raise ValueError(f"'database' must be one non-empty Firestore database id, got {databases!r}")
    from tasktoolkit.dedup.firestore import FirestoreDedupStore

    return FirestoreDedupStore(
        unquote(parts.netloc) or None, collection, database=databases[0] if databases else None
    )
