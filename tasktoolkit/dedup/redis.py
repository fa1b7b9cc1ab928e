"""RedisDedupStore: one Lua script per claim and per owner-checked settle, for workers on many hosts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("RedisDedupStore needs redis-py: pip install 'tasktoolkit[redis]'") from exc

from tasktoolkit.dedup.base import DedupRecord, DedupStore

DEFAULT_PREFIX = "tasktoolkit:dedup:"
#: Connection defaults of :meth:`RedisDedupStore.from_url`: fail fast so the handler answers 503 quickly.
DEFAULT_SOCKET_TIMEOUT_S = 2.0
DEFAULT_CONNECT_TIMEOUT_S = 1.0
DEFAULT_RETRIES = 1

# KEYS[1] key; ARGV: new record, now, ttl in ms. Returns the live record, or nil once the new one is stored.
# One round trip whether the key is free, live, or present in Redis but expired by the store's clock.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(cjson.decode(current)['expires_at']) > tonumber(ARGV[2]) then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return false
"""
# KEYS[1] key; ARGV: owner, now, new record, ttl in ms. Acts only on a live IN_PROGRESS record of that owner:
# replaces it with the new record, or deletes it when the new record is empty. Returns 1 if it acted.
_SETTLE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local record = cjson.decode(current)
if record['owner'] ~= ARGV[1] or record['status'] ~= 'IN_PROGRESS'
   or tonumber(record['expires_at']) <= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"""


def _ttl_ms(expires_at: float, now: float) -> int:
    return max(1, math.ceil((expires_at - now) * 1000))


class RedisDedupStore(DedupStore):
    """Dedup records as Redis strings (JSON) with a TTL: one round trip (a Lua script) per operation.

    Args:
        client: A ``redis.Redis`` client (bytes or decoded responses).
        prefix: Prepended to every dedup key.
        clock: Seconds since the epoch (injectable for tests); Redis's TTL only garbage-collects.
    """

    _unavailable_errors = (redis.RedisError,)

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.client = client
        self.prefix = prefix
        self._claim_script = client.register_script(_CLAIM)
        self._settle_script = client.register_script(_SETTLE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time, **kwargs: Any
    ) -> RedisDedupStore:
        """Connects to ``redis://``, ``rediss://`` or ``unix://`` URLs with fail-fast timeouts.

        Args:
            url: Redis URL.
            prefix: Prepended to every dedup key.
            clock: Seconds since the epoch.
            **kwargs: Passed to ``redis.Redis.from_url`` (override the timeouts and retry policy here).
        """
        options: dict[str, Any] = {
            "socket_timeout": DEFAULT_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT_S,
            "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), DEFAULT_RETRIES),
            **kwargs,
        }
        return cls(redis.Redis.from_url(url, **options), prefix=prefix, clock=clock)

    def _claim(self, record: DedupRecord, now: float) -> DedupRecord | None:
        name = self.prefix + record.key
        value = record.to_json()
        ttl_ms = _ttl_ms(record.expires_at, now)
        current = self._claim_script(keys=[name], args=[value, repr(now), ttl_ms])
        return DedupRecord.from_json(record.key, current) if current else None

    def _replace(self, record: DedupRecord, now: float) -> bool:
        args: list[str | int] = [record.owner, repr(now), record.to_json(), _ttl_ms(record.expires_at, now)]
        return bool(self._settle_script(keys=[self.prefix + record.key], args=args))

    def _delete(self, key: str, owner: str, now: float) -> bool:
        return bool(self._settle_script(keys=[self.prefix + key], args=[owner, repr(now), "", 0]))

    def _get(self, key: str, now: float) -> DedupRecord | None:
        current = self.client.get(self.prefix + key)
        if current is None:
            return None
        record = DedupRecord.from_json(key, current)
        return record if now < record.expires_at else None

    def close(self) -> None:
        """Closes the client's connections."""
        self.client.close()
