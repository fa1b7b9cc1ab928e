"""The console's stats ring buffer, chart geometry and body decoding (pure, time passed in)."""

from __future__ import annotations

import json

from local_runner.console.chart import HEIGHT, bar_chart
from local_runner.console.payload import MAX_SHOWN_BYTES, decode_payload
from local_runner.console.stats import EXCERPT_TASKS, EXCERPTS_PER_TASK, WINDOW, Bucket, OutcomeLog
from local_runner.engine.attempts import Failure, Outcome
from local_runner.model import Attempt, HttpRequest, Task

Q = "projects/p/locations/l/queues/q"


def claimed(task_id: str = "t", dispatch_time: float = 1000.0, queue: str = Q) -> Task:
    started = Attempt(schedule_time=dispatch_time, dispatch_time=dispatch_time)
    request = HttpRequest(url="http://127.0.0.1:9/")
    return Task(f"{queue}/tasks/{task_id}", request, dispatch_time, dispatch_time, last_attempt=started)


def test_outcomes_are_counted_per_second_and_forgotten_after_the_window() -> None:
    log = OutcomeLog()
    for at, status in ((1000.2, 200), (1000.9, 500), (1030.0, 200), (1059.5, None)):
        failure = Failure.UNREACHABLE if status is None else None
        log.record(claimed(), Outcome(at, http_status=status, failure=failure))
    assert log.buckets(Q, 1059.9, 60, 60) == [Bucket(2, 2)]
    assert log.buckets(Q, 1060.0, 60, 60) == [Bucket(1, 1)]  # 1000 left the last minute
    assert log.buckets(Q, 1060.0, 60, 30) == [Bucket(1, 0), Bucket(0, 1)]  # 1001-1030, 1031-1060
    assert log.buckets(Q, 1000.0 + WINDOW + 100, 60, 60) == [Bucket(0, 0)]
    log.record(claimed(), Outcome(1000.0 + WINDOW, http_status=200))  # same slot, a new second: starts afresh
    assert log.buckets(Q, 1000.0 + WINDOW, WINDOW, WINDOW) == [Bucket(2, 1)]
    assert log.buckets("projects/p/locations/l/queues/other", 1060.0, 60, 30) == [Bucket(0, 0)] * 2


def test_chart_stacks_failures_on_deliveries_scaled_to_the_busiest_bar() -> None:
    chart = bar_chart([Bucket(0, 0), Bucket(2, 2), Bucket(1, 0)], seconds_per_bar=20)
    assert chart.peak == 4 and chart.label == "last 1 min: 3 delivered, 2 failed"
    delivered, failed, single = chart.bars
    assert (delivered.kind, failed.kind) == ("delivered", "failed")
    assert delivered.height == failed.height == HEIGHT / 2 and failed.y == 0
    assert single.height == HEIGHT / 4 and single.title.startswith("1 delivered, 0 failed, 0-20s ago")
    assert bar_chart([Bucket(0, 0)] * 3, 20).bars == []


def test_payload_kinds() -> None:
    assert decode_payload(b"").kind == "empty"
    assert decode_payload(b'{"a": [1]}').text == json.dumps({"a": [1]}, indent=2)
    assert decode_payload(b'"just a string"').kind == "text"  # JSON scalars stay as sent
    assert decode_payload(b"\xff\x00").kind == "binary"
    cut = decode_payload(b"a" * (MAX_SHOWN_BYTES - 1) + "é".encode())  # é split by the cap
    assert cut.kind == "text" and cut.truncated and cut.text == "a" * (MAX_SHOWN_BYTES - 1)
    deep = decode_payload(b"[" * 100_000)
    assert deep.kind == "text"


def test_exchanges_align_with_the_latest_attempts_of_the_latest_tasks() -> None:
    log = OutcomeLog()
    name = f"{Q}/tasks/t"
    assert log.exchanges(name, 2) == [None, None]  # attempts of an earlier runner process
    for attempt in range(EXCERPTS_PER_TASK + 1):
        task = claimed().replace(dispatch_count=attempt + 1, previous_response=500 if attempt else None)
        log.record(task, Outcome(2000.0, http_status=500, excerpt=b"x%d" % attempt))
    log.record(claimed().replace(dispatch_count=99), Outcome(2000.0, http_status=204))
    last_two = log.exchanges(name, 2)
    assert [e.excerpt for e in last_two if e] == [b"x%d" % EXCERPTS_PER_TASK, b""]
    assert last_two[-1] is not None and last_two[-1].sent["X-CloudTasks-TaskRetryCount"] == "98"
    kept = log.exchanges(name, EXCERPTS_PER_TASK + 2)
    assert kept[:2] == [None, None] and kept[2] is not None and kept[2].excerpt == b"x2"
    assert kept[2].sent["X-CloudTasks-TaskPreviousResponse"] == "500"
    assert log.exchanges(name, 0) == []
    for index in range(EXCERPT_TASKS):
        log.record(claimed(f"other{index}"), Outcome(2000.0, http_status=200, excerpt=b"ok"))
    assert log.exchanges(name, 1) == [None]  # the least recently answered task went first
    assert [e.excerpt for e in log.exchanges(f"{Q}/tasks/other0", 1) if e] == [b"ok"]
