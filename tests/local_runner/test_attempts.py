"""Sans-IO: how outcomes change a task, and the headers each following attempt carries."""

import dataclasses

import pytest

from local_runner.engine.attempts import Failure, Outcome, decide, rpc_status
from local_runner.engine.delivery import build_request, parse_retry_after
from local_runner.model import (
    Attempt,
    HttpMethod,
    HttpRequest,
    HttpTarget,
    OidcToken,
    Queue,
    RetryConfig,
    Task,
    TaskState,
    UriOverride,
)

T0 = 1_700_000_000.0
#: How long an ended task holds its name (the service's task tombstone).
TOMBSTONE = 3600.0
QUEUE = Queue(
    "projects/p/locations/l/queues/emails",
    retry_config=RetryConfig(min_backoff=10, max_backoff=300, max_doublings=3),
)


def new_task(**changes: object) -> Task:
    task = Task(
        name=f"{QUEUE.name}/tasks/welcome-42",
        http_request=HttpRequest(url="https://worker.example/tasks/send", body=b"{}"),
        schedule_time=T0,
        create_time=T0,
    )
    return dataclasses.replace(task, **changes)  # type: ignore[arg-type]


def claim(task: Task, now: float) -> Task:
    """What a store's claim does."""
    attempt = Attempt(schedule_time=task.schedule_time, dispatch_time=now)
    return task.replace(
        state=TaskState.DISPATCHING,
        dispatch_count=task.dispatch_count + 1,
        first_attempt=task.first_attempt or attempt,
        last_attempt=attempt,
    )


def cloudtasks_headers(task: Task, now: float) -> dict[str, str]:
    request = build_request(task, QUEUE, None, now)
    return {k: v for k, v in request.headers.items() if k.startswith("X-CloudTasks-")}


def test_header_sequence_matches_the_real_service() -> None:
    """Reference §5.1: receiver answers 503, 404, 429, 500, 302, then 200."""
    statuses = [503, 404, 429, 500, 302, 200]
    expected = [
        (0, 0, None),
        (1, 0, "503"),
        (2, 1, "404"),
        (3, 2, "429"),
        (4, 2, "500"),
        (5, 3, "302"),
    ]
    task = new_task()
    now = T0
    for status, (retry, execution, previous) in zip(statuses, expected, strict=True):
        task = claim(task, now)
        headers = cloudtasks_headers(task, now)
        assert headers["X-CloudTasks-QueueName"] == "emails"
        assert headers["X-CloudTasks-TaskName"] == "welcome-42"
        assert headers["X-CloudTasks-TaskRetryCount"] == str(retry)
        assert headers["X-CloudTasks-TaskExecutionCount"] == str(execution)
        assert headers["X-CloudTasks-TaskETA"] == f"{task.schedule_time:.6f}"
        if previous is None:
            assert "X-CloudTasks-TaskPreviousResponse" not in headers
            assert "X-CloudTasks-TaskRetryReason" not in headers
        else:
            assert headers["X-CloudTasks-TaskPreviousResponse"] == previous
            assert headers["X-CloudTasks-TaskRetryReason"] == ""
        decision = decide(
            task, Outcome(now + 0.01, http_status=status), QUEUE.retry_config, tombstone=TOMBSTONE
        )
        task = decision.task
        now = task.schedule_time
    assert decision.deletes
    assert task.response_count == 6
    assert task.dispatch_count == 6


def test_deadline_gives_504_previous_response_and_no_execution() -> None:
    task = claim(new_task(), T0)
    decision = decide(
        task, Outcome(T0 + 600, failure=Failure.DEADLINE), QUEUE.retry_config, tombstone=TOMBSTONE
    )
    assert decision.attempt.http_status is None
    assert decision.attempt.response_time is None
    assert decision.attempt.response_status is not None
    assert decision.attempt.response_status.code == 4  # DEADLINE_EXCEEDED
    retried = claim(decision.task, decision.task.schedule_time)
    headers = cloudtasks_headers(retried, retried.schedule_time)
    assert headers["X-CloudTasks-TaskPreviousResponse"] == "504"
    assert headers["X-CloudTasks-TaskExecutionCount"] == "0"
    assert headers["X-CloudTasks-TaskRetryCount"] == "1"
    assert retried.response_count == 0


def test_retry_is_scheduled_from_failure_time_with_backoff() -> None:
    task = new_task()
    delays = []
    now = T0
    for _ in range(8):
        task = claim(task, now)
        decision = decide(task, Outcome(now + 1, http_status=500), QUEUE.retry_config, tombstone=TOMBSTONE)
        delays.append(decision.next_retry_in)
        assert decision.task.schedule_time == pytest.approx(now + 1 + decision.next_retry_in)
        task = decision.task
        now = task.schedule_time
    assert delays == [10, 20, 40, 80, 160, 240, 300, 300]


def test_retry_after_is_honoured_when_longer_than_backoff() -> None:
    task = claim(new_task(), T0)
    decision = decide(
        task, Outcome(T0, http_status=429, retry_after=120), QUEUE.retry_config, tombstone=TOMBSTONE
    )
    assert decision.next_retry_in == 120
    short = decide(task, Outcome(T0, http_status=503, retry_after=1), QUEUE.retry_config, tombstone=TOMBSTONE)
    assert short.next_retry_in == 10


