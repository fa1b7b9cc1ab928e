"""TaskContext parsing from X-CloudTasks-* headers (values as captured from Cloud Tasks, reference §5.1)."""

from __future__ import annotations

import datetime

import pytest

from tasktoolkit.errors import InvalidTaskRequest
from tasktoolkit.headers import TaskContext, parse_task_context

FIRST_ATTEMPT = {
    "X-CloudTasks-QueueName": "nest-cloud-run-queue-demo",
    "X-CloudTasks-TaskName": "01234567890123456789",
    "X-CloudTasks-TaskRetryCount": "0",
    "X-CloudTasks-TaskExecutionCount": "0",
    "X-CloudTasks-TaskETA": "1721236265.266817",
}


def test_first_attempt() -> None:
    task = parse_task_context(FIRST_ATTEMPT, b'{"user_id": 7}')
    assert task == TaskContext(
        queue_name="nest-cloud-run-queue-demo",
        task_name="01234567890123456789",
        retry_count=0,
        execution_count=0,
        eta=datetime.datetime(2024, 7, 17, 17, 11, 5, 266817, tzinfo=datetime.UTC),
        previous_response=None,
        retry_reason=None,
        body=b'{"user_id": 7}',
        payload={"user_id": 7},
    )
    assert not task.is_retry


def test_retry_attempt_in_lower_case() -> None:
    headers = {k.lower(): v for k, v in FIRST_ATTEMPT.items()}
    headers.update(
        {
            "x-cloudtasks-taskretrycount": "4",
            "x-cloudtasks-taskexecutioncount": "2",
            "x-cloudtasks-taskpreviousresponse": "500",
            "x-cloudtasks-taskretryreason": "",
            "x-cloudtasks-tasketa": "1721236265",
        }
    )
    task = parse_task_context(headers, b"")
    assert (task.retry_count, task.execution_count, task.previous_response, task.retry_reason) == (
        4,
        2,
        500,
        "",
    )
    assert task.is_retry and task.payload is None
    assert task.eta.timestamp() == 1721236265


def test_json_parsing_can_be_turned_off() -> None:
    task = parse_task_context(FIRST_ATTEMPT, b"\x89PNG...", parse_json=False)
    assert task.payload is None and task.body == b"\x89PNG..."


@pytest.mark.parametrize(
    "missing",
    [
        "X-CloudTasks-QueueName",
        "X-CloudTasks-TaskName",
        "X-CloudTasks-TaskRetryCount",
        "X-CloudTasks-TaskExecutionCount",
        "X-CloudTasks-TaskETA",
    ],
)
def test_missing_header_is_named(missing: str) -> None:
    headers = {k: v for k, v in FIRST_ATTEMPT.items() if k != missing}
    with pytest.raises(InvalidTaskRequest, match=f"missing {missing} header"):
        parse_task_context(headers, b"")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-CloudTasks-TaskRetryCount", "-1"),
        ("X-CloudTasks-TaskRetryCount", "1_0"),
        ("X-CloudTasks-TaskExecutionCount", " 1"),
        ("X-CloudTasks-TaskExecutionCount", "²"),
        ("X-CloudTasks-TaskPreviousResponse", "five hundred"),
        ("X-CloudTasks-TaskETA", "tomorrow"),
        ("X-CloudTasks-TaskETA", "nan"),
        ("X-CloudTasks-TaskETA", "-5"),
        ("X-CloudTasks-TaskETA", "1e300"),
        ("X-CloudTasks-TaskName", ""),
        ("X-CloudTasks-TaskName", "has space"),
        ("X-CloudTasks-QueueName", "x" * 501),
    ],
)
def test_malformed_header_is_named(header: str, value: str) -> None:
    with pytest.raises(InvalidTaskRequest, match=header):
        parse_task_context({**FIRST_ATTEMPT, header: value}, b"")


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe"])
def test_malformed_json_body(body: bytes) -> None:
    with pytest.raises(InvalidTaskRequest, match="not valid JSON"):
        parse_task_context(FIRST_ATTEMPT, body)
