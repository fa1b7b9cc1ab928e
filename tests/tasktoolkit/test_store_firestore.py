"""What only the Firestore store has: URLs, document ids, lazy import, an outage, and two worker processes.

Everything runs against the real Firestore emulator (``gcloud emulators firestore start``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from testsupport.firestore_emulator import (
    PATIENT_TIMEOUT_S,
    RECONNECT_TIMEOUT_S,
    START_TIMEOUT_S,
    FirestoreEmulator,
)

from sample_worker.launch import ChildProcess, child_env
from tasktoolkit.dedup import DedupStatus, StoredResponse
from tasktoolkit.dedup.firestore import TTL_FIELD, FirestoreDedupStore, document_id, max_body_bytes
from tasktoolkit.dedup.url import store_from_url
from tasktoolkit.errors import DedupStoreUnavailable

REPO = Path(__file__).resolve().parents[2]
DELIVERIES = 50


def test_firestore_store_urls(firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_from_url("firestore://my-proj/dedup?database=tasks")
    assert isinstance(store, FirestoreDedupStore)
    assert (store.project, store.collection, store.database) == ("my-proj", "dedup", "tasks")
    from_env = store_from_url("firestore:///dedup")
    assert isinstance(from_env, FirestoreDedupStore) and from_env.project is None
    with pytest.raises(ValueError, match="timeout_s must be a finite number of seconds > 0"):
        FirestoreDedupStore("my-proj", timeout_s=0)
    with pytest.raises(ValueError, match="collection must be one collection id"):
        FirestoreDedupStore("my-proj", "a/b")
    for url, message in [
        ("firestore://my-proj", "firestore://PROJECT/COLLECTION"),
        ("firestore://my-proj/a/b", "firestore://PROJECT/COLLECTION"),
        ("firestore://my-proj/dedup?db=tasks", "only the 'database' option, got db"),
        ("firestore://my-proj/dedup?database=", "'database' must be one non-empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            store_from_url(url)
    for name, value in firestore_emulator.env().items():
        monkeypatch.setenv(name, value)
    live = store_from_url(f"firestore://url-test/dedup-{uuid.uuid4().hex}")
    try:
        assert live.claim("q/t", "fp").acquired
        assert not live.claim("q/t", "fp").acquired
    finally:
        live.close()


def test_firestore_is_imported_lazily_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.cloud

    import tasktoolkit.dedup

    monkeypatch.setitem(sys.modules, "google.cloud.firestore", None)
    monkeypatch.delattr(google.cloud, "firestore", raising=False)
    monkeypatch.delitem(sys.modules, "tasktoolkit.dedup.firestore", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'tasktoolkit\[firestore\]'"):
        tasktoolkit.dedup.FirestoreDedupStore  # noqa: B018
    monkeypatch.undo()
    importlib.import_module("tasktoolkit.dedup.firestore")


def test_any_key_gets_a_valid_document_id_and_a_ttl_timestamp(firestore_emulator: FirestoreEmulator) -> None:
    client = firestore_emulator.client()
    store = FirestoreDedupStore(
        collection=f"dedup-{uuid.uuid4().hex}", client=client, timeout_s=PATIENT_TIMEOUT_S
    )
    keys = ["work|emails/task-1", "a/b/c/d", "/", ".", "__id__", "ü" * 400, "k" * 3000]
    try:
        for key in keys:
            claim = store.claim(key, "fp", lease_s=60)
            assert claim.acquired, key
            assert store.complete(claim.record, StoredResponse(200, b"ok"), ttl_s=120)
            record = store.get(key)
            assert record is not None and record.key == key and record.status is DedupStatus.COMPLETED
        assert len({document_id(key) for key in keys}) == len(keys)
        snapshot = client.collection(store.collection).document(document_id(keys[0])).get()
        expires = snapshot.get(TTL_FIELD)
        assert isinstance(expires, dt.datetime) and expires.tzinfo is not None
        assert expires.timestamp() == pytest.approx(snapshot.get("expires_at_s"), abs=1e-6)
    finally:
        store.close()


def test_a_claim_made_elsewhere_is_settled_after_a_read(firestore_emulator: FirestoreEmulator) -> None:
    collection = f"dedup-{uuid.uuid4().hex}"
    claimer = FirestoreDedupStore(
        collection=collection, client=firestore_emulator.client(), timeout_s=PATIENT_TIMEOUT_S
    )
    other = FirestoreDedupStore(
        collection=collection, client=firestore_emulator.client(), timeout_s=PATIENT_TIMEOUT_S
    )
    try:
        first = claimer.claim("q/a", "fp").record
        second = claimer.claim("q/b", "fp").record
        assert not other.complete(replace(first, owner="not-the-owner"), StoredResponse(200, b"no"))
        assert other.complete(first, StoredResponse(200, b"ok"))
        assert not claimer.complete(first, StoredResponse(200, b"late"))  # update time moved on: read, refuse
        assert other.release(second)
        assert not claimer.release(second)
        record = claimer.get("q/a")
        assert record is not None and record.response == StoredResponse(200, b"ok")
        assert claimer.get("q/b") is None
    finally:
        claimer.close()
        other.close()


def test_a_release_whose_answer_is_lost_still_counts_as_released(
    firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete lands but its answer is lost; the retry finds the document gone: released, not refused."""
    from google.api_core import exceptions as api_exceptions

    client = firestore_emulator.client()
    store = FirestoreDedupStore(
        collection=f"dedup-{uuid.uuid4().hex}", client=client, timeout_s=PATIENT_TIMEOUT_S
    )
    try:
        claim = store.claim("k", "fp").record
        transport = client._firestore_api._transport
        commit = transport._wrapped_methods[transport.commit]  # what the retry wraps
        send = commit._target
        lost: list[Any] = []

        def lands_then_answer_is_lost(*args: Any, **kwargs: Any) -> Any:
            answer = send(*args, **kwargs)
            if not lost:
                lost.append(answer)
                raise api_exceptions.ServiceUnavailable("connection reset after the write")
            return answer

        monkeypatch.setattr(commit, "_target", lands_then_answer_is_lost)
        assert store.release(claim)
        assert len(lost) == 1 and store.get("k") is None
        monkeypatch.undo()
        assert store.claim("k", "fp").acquired
        assert not store.release(claim)  # a second release of a released claim: nothing of ours to delete
    finally:
        store.close()
        client.close()  # type: ignore[no-untyped-call]


