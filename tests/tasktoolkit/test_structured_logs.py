"""Cloud Run structured logs: one JSON line per delivery, with its trace and its labels."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tasktoolkit import ConfigurationError, logging_json
from tasktoolkit.dedup import MemoryDedupStore, RedisDedupStore
from tasktoolkit.logging_json import CloudRunFormatter, configure_logging
from tasktoolkit.tracing import parse_cloud_trace_context, parse_traceparent, trace_from_headers

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Lines:
    """The JSON lines the ``tasktoolkit`` loggers wrote through a :class:`CloudRunFormatter`."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def deliveries(self) -> list[dict[str, Any]]:
        return [line for line in self.all() if logging_json.LABELS_FIELD in line]


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lines]:
    captured = Lines()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(CloudRunFormatter())
    logger = logging.getLogger("tasktoolkit")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    ticks = iter(range(1000))
    # Each reading is 12.5 ms after the last: a delivery measures exactly 12.5 ms.
    monkeypatch.setattr(logging_json, "clock", lambda: next(ticks) * 0.0125)
    yield captured
    logger.removeHandler(handler)
    logger.setLevel(previous)


@pytest.fixture
def post(make_worker: Any, tokens: Any, task_headers: Any) -> Callable[..., Any]:
    worker = make_worker(MemoryDedupStore(), TASKTOOLKIT_PROJECT="my-proj")
    client = worker.app.test_client()

    def send(payload: Any, path: str = "/tasks/work", token: str | None = "google", **headers: Any) -> Any:
        bearer = tokens.google() if token == "google" else token
        return client.post(path, json=payload, headers=task_headers(bearer, **headers))

    return send


def test_a_delivery_writes_one_json_line_with_trace_and_labels(lines: Lines, post: Any) -> None:
    assert post({"action": "ok"}, retry=2, traceparent=TRACEPARENT).status_code == 200
    assert lines.all() == [
        {
            "severity": "INFO",
            "message": "task emails/task-1: returned_2xx, 200 in 12.5 ms",
            "logging.googleapis.com/trace": f"projects/my-proj/traces/{TRACE_ID}",
            "logging.googleapis.com/labels": {
                "queue": "emails",
                "task": "task-1",
                "retry_count": "2",
                "execution_count": "2",
                "dedup": "ran",
                "outcome": "returned_2xx",
                "status": "200",
                "latency_ms": "12.5",
            },
        }
    ]


@pytest.mark.parametrize(
    ("payload", "path", "severity", "outcome", "dedup", "status"),
    [
        ({"action": "retry"}, "/tasks/work", "INFO", "retry_requested", "ran", 503),
        ({"action": "permanent"}, "/tasks/work", "WARNING", "permanent_failure", "ran", 200),
        ({"action": "error"}, "/tasks/work", "ERROR", "handler_raised", "ran", 500),
        ({"action": "status", "status": 429}, "/tasks/work", "WARNING", "returned_other", "ran", 429),
        ({"action": "abort"}, "/tasks/work", "WARNING", "http_exception", "ran", 404),
        ({"action": "ok"}, "/tasks/no-dedup", "INFO", "returned_2xx", "off", 200),
    ],
)
def test_each_outcome_is_logged_at_its_level(
    lines: Lines, post: Any, payload: Any, path: str, severity: str, outcome: str, dedup: str, status: int
) -> None:
    assert post(payload, path=path).status_code == status
    [line] = lines.deliveries()
    labels = line["logging.googleapis.com/labels"]
    assert (line["severity"], labels["outcome"], labels["dedup"], labels["status"]) == (
        severity,
        outcome,
        dedup,
        str(status),
    )


def test_replay_and_payload_mismatch_are_labelled(lines: Lines, post: Any) -> None:
    post({"user_id": 7}, path="/tasks/welcome")
    post({"user_id": 7}, path="/tasks/welcome", retry=1)
    post({"user_id": 7, "changed": True}, path="/tasks/welcome", retry=2)
    found = [
        (line["severity"], line["logging.googleapis.com/labels"]["dedup"]) for line in lines.deliveries()
    ]
    assert found == [("INFO", "ran"), ("INFO", "replayed"), ("ERROR", "mismatch")]


def test_a_rejected_request_is_one_warning_without_task_labels(lines: Lines, post: Any) -> None:
    assert post({}, token=None).status_code == 401
    [line] = lines.deliveries()
    assert line == {
        "severity": "WARNING",
        "message": "task request to /tasks/work: bad_token, 401 in 12.5 ms",
        "logging.googleapis.com/labels": {"outcome": "bad_token", "status": "401", "latency_ms": "12.5"},
    }


