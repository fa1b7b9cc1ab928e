"""What only one backend has: SQLite across processes, Redis outages and lazy import, store URLs."""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasktoolkit.dedup import DedupStore, MemoryDedupStore, SQLiteDedupStore, StoredResponse
from tasktoolkit.dedup.url import store_from_url
from tasktoolkit.errors import DedupStoreUnavailable

CLAIM_IN_CHILD = textwrap.dedent(
    """
    import json, sys
    from tasktoolkit.dedup import SQLiteDedupStore
    store = SQLiteDedupStore(sys.argv[1])
    claim = store.claim(sys.argv[2], "fp")
    print(json.dumps({"acquired": claim.acquired, "owner": claim.record.owner}))
    store.close()
    """
)


def claim_in_child(path: Path, key: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CLAIM_IN_CHILD, str(path), key], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_sqlite_claims_are_seen_by_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "dedup.db"
    store = SQLiteDedupStore(path)
    try:
        mine = store.claim("q/t1", "fp")
        assert mine.acquired
        theirs = claim_in_child(path, "q/t1")
        assert theirs == {"acquired": False, "owner": mine.record.owner}
        other = claim_in_child(path, "q/t2")
        assert other["acquired"]
        assert not store.claim("q/t2", "fp").acquired
    finally:
        store.close()


def test_sqlite_concurrent_processes_claim_once(tmp_path: Path) -> None:
    path = tmp_path / "dedup.db"
    SQLiteDedupStore(path).close()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM_IN_CHILD, str(path), "q/hot"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    results = [json.loads(child.communicate(timeout=30)[0]) for child in children]
    assert sum(result["acquired"] for result in results) == 1
    assert len({result["owner"] for result in results}) == 1


