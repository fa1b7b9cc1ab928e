"""RedisDedupStore: one ``SET NX GET`` per claim, a Lua script per owner-checked settle, for many hosts."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.commands.core import Script
    from redis.connection import AbstractConnection, ConnectionPool
    from redis.exceptions import NoScriptError
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
# Takes over a record present in Redis but expired by the store's clock (claims begin with SET NX GET, which
# cannot tell), and claims on servers before Redis 7.0.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(cjson.decode(current)['expires_at']) > tonumber(ARGV[2]) then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return false
"""
# KEYS[1] key; ARGV: owner, now, new record, ttl in ms. Acts only on a live IN_PROGRESS record of that owner:
# replaces it with the new record, or deletes it when the new record is empty. Returns 1 if it acted, or if
# the key already holds the new record (this replace ran before and its reply was lost).
_SETTLE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current == ARGV[3] then return 1 end
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


#: What :meth:`RedisDedupStore._set_if_absent` returns when the server refuses ``SET NX GET``.
_NO_SET_GET: Any = object()


def _plain(client: redis.Redis) -> bool:
    """Whether ``client`` takes a pooled connection per command (not a single-connection client)."""
    return type(client) is redis.Redis and getattr(client, "connection", None) is None


def _command(*args: bytes) -> bytes:
    """``args`` as one RESP array of bulk strings, ready to send (redis-py's encoder costs more per call)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(parts)


def _round_trip(connection: AbstractConnection, command: bytes, script: Script | None) -> Any:
    """Sends ``command`` and reads its reply (an EVALSHA of ``script``: loading it if the server lacks it)."""
    connection.send_packed_command([command])  # type: ignore[no-untyped-call]
    try:
        return connection.read_response()
    except NoScriptError:  # the server restarted or flushed its scripts
        if script is None:  # pragma: no cover - only EVALSHA answers NOSCRIPT
            raise
        connection.send_command("SCRIPT", "LOAD", script.script)  # type: ignore[no-untyped-call]
        connection.read_response()
        connection.send_packed_command([command])  # type: ignore[no-untyped-call]
        return connection.read_response()


class _ThreadConnection:
    """The pooled connection one thread keeps for its commands, handed back when the thread's locals go.

    Holding it saves taking and returning a pooled connection per command (a lock, a fork check and a
    poll for stray data each time): a third of a round trip's client CPU. Python drops a thread's
    ``threading.local`` values when the thread ends, and this object then returns the connection.
    """

    def __init__(self, pool: ConnectionPool, returned: Callable[[], None]) -> None:
        self.pid = os.getpid()
        self.pool = pool
        self.connection = pool.get_connection()
        self.returned = returned

    def __del__(self) -> None:
        if self.pid == os.getpid():  # a forked child does not return its parent's connection
            with contextlib.suppress(Exception):
                self.pool.release(self.connection)
                self.returned()


def _run_on(
    connection: AbstractConnection, script: Script | None, args: tuple[str | int | bytes, ...]
) -> Any:
    """The command ``args`` (an EVALSHA of ``script`` without its first two words) on ``connection``.

    Sent with the connection's retry policy: a first failure goes through the policy as its first failure, so
    the policy's count and backoff hold. Retrying is safe: the claim and both scripts recognise a write of
    theirs whose reply was lost.
    """
    encoder = connection.encoder
    encoding, errors = encoder.encoding, encoder.encoding_errors
    words = (arg if isinstance(arg, bytes) else str(arg).encode(encoding, errors) for arg in args)
    command = _command(b"EVALSHA", script.sha.encode(), *words) if script is not None else _command(*words)
    try:
        return _round_trip(connection, command, script)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        failed = [error]

        def again() -> Any:
            if failed:
                raise failed.pop()
            return _round_trip(connection, command, script)

        return connection.retry.call_with_retry(again, lambda _error: connection.disconnect())  # type: ignore[no-untyped-call]


def _ttl_ms(expires_at: float, now: float) -> int:
    return max(1, math.ceil((expires_at - now) * 1000))


class RedisDedupStore(DedupStore):
    """Dedup records as Redis strings (JSON) with a TTL: one round trip per operation.

    A claim is one ``SET NX PX GET`` (Redis 7.0 and later; a Lua script before), a completion or release
    one owner-checked Lua script.

    A first delivery makes two round trips, the claim and the completion, and waits for both replies. The
    completion's reply could be read later (after the answer) without letting a duplicate run while the lease
    lasts: a duplicate that comes first finds the IN_PROGRESS record and is asked to retry. But if that write
    were lost (the connection breaking after its bytes left, then the process ending before it could send it
    again), the task would be acknowledged with its key still IN_PROGRESS, and a duplicate after the lease
    would run it a second time. Waiting for the reply narrows that gap to an outage: a write lost with its
    connection is sent again (the client's retry policy) before the answer leaves, and only when Redis stays
    unreachable does the answer go out with the key in progress, logged as an error. Holding the completion
    back to send it with the next claim would widen the gap to every idle worker.

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
        #: Whether claims start with ``SET NX GET`` (until a server before Redis 7.0 refuses it).
        self._set_get = True
        #: The pool whose connections the store writes its commands to; None: through redis-py's layers.
        self._pool = client.connection_pool if _plain(client) else None
        self._local = threading.local()
        #: Threads keep their own connection while fewer than this many do; the others take one per command.
        self._holders_max = getattr(self._pool, "max_connections", 0) // 2
        self._holders = 0
        self._holders_pid = os.getpid()
        self._holders_lock = threading.Lock()

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

    def _thread_connection(self) -> AbstractConnection | None:
        """This thread's own connection (a new one after a fork), or None when half the pool is held."""
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is not None and held.pid == os.getpid():
            return held.connection
        with self._holders_lock:
            if self._holders_pid != os.getpid():  # forked: the parent's threads hold nothing here
                self._holders, self._holders_pid = 0, os.getpid()
            if self._holders >= self._holders_max:
                return None
            self._holders += 1
        try:
            held = self._local.held = _ThreadConnection(self._pool, self._returned)  # type: ignore[arg-type]
        except BaseException:
            self._returned()
            raise
        return held.connection

    def _returned(self) -> None:
        with self._holders_lock:
            self._holders -= 1

    def _run(self, script: Script, key: str, *args: str | int) -> Any:
        """Runs ``script`` on ``key``: one EVALSHA round trip, with the client's retry policy."""
        if self._pool is None:
            return script(keys=[key], args=list(args))
        return self._send(script, b"1", key, *args)

    def _send(self, script: Script | None, *args: str | int | bytes) -> Any:
        """One round trip on a plain client: the command ``args`` (an EVALSHA of ``script``'s, if given).

        It writes the command itself, on its thread's own connection while fewer than half the pool's
        connections are kept by threads (else on one taken from the pool for the command), and reads the
        reply with redis-py's parser. That costs half the client CPU of redis-py's command path (pool,
        command encoding, retry wrapper).
        """
        assert self._pool is not None
        connection = self._thread_connection()
        if connection is not None:
            return _run_on(connection, script, args)
        connection = self._pool.get_connection()
        try:
            return _run_on(connection, script, args)
        finally:
            self._pool.release(connection)

    def _set_if_absent(self, name: str, value: str, ttl_ms: int) -> Any:
        """``SET name value NX PX ttl_ms GET``: stores the record if the key is free, else returns its value.

        Returns:
            ``None`` once stored, the key's value otherwise, or :data:`_NO_SET_GET` from a server before
            Redis 7.0 (which refuses ``NX`` with ``GET``); the store then claims with the script only.
        """
        try:
            if self._pool is None:
                return self.client.set(name, value, nx=True, px=ttl_ms, get=True)
            return self._send(None, b"SET", name, value, b"NX", b"PX", ttl_ms, b"GET")
        except redis.ResponseError as error:
            if "syntax error" not in str(error).lower():
                raise
            self._set_get = False
            return _NO_SET_GET

    def _claim(self, record: DedupRecord, now: float) -> DedupRecord | None:
        """One ``SET NX GET``: Redis stores the record unless the key exists, and answers with what is there.

        Only a record that Redis still keeps but that is over by the store's clock (clocks of hosts apart, an
        injected clock) takes a second round trip: the script, which replaces it atomically if still over.
        """
        name = self.prefix + record.key
        value = record.to_json()
        ttl_ms = _ttl_ms(record.expires_at, now)
        current = self._set_if_absent(name, value, ttl_ms) if self._set_get else _NO_SET_GET
        if current is None:
            return None
        if current is not _NO_SET_GET:
            existing = self._existing(record, current)
            if existing is None or now < existing.expires_at:
                return existing
        current = self._run(self._claim_script, name, value, repr(now), ttl_ms)
        return self._existing(record, current) if current else None

    @staticmethod
    def _existing(record: DedupRecord, current: str | bytes) -> DedupRecord | None:
        """The record found at ``record``'s key, or ``None`` when it is ``record`` itself.

        That is the case when the first command stored it, its reply was lost and the client's retry found it.
        """
        existing = DedupRecord.from_json(record.key, current)
        return None if existing.owner == record.owner else existing

    def _replace(self, record: DedupRecord, now: float) -> bool:
        ttl_ms = _ttl_ms(record.expires_at, now)
        return bool(
            self._run(
                self._settle_script,
                self.prefix + record.key,
                record.owner,
                repr(now),
                record.to_json(),
                ttl_ms,
            )
        )

    def _delete(self, key: str, owner: str, now: float) -> bool:
        return bool(self._run(self._settle_script, self.prefix + key, owner, repr(now), "", 0))

    def _get(self, key: str, now: float) -> DedupRecord | None:
        current = self.client.get(self.prefix + key)
        if current is None:
            return None
        record = DedupRecord.from_json(key, current)
        return record if now < record.expires_at else None

    def close(self) -> None:
        """Closes the client's connections (the threads' own ones go back to its pool first)."""
        self._local = threading.local()
        self.client.close()