def test_the_handler_traceback_line_carries_the_trace_too(lines: Lines, post: Any) -> None:
    post({"action": "error"}, **{"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"})
    traced = [line.get("logging.googleapis.com/trace") for line in lines.all()]
    assert len(traced) == 2 and set(traced) == {f"projects/my-proj/traces/{TRACE_ID}"}
    assert "RuntimeError: secret internal detail" in lines.all()[0]["message"]


def test_trace_headers_are_parsed_and_the_propagated_one_wins() -> None:
    assert parse_traceparent(TRACEPARENT) is not None
    assert parse_traceparent(f"00-{'0' * 32}-00f067aa0ba902b7-01") is None
    assert parse_traceparent("00-short-00f067aa0ba902b7-01") is None
    cloud = parse_cloud_trace_context(f"{TRACE_ID.upper()}/12345;o=1")
    assert cloud is not None and cloud.traceparent == f"00-{TRACE_ID}-0000000000003039-01"
    assert parse_cloud_trace_context(f"{TRACE_ID}/{2**64}") is None
    other = "0af7651916cd43dd8448eb211c80319c"
    chosen = trace_from_headers(
        {"x-tasktoolkit-traceparent": f"00-{other}-b7ad6b7169203331-01", "traceparent": TRACEPARENT}
    )
    assert chosen is not None and chosen.trace_id == other


@pytest.fixture
def clean_tasktoolkit_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tasktoolkit")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


def test_json_logs_turn_on_with_k_service_or_the_key(clean_tasktoolkit_logger: logging.Logger) -> None:
    configure_logging({}, {})
    assert clean_tasktoolkit_logger.handlers == []
    configure_logging({"TASKTOOLKIT_LOG_FORMAT": "text"}, {"K_SERVICE": "worker"})
    assert clean_tasktoolkit_logger.handlers == []
    configure_logging({}, {"K_SERVICE": "worker"})
    configure_logging({"TASKTOOLKIT_LOG_FORMAT": "json"}, {})
    [handler] = clean_tasktoolkit_logger.handlers
    assert isinstance(handler.formatter, CloudRunFormatter)
    assert clean_tasktoolkit_logger.propagate is False


def test_an_unknown_log_format_names_the_key_and_the_choices(make_app: Any) -> None:
    from tasktoolkit import TaskToolkit

    with pytest.raises(ConfigurationError, match=r"TASKTOOLKIT_LOG_FORMAT must be one of json, text"):
        TaskToolkit(make_app(TASKTOOLKIT_LOG_FORMAT="yaml", TASKTOOLKIT_STORE="memory://"))


def test_a_duplicate_while_the_first_runs_is_labelled_in_progress(
    lines: Lines, make_worker: Any, tokens: Any, task_headers: Any
) -> None:
    worker = make_worker(MemoryDedupStore(), TASKTOOLKIT_PROJECT="my-proj")
    headers = task_headers(tokens.google())
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            worker.app.test_client().post, "/tasks/work", json={"action": "block"}, headers=headers
        )
        assert worker.started.wait(10)
        assert (
            worker.app.test_client()
            .post("/tasks/work", json={"action": "block"}, headers=headers)
            .status_code
            == 409
        )
        worker.unblock.set()
        assert first.result(10).status_code == 200
    found = [
        (line["severity"], line["logging.googleapis.com/labels"]["dedup"]) for line in lines.deliveries()
    ]
    assert found == [("INFO", "in_progress"), ("INFO", "ran")]


def test_an_unreachable_store_is_one_error_labelled_unavailable(
    lines: Lines, own_redis_server: Any, make_worker: Any, tokens: Any, task_headers: Any
) -> None:
    store = RedisDedupStore.from_url(own_redis_server.url)
    try:
        worker = make_worker(store)
        own_redis_server.kill()
        response = worker.app.test_client().post(
            "/tasks/work", json={}, headers=task_headers(tokens.google())
        )
        assert response.status_code == 503
    finally:
        store.close()
    [line] = lines.deliveries()
    labels = line["logging.googleapis.com/labels"]
    assert (line["severity"], labels["dedup"], labels["outcome"]) == (
        "ERROR",
        "unavailable",
        "store_unavailable",
    )