def test_a_response_too_large_for_a_document_is_refused_before_any_write(
    firestore_emulator: FirestoreEmulator,
) -> None:
    store = FirestoreDedupStore(
        collection=f"dedup-{uuid.uuid4().hex}",
        client=firestore_emulator.client(),
        timeout_s=PATIENT_TIMEOUT_S,
    )
    try:
        largest = StoredResponse(200, b"x" * max_body_bytes("q/big"))
        claim = store.claim("q/big", "fp").record
        refused = r"response_body of 1047\d+ bytes .* 0 to 1047\d+ bytes"
        with pytest.raises(DedupStoreUnavailable, match=refused):
            store.complete(claim, StoredResponse(200, largest.body + b"x"))
        record = store.get("q/big")
        assert record is not None and record.status is DedupStatus.IN_PROGRESS  # nothing written
        assert store.complete(claim, largest)
        stored = store.get("q/big")
        assert stored is not None and stored.response == largest
    finally:
        store.close()


#: The budget of the store calls made while the emulator is away: short, so the test is quick.
OUTAGE_TIMEOUT_S = 0.5


def record_deadlines(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The gRPC deadline (``timeout``) of every Commit and BatchGetDocuments attempt the client sends."""
    deadlines: list[float] = []
    transport = client._firestore_api._transport
    for rpc in (transport.commit, transport.batch_get_documents):
        wrapped = transport._wrapped_methods[rpc]  # what the store's Retry wraps
        send = wrapped._target

        def recording(*args: Any, _send: Any = send, **kwargs: Any) -> Any:
            deadlines.append(kwargs["timeout"])
            return _send(*args, **kwargs)

        monkeypatch.setattr(wrapped, "_target", recording)
    return deadlines


def test_a_paused_emulator_is_unavailable_within_the_budget_and_keeps_its_records(
    own_firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = own_firestore_emulator.client()
    store = FirestoreDedupStore(collection="dedup", client=client, timeout_s=PATIENT_TIMEOUT_S)
    hasty = FirestoreDedupStore(collection="dedup", client=client, timeout_s=OUTAGE_TIMEOUT_S)
    deadlines = record_deadlines(client, monkeypatch)
    try:
        claim = store.claim("q/before", "fp").record
        own_firestore_emulator.pause()
        deadlines.clear()
        try:
            with pytest.raises(DedupStoreUnavailable, match="FirestoreDedupStore unavailable"):
                hasty.claim("q/during", "fp")
            with pytest.raises(DedupStoreUnavailable):
                hasty.get("q/before")
        finally:
            own_firestore_emulator.resume()
        # Each attempt waited at most the store's budget, not the client's 60 s default, and the retries
        # stopped with the budget: within 0.5 s the backoff (10 ms doubling to 200 ms) allows a handful of
        # attempts per call, where a budget of a minute would make hundreds.
        assert deadlines and max(deadlines) <= OUTAGE_TIMEOUT_S
        assert len(deadlines) <= 40, deadlines
        assert store.complete(claim, StoredResponse(200, b"ok"))
        again = store.claim("q/before", "fp")
        assert not again.acquired and again.record.response == StoredResponse(200, b"ok")
    finally:
        store.close()
        hasty.close()


def test_a_killed_emulator_is_unavailable_then_a_restart_recovers(
    own_firestore_emulator: FirestoreEmulator,
) -> None:
    client = own_firestore_emulator.client()
    # The store that must come back waits for the gRPC channel to reconnect, with its own backoff.
    store = FirestoreDedupStore(collection="dedup", client=client, timeout_s=RECONNECT_TIMEOUT_S)
    hasty = FirestoreDedupStore(collection="dedup", client=client, timeout_s=OUTAGE_TIMEOUT_S)
    try:
        claim = store.claim("q/before", "fp").record
        own_firestore_emulator.kill()
        with pytest.raises(DedupStoreUnavailable):
            hasty.claim("q/during", "fp")
        with pytest.raises(DedupStoreUnavailable):
            hasty.release(claim)
        own_firestore_emulator.start()
        assert store.claim("q/during", "fp").acquired  # the same channel, reconnected
        assert store.claim("q/before", "fp").acquired  # the emulator keeps data in memory only
    finally:
        store.close()
        hasty.close()


# -- two gunicorn instances ----------------------------------------------------------------------


class GunicornInstance:
    """``tests/testsupport/firestore_worker.py`` under gunicorn (one worker process, 32 threads)."""

    def __init__(self, env: dict[str, str]) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers=1",
                "--threads=32",
                f"--bind=fd://{listener.fileno()}",
                "testsupport.firestore_worker:create_app()",
            ]
            self.process = ChildProcess(command, child_env(env), lambda _line: None, [listener.fileno()])
        deadline = time.monotonic() + START_TIMEOUT_S  # a wait for a real server to come up
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if not self.process.running or time.monotonic() > deadline:
                self.process.stop()
                raise RuntimeError("gunicorn did not start:\n" + "\n".join(self.process.lines))
            threading.Event().wait(0.1)


@pytest.fixture
def two_instances(
    firestore_emulator: FirestoreEmulator, google_certs_url: str, tokens: Any, tmp_path: Path
) -> Iterator[tuple[list[GunicornInstance], Path]]:
    runs = tmp_path / "runs.txt"
    env = {
        **firestore_emulator.env(),
        "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
        "GOOGLE_CLOUD_PROJECT": "tasktoolkit-test",
        "DEDUP_COLLECTION": f"dedup-{uuid.uuid4().hex}",
        "DEDUP_TIMEOUT_S": str(PATIENT_TIMEOUT_S),
        "TASKTOOLKIT_AUDIENCE": tokens.audience,
        "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": tokens.email,
        "TASKTOOLKIT_GOOGLE_CERTS_URL": google_certs_url,
        "RUNS_FILE": str(runs),
    }
    instances: list[GunicornInstance] = []
    try:
        instances += [GunicornInstance(env), GunicornInstance(env)]
        yield instances, runs
    finally:
        for instance in instances:
            instance.process.stop()


def test_fifty_duplicate_deliveries_across_two_gunicorn_instances_run_the_body_once(
    two_instances: tuple[list[GunicornInstance], Path], tokens: Any, task_headers: Any
) -> None:
    instances, runs = two_instances
    headers = task_headers(tokens.google(), name="hot-task")
    start = threading.Barrier(DELIVERIES)

    def deliver(index: int) -> tuple[int, bool, str]:
        url = instances[index % 2].url + "/tasks/work"
        start.wait(30)
        response = requests.post(url, json={"delay_s": 0.2}, headers=headers, timeout=30)
        replayed = response.headers.get("X-TaskToolkit-Replayed") == "true"
        return response.status_code, replayed, response.headers["X-Worker-Pid"]

    with ThreadPoolExecutor(DELIVERIES) as pool:
        results = list(pool.map(deliver, range(DELIVERIES)))
    assert runs.read_text().splitlines() == [f"{runs.read_text().split()[0]} hot-task"]  # one body run
    outcomes = Counter((status, replayed) for status, replayed, _ in results)
    assert outcomes[(200, False)] == 1
    assert set(outcomes) <= {(200, False), (200, True), (409, False)}, outcomes
    assert len({pid for _, _, pid in results}) == 2  # both processes answered deliveries