def test_sqlite_two_connections_in_one_process(tmp_path: Path) -> None:
    first, second = SQLiteDedupStore(tmp_path / "d.db"), SQLiteDedupStore(tmp_path / "d.db")
    try:
        claim = first.claim("k", "fp").record
        assert not second.claim("k", "fp").acquired
        assert second.complete(claim, StoredResponse(200, b"ok"))
        record = first.get("k")
        assert record is not None and record.response == StoredResponse(200, b"ok")
    finally:
        first.close()
        second.close()


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    SQLiteDedupStore(tmp_path / "d.db").close()
    with sqlite3.connect(tmp_path / "d.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_sqlite_unusable_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DedupStoreUnavailable, match="SQLiteDedupStore unavailable"):
        SQLiteDedupStore(tmp_path / "missing-dir" / "d.db")


def test_sqlite_locked_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    store = SQLiteDedupStore(path, timeout_s=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DedupStoreUnavailable):
            store.claim("k", "fp")
        blocker.execute("ROLLBACK")
        assert store.claim("k", "fp").acquired
    finally:
        blocker.close()
        store.close()


def test_redis_outage_raises_unavailable_and_recovers(
    own_redis_server: Any, store_factory: Callable[..., DedupStore]
) -> None:
    from tasktoolkit.dedup import RedisDedupStore

    store = RedisDedupStore.from_url(own_redis_server.url)
    try:
        claim = store.claim("k", "fp").record
        own_redis_server.kill()
        with pytest.raises(DedupStoreUnavailable, match="RedisDedupStore unavailable"):
            store.claim("k2", "fp")
        with pytest.raises(DedupStoreUnavailable):
            store.release(claim)
        own_redis_server.start()
        assert store.claim("k2", "fp").acquired
        assert store.claim("k", "fp").acquired  # no persistence: the restarted server is empty
    finally:
        store.close()


@pytest.mark.parametrize("single_connection", [False, True])
def test_redis_store_accepts_a_decoding_client(redis_server: Any, single_connection: bool) -> None:
    import redis

    from tasktoolkit.dedup import RedisDedupStore

    client = redis.Redis.from_url(
        redis_server.url, decode_responses=True, single_connection_client=single_connection
    )
    store = RedisDedupStore(client, prefix="decoded:")
    try:
        claim = store.claim("k", "fp")
        assert store.complete(claim.record, StoredResponse(200, b"\xff\x00"))
        again = store.claim("k", "fp")
        assert not again.acquired and again.record.response == StoredResponse(200, b"\xff\x00")
        client.delete("decoded:k")
    finally:
        store.close()


def test_redis_is_imported_lazily_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasktoolkit.dedup

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "tasktoolkit.dedup.redis", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'tasktoolkit\[redis\]'"):
        tasktoolkit.dedup.RedisDedupStore  # noqa: B018
    monkeypatch.undo()
    importlib.import_module("tasktoolkit.dedup.redis")


def test_store_urls(tmp_path: Path, redis_server: Any) -> None:
    assert isinstance(store_from_url("memory://"), MemoryDedupStore)
    sqlite_store = store_from_url(f"sqlite:///{tmp_path}/u.db")
    assert isinstance(sqlite_store, SQLiteDedupStore) and sqlite_store.path == f"{tmp_path}/u.db"
    sqlite_store.close()
    redis_store = store_from_url(redis_server.url)
    assert redis_store.claim("url-test", "fp").acquired
    redis_store.close()
    with pytest.raises(ValueError, match="needs a path"):
        store_from_url("sqlite://")
    with pytest.raises(ValueError, match="unknown dedup store URL"):
        store_from_url("postgres://db")


def test_sqlite_connections_stay_bounded_under_thread_churn(tmp_path: Path) -> None:
    store = SQLiteDedupStore(tmp_path / "d.db", max_idle_connections=2)
    try:
        for round_ in range(5):  # fresh threads each round, like a thread-per-request server
            threads = [
                threading.Thread(target=store.claim, args=(f"k{round_}-{index}", "fp")) for index in range(10)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        assert len(store._idle) <= 2
        assert all(store.get(f"k{r}-{i}") is not None for r in range(5) for i in range(10))
    finally:
        store.close()
    assert store._idle == []


def test_redis_scripts_are_loaded_again_after_a_script_flush(
    redis_server: Any, store_factory: Callable[..., DedupStore]
) -> None:
    import redis

    store = store_factory("redis")
    first = store.claim("k", "fp")
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.script_flush()
    assert not store.claim("k", "fp").acquired
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.script_flush()
    assert store.complete(first.record, StoredResponse(200, b"ok"))


def commands_sent_by(url: str, operation: Callable[[], object]) -> list[str]:
    """The commands ``operation`` sent, seen by MONITOR on the real server (not in scripts, no handshakes)."""
    import redis

    with redis.Redis.from_url(url) as marker, redis.Redis.from_url(url) as watcher:
        marker.ping()  # connected before the monitor starts
        with watcher.monitor() as monitor:
            operation()
            marker.execute_command("ECHO", "marker")
            sent = []
            while (command := monitor.next_command())["command"] != "ECHO marker":
                if command["client_type"] != "lua" and command["command"].split()[0] != "HELLO":
                    sent.append(command["command"].split()[0])
            return sent


def test_redis_claim_and_complete_are_one_command_each(
    redis_server: Any, store_factory: Callable[..., DedupStore]
) -> None:
    """A claim is one SET NX GET (no script), a duplicate's included; a completion is one EVALSHA."""
    store = store_factory("redis")
    first = store.claim("k", "fp")
    assert first.acquired
    assert commands_sent_by(redis_server.url, lambda: store.claim("k", "fp")) == ["SET"]  # a duplicate
    assert commands_sent_by(redis_server.url, lambda: store.claim("fresh", "fp")) == ["SET"]
    response = StoredResponse(200, b"ok")
    assert commands_sent_by(redis_server.url, lambda: store.complete(first.record, response)) == ["EVALSHA"]


def test_redis_claim_takes_over_a_record_over_by_the_store_clock_that_redis_still_keeps(
    redis_server: Any, store_factory: Callable[..., DedupStore]
) -> None:
    """The clock says the lease is over, Redis's TTL not: the SET finds the record, the script replaces it."""
    now = [1_700_000_000.0]
    store = store_factory("redis", clock=lambda: now[0])
    first = store.claim("k", "fp", lease_s=600)
    store.claim("warm-up", "fp", lease_s=1)
    now[0] += 600  # Redis keeps the keys for their TTL in real time
    assert store.claim("warm-up", "fp").acquired  # a take-over that loads the script
    claims: list[Any] = []
    sent = commands_sent_by(redis_server.url, lambda: claims.append(store.claim("k", "fp")))
    assert sent == ["SET", "EVALSHA"]
    assert claims[0].acquired and claims[0].record.owner != first.record.owner
    assert not store.complete(first.record, StoredResponse(200, b"late"))
    assert store.complete(claims[0].record, StoredResponse(200, b"ok"))


def test_redis_before_7_claims_with_the_script(redis_server: Any) -> None:
    """A server that refuses NX with GET (before Redis 7.0: a syntax error) gets the script, then only it.

    The refusal comes from the real server: this connection sends the claim's SET with NX and XX, which
    Redis 7 refuses with the same "ERR syntax error" as an older server refuses NX with GET.
    """
    import redis
    from redis.connection import Connection

    from tasktoolkit.dedup import RedisDedupStore

    class OldServer(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            packed = b"".join([command] if isinstance(command, bytes) else command)
            if packed.startswith(b"*7\r\n$3\r\nSET\r\n"):
                packed = packed.replace(b"$2\r\nPX\r\n", b"$2\r\nXX\r\n", 1)
            super().send_packed_command([packed], check_health)

    store = RedisDedupStore.from_url(
        redis_server.url, prefix=f"old:{uuid.uuid4().hex}:", connection_class=OldServer
    )
    try:
        claims: list[Any] = []
        assert commands_sent_by(redis_server.url, lambda: claims.append(store.claim("k", "fp"))) == [
            "SET",
            "EVALSHA",
        ]
        assert claims[0].acquired
        assert commands_sent_by(redis_server.url, lambda: claims.append(store.claim("k", "fp"))) == [
            "EVALSHA"
        ]
        assert not claims[1].acquired and claims[1].record.owner == claims[0].record.owner
        assert store.complete(claims[0].record, StoredResponse(200, b"ok"))
    finally:
        store.close()
    with redis.Redis.from_url(redis_server.url) as admin, pytest.raises(redis.ResponseError, match="syntax"):
        admin.execute_command("SET", "probe", "v", "NX", "XX", "1000", "GET")


def counting_pool_store(url: str) -> tuple[DedupStore, list[Any]]:
    """A Redis store on a pool that lists every connection taken from it (and the thread that took it)."""
    import redis

    from tasktoolkit.dedup import RedisDedupStore

    taken: list[Any] = []

    class CountingPool(redis.ConnectionPool):
        def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            connection = super().get_connection(*args, **kwargs)
            taken.append((threading.current_thread().name, connection))
            return connection

    client = redis.Redis(connection_pool=CountingPool.from_url(url))
    return RedisDedupStore(client, prefix=f"held:{uuid.uuid4().hex}:"), taken


def test_redis_thread_keeps_one_connection_and_returns_it_when_it_ends(redis_server: Any) -> None:
    """A thread's claims and completions share one connection, back in the pool once the thread ends."""
    store, taken = counting_pool_store(redis_server.url)
    response = StoredResponse(200, b"ok")

    def deliver(keys: list[str]) -> None:
        for key in keys:
            claim = store.claim(key, "fp")
            assert claim.acquired and store.complete(claim.record, response)

    try:
        for keys in (["a", "b", "c"], ["d"]):
            worker = threading.Thread(target=deliver, args=(keys,))
            worker.start()
            worker.join()
        assert len(taken) == 2  # one per thread, not one per command
        assert taken[0][0] != taken[1][0] and taken[1][1] is taken[0][1]  # the second thread reused it
    finally:
        store.close()


def test_redis_threads_beyond_half_the_pool_share_its_connections(redis_server: Any) -> None:
    """With a pool of one connection, no thread keeps it: two live threads both get their claims through."""
    import redis

    from tasktoolkit.dedup import RedisDedupStore

    pool = redis.BlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=0.5)
    store = RedisDedupStore(redis.Redis(connection_pool=pool), prefix=f"small:{uuid.uuid4().hex}:")
    claimed, finish = threading.Event(), threading.Event()

    def first_thread() -> None:
        assert store.claim("first", "fp").acquired
        claimed.set()
        finish.wait(30)  # alive, and holding nothing

    worker = threading.Thread(target=first_thread)
    worker.start()
    try:
        assert claimed.wait(30)
        claim = store.claim("second", "fp")  # would wait for the pool's one connection, then fail
        assert claim.acquired and store.complete(claim.record, StoredResponse(200, b"ok"))
    finally:
        finish.set()
        worker.join()
        store.close()


def test_redis_forked_child_uses_its_own_connection(redis_server: Any) -> None:
    """A child forked after its parent used the store claims on its own connection; the parent's works on."""
    import os

    store, taken = counting_pool_store(redis_server.url)
    response = StoredResponse(200, b"ok")
    try:
        assert store.claim("parent-1", "fp").acquired
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            claim = store.claim("child", "fp")
            held = claim.acquired and store.complete(claim.record, response)
            os._exit(0 if held and taken[-1][1] is not taken[0][1] else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        claim = store.claim("parent-2", "fp")
        assert claim.acquired and store.complete(claim.record, response)
        duplicate = store.claim("child", "fp")
        assert not duplicate.acquired and duplicate.record.response == response
        assert len(taken) == 1
    finally:
        store.close()


def test_memory_store_sweeps_expired_records_before_evicting_live_ones() -> None:
    now = [1000.0]
    store = MemoryDedupStore(max_records=3, clock=lambda: now[0])
    store.claim("long-1", "fp", lease_s=600)
    store.claim("short", "fp", lease_s=1)
    store.claim("long-2", "fp", lease_s=600)
    now[0] += 5  # "short" has expired but was used more recently than "long-1"
    store.claim("long-3", "fp", lease_s=600)
    assert [key for key in ("long-1", "short", "long-2", "long-3") if store.get(key)] == [
        "long-1",
        "long-2",
        "long-3",
    ]
    store.get("long-1")  # now the most recently used
    store.claim("long-4", "fp", lease_s=600)  # full of live records: the least recently used goes
    assert store.get("long-2") is None
    assert all(store.get(key) for key in ("long-1", "long-3", "long-4"))


def losing_replies(url: str, *lose: int) -> tuple[DedupStore, list[int]]:
    """A Redis store whose SETs and EVALSHAs numbered ``lose`` (from 1) run on the server, replies timing out.

    Returns the store and the numbers of the replies lost so far; redis-py's retry sends each such one again.
    """
    import redis
    from redis.connection import Connection

    from tasktoolkit.dedup import RedisDedupStore

    scripts_run: list[int] = []
    lost: list[int] = []

    class LosesReplies(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            head = b"".join([command] if isinstance(command, bytes) else command)[:32]
            if b"\r\nEVALSHA\r\n" in head or b"\r\nSET\r\n" in head:
                scripts_run.append(len(scripts_run) + 1)
            super().send_packed_command(command, check_health)

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            response = super().read_response(*args, **kwargs)  # the command ran: its reply has arrived
            if scripts_run and scripts_run[-1] in lose and scripts_run[-1] not in lost:
                lost.append(scripts_run[-1])
                raise redis.TimeoutError("Timeout reading from socket")
            return response

    store = RedisDedupStore.from_url(url, prefix=f"lost:{uuid.uuid4().hex}:", connection_class=LosesReplies)
    return store, lost


def test_redis_claim_whose_reply_is_lost_is_still_acquired(redis_server: Any) -> None:
    """The claim's SET runs on the server but its reply times out; the client's retry finds our record."""
    store, lost = losing_replies(redis_server.url, 1)
    try:
        claim = store.claim("k", "fp")
        assert lost == [1]
        assert claim.acquired
        assert store.complete(claim.record, StoredResponse(200, b"done"))
        duplicate = store.claim("k", "fp")
        assert not duplicate.acquired and duplicate.record.response == StoredResponse(200, b"done")
    finally:
        store.close()


def test_redis_complete_whose_reply_is_lost_still_counts_as_held(redis_server: Any) -> None:
    """The completing EVALSHA stores the response but its reply times out; the retry finds that record."""
    store, lost = losing_replies(redis_server.url, 2)
    try:
        claim = store.claim("k", "fp")
        assert store.complete(claim.record, StoredResponse(200, b"done"))
        assert lost == [2]
        duplicate = store.claim("k", "fp")
        assert not duplicate.acquired and duplicate.record.response == StoredResponse(200, b"done")
    finally:
        store.close()
