"""The Firestore emulator killed, or frozen, under load: 503 while it is away, no body run twice, recovery.

Deliveries come as Cloud Tasks sends them (``CloudTasksLike``: two concurrent copies per round, again until
one copy is answered 2xx).

What each variant proves:

- ``killed``: the emulator is SIGKILLed and restarted. It keeps its data in memory only, so the restarted
  emulator has forgotten every record; this variant proves failing closed (503, never a body run, while it
  is down), recovery of the same store object once it is back (the gRPC channel reconnects), and that no
  copy that was in flight across the outage ran a body twice. It does not prove that a duplicate of a task
  completed before the outage is still recognized after it: the emulator cannot, the real Firestore does
  (its writes are durable). The outage lasts longer than the store's operation budget, so no claim that
  started before the kill can land on the emptied emulator.
- ``paused``: the emulator is frozen (SIGSTOP) and thawed, keeping its data, as in a service outage or a
  network partition. Calls time out (503); writes queued while it was frozen land after the thaw, when
  their callers have given up; the owner token and update-time preconditions keep those from causing a
  second run.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from reliability.figures import Figures, Row
from reliability.outage import COPIES, deliver_through_outage, google_sender
from testsupport.firestore_emulator import TEST_TIMEOUT_S, FirestoreEmulator

from tasktoolkit.dedup import FirestoreDedupStore

TASKS = 40
LEASE_S = 2
#: The store's budget per operation; the outage lasts longer than this.
TIMEOUT_S = 0.5
DOWN_S = 1.0
FAULTS = {"killed": "SIGKILLed, restarted", "paused": "SIGSTOPped, resumed"}


@pytest.mark.timeout(TEST_TIMEOUT_S)  # two cold starts of the emulator's JVM in the killed variant
@pytest.mark.parametrize("outage", sorted(FAULTS))
def test_firestore_emulator_stopped_mid_load(
    outage: str,
    own_firestore_emulator: FirestoreEmulator,
    make_worker: Any,
    serve: Any,
    tokens: Any,
    task_headers: Any,
    figures: Figures,
) -> None:
    emulator = own_firestore_emulator
    store = FirestoreDedupStore(
        collection=f"dedup-{uuid.uuid4().hex}", client=emulator.client(), timeout_s=TIMEOUT_S
    )
    worker = make_worker(store, TASKTOOLKIT_LEASE_S=LEASE_S)
    url = serve(worker.app).url + "/tasks/work"
    sender = google_sender(url, tokens, task_headers)
    names = [f"task-{index}" for index in range(TASKS)]

    def outage_of_the_emulator() -> None:
        if outage == "killed":
            emulator.kill()
            threading.Event().wait(DOWN_S)  # the load goes on against no emulator at all
            emulator.start()
        else:
            emulator.pause()
            threading.Event().wait(DOWN_S)
            emulator.resume()

    try:
        seen = deliver_through_outage(
            sender,
            names,
            lambda: Counter(payload["n"] for _, payload in worker.runs),
            outage_of_the_emulator,
            120,
        )
    finally:
        store.close()
    figures.record(
        Row(
            f"Firestore dedup store ({outage} emulator) under load",
            f"{TASKS} tasks x {COPIES} concurrent copies until acknowledged, 8 senders; "
            f"{sum(seen.statuses.values())} deliveries",
            f"emulator {FAULTS[outage]} after {DOWN_S} s mid-load "
            f"({seen.while_away[503]} answers 503 while away)",
            lost=0,
            duplicates=sum(seen.runs.values()) - TASKS,
            server_errors=seen.statuses[500],
        )
    )
