"""One contract for every dedup store: memory, SQLite (a file), Redis (real server), Firestore (emulator)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tasktoolkit.dedup import DedupStatus, DedupStore, StoredResponse

STORE_KINDS = ["memory", "sqlite", "redis", "firestore"]
OK = StoredResponse(200, b'{"sent": true}', "application/json")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(kind: str, store_factory: Callable[..., DedupStore], clock: FakeClock) -> DedupStore:
    return store_factory(kind, clock=clock)


def test_first_claim_acquires_and_is_in_progress(store: DedupStore, clock: FakeClock) -> None:
    claim = store.claim("q/t1", "fp", lease_s=600)
    assert claim.acquired
    assert claim.record.status is DedupStatus.IN_PROGRESS
    assert claim.record.expires_at == clock.now + 600
    assert store.get("q/t1") == claim.record


def test_second_claim_sees_the_live_record(store: DedupStore) -> None:
    first = store.claim("q/t1", "fp")
    second = store.claim("q/t1", "other-fp")
    assert not second.acquired
    assert second.record == first.record


def test_keys_are_independent(store: DedupStore) -> None:
    assert store.claim("q/a", "fp").acquired
    assert store.claim("q/b", "fp").acquired


def test_lease_expiry_lets_a_new_claim_in(store: DedupStore, clock: FakeClock) -> None:
    first = store.claim("q/t1", "fp", lease_s=600)
    clock.now += 599.9
    assert not store.claim("q/t1", "fp").acquired
    clock.now += 0.1
    assert store.get("q/t1") is None
    second = store.claim("q/t1", "fp")
    assert second.acquired
    assert second.record.owner != first.record.owner


def test_complete_stores_the_response_for_the_ttl(store: DedupStore, clock: FakeClock) -> None:
    claim = store.claim("q/t1", "fp").record
    clock.now += 5
    assert store.complete(claim, OK, ttl_s=3600)
    record = store.get("q/t1")
    assert record is not None
    assert record.status is DedupStatus.COMPLETED
    assert record.response == OK
    assert record.fingerprint == "fp"
    assert record.expires_at == clock.now + 3600
    duplicate = store.claim("q/t1", "fp")
    assert not duplicate.acquired and duplicate.record.response == OK
    clock.now += 3600
    assert store.get("q/t1") is None
    assert store.claim("q/t1", "fp").acquired


def test_binary_and_empty_bodies_round_trip(store: DedupStore) -> None:
    for index, response in enumerate(
        [StoredResponse(204, b"", None), StoredResponse(200, bytes(range(256)), "application/octet-stream")]
    ):
        claim = store.claim(f"k{index}", "fp").record
        assert store.complete(claim, response)
        stored = store.get(f"k{index}")
        assert stored is not None and stored.response == response


def test_fail_records_a_permanent_failure(store: DedupStore) -> None:
    claim = store.claim("q/t1", "fp").record
    ack = StoredResponse(200, b"{}", "application/json")
    assert store.fail(claim, ack)
    record = store.get("q/t1")
    assert record is not None and record.status is DedupStatus.FAILED and record.response == ack


def test_release_lets_the_next_delivery_run(store: DedupStore) -> None:
    claim = store.claim("q/t1", "fp").record
    assert store.release(claim)
    assert store.get("q/t1") is None
    assert store.claim("q/t1", "fp").acquired


def test_complete_and_release_need_the_owner_token(store: DedupStore, clock: FakeClock) -> None:
    stale = store.claim("q/t1", "fp", lease_s=10).record
    clock.now += 11
    current = store.claim("q/t1", "fp", lease_s=10).record
    assert not store.complete(stale, OK)
    assert not store.release(stale)
    assert not store.fail(stale, OK)
    assert store.get("q/t1") == current


def test_a_claim_whose_lease_ended_cannot_complete(store: DedupStore, clock: FakeClock) -> None:
    claim = store.claim("q/t1", "fp", lease_s=10).record
    clock.now += 10
    assert not store.complete(claim, OK)
    assert store.get("q/t1") is None


def test_a_finished_record_cannot_be_finished_or_released_again(store: DedupStore) -> None:
    claim = store.claim("q/t1", "fp").record
    assert store.complete(claim, OK)
    assert not store.release(claim)
    record = store.get("q/t1")
    assert record is not None and record.status is DedupStatus.COMPLETED


def test_durations_are_validated(store: DedupStore) -> None:
    with pytest.raises(ValueError, match="lease_s"):
        store.claim("k", "fp", lease_s=0)
    claim = store.claim("k", "fp").record
    with pytest.raises(ValueError, match="ttl_s"):
        store.complete(claim, OK, ttl_s=float("inf"))


def test_fifty_concurrent_claims_acquire_once(kind: str, store_factory: Callable[..., DedupStore]) -> None:
    store = store_factory(kind)
    start = threading.Barrier(50)

    def claim(_: Any) -> bool:
        start.wait(10)
        return store.claim("q/hot", "fp").acquired

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(claim, range(50)))
    assert results.count(True) == 1