def test_exhausted_after_max_attempts() -> None:
    config = RetryConfig(max_attempts=2, min_backoff=1, max_backoff=1)
    task = claim(new_task(), T0)
    first = decide(task, Outcome(T0, http_status=500), config, tombstone=TOMBSTONE)
    assert first.task.state is TaskState.QUEUED
    second = decide(claim(first.task, T0 + 1), Outcome(T0 + 1, http_status=500), config, tombstone=TOMBSTONE)
    assert second.task.state is TaskState.EXHAUSTED
    assert second.next_retry_in is None and not second.deletes


def test_an_ended_task_holds_its_name_and_a_retry_does_not() -> None:
    """One result type: what the store records (tombstone, delete) and what the log says (next retry)."""
    config = RetryConfig(max_attempts=2, min_backoff=1, max_backoff=1)
    retry = decide(claim(new_task(), T0), Outcome(T0 + 2, http_status=500), config, tombstone=TOMBSTONE)
    assert (retry.tombstone_until, retry.next_retry_in, retry.deletes) == (None, 1, False)
    done = decide(claim(retry.task, T0 + 3), Outcome(T0 + 4, http_status=200), config, tombstone=TOMBSTONE)
    assert (done.tombstone_until, done.next_retry_in, done.deletes) == (T0 + 4 + TOMBSTONE, None, True)
    last = decide(claim(retry.task, T0 + 3), Outcome(T0 + 5, http_status=500), config, tombstone=TOMBSTONE)
    assert (last.tombstone_until, last.task.state, last.deletes) == (
        T0 + 5 + TOMBSTONE,
        TaskState.EXHAUSTED,
        False,
    )
    twice = last.duplicated(503)
    assert (twice.attempt.duplicated, twice.attempt.duplicate_http_status) == (True, 503)
    assert dataclasses.replace(twice, attempt=last.attempt) == last


def test_task_level_retry_config_overrides_queue() -> None:
    task = claim(new_task(retry_config=RetryConfig(max_attempts=1)), T0)
    decision = decide(task, Outcome(T0, http_status=500), QUEUE.retry_config, tombstone=TOMBSTONE)
    assert decision.task.state is TaskState.EXHAUSTED


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (200, 0, "OK"),
        (502, 13, "HTTP status code 502"),
        (404, 5, "HTTP status code 404"),
        (429, 8, "HTTP status code 429"),
        (302, 2, "HTTP status code 302"),
    ],
)
def test_rpc_status_of_responses(status: int, code: int, message: str) -> None:
    result = rpc_status(Outcome(T0, http_status=status), 600)
    assert (result.code, result.message) == (code, message)


def test_request_carries_user_agent_and_oidc_token_replaces_authorization() -> None:
    from local_runner.oidc import SigningKey, TokenIssuer

    issuer = TokenIssuer(SigningKey.generate(), "http://127.0.0.1:1")
    task = claim(
        new_task(
            http_request=HttpRequest(
                url="https://worker.example/tasks/send?x=1",
                headers={
                    "authorization": "Basic abc",
                    "User-Agent": "mine",
                    "X-CloudTasks-TaskName": "forged",
                    "content-type": "application/json",
                },
                oidc_token=OidcToken("tasks@p.iam.gserviceaccount.com"),
            )
        ),
        T0,
    )
    request = build_request(task, QUEUE, issuer.mint, T0)
    assert request.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert request.headers["X-CloudTasks-TaskName"] == "welcome-42"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.headers["Authorization"].startswith("Bearer ey")
    assert (
        request.headers["Authorization"]
        == f"Bearer {issuer.mint('tasks@p.iam.gserviceaccount.com', task.http_request.url, T0)}"
    )


def test_queue_http_target_overrides_uri_method_and_headers() -> None:
    queue = dataclasses.replace(
        QUEUE,
        http_target=HttpTarget(
            uri_override=UriOverride(scheme="HTTP", host="127.0.0.1", port=9000, path="/override"),
            http_method=HttpMethod.PUT,
            header_overrides=(("X-Env", "local"),),
        ),
    )
    task = claim(new_task(), T0)
    request = build_request(task, queue, None, T0)
    assert request.url == "http://127.0.0.1:9000/override"
    assert request.method == "PUT"
    assert request.headers["X-Env"] == "local"
    assert request.body == b"{}"


def test_body_dropped_when_queue_forces_get() -> None:
    queue = dataclasses.replace(QUEUE, http_target=HttpTarget(http_method=HttpMethod.GET))
    request = build_request(claim(new_task(), T0), queue, None, T0)
    assert (request.method, request.body) == ("GET", b"")


def test_parse_retry_after() -> None:
    assert parse_retry_after("30", T0) == 30
    assert parse_retry_after("Wed, 15 Nov 2023 00:00:00 GMT", 1700006400.0 - 60) == pytest.approx(60)
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after(None, T0) is None


def test_a_retry_due_after_retention_ends_the_task() -> None:
    config = RetryConfig(max_attempts=-1, min_backoff=40 * 24 * 3600, max_backoff=40 * 24 * 3600)
    decision = decide(claim(new_task(), T0), Outcome(T0, http_status=500), config, tombstone=TOMBSTONE)
    assert decision.task.state is TaskState.EXHAUSTED
    assert decision.next_retry_in is None
