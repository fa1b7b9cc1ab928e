"""A task created during a traced request is handled in its trace: in its header, its logs and its spans."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tasktoolkit import TaskContext, TaskToolkit, spans, task_handler
from tasktoolkit.dedup import MemoryDedupStore
from tasktoolkit.logging_json import CloudRunFormatter
from tasktoolkit.pytest_plugin import LocalRunner
from tasktoolkit.testing import FakeQueue
from tasktoolkit.tracing import PROPAGATION_HEADER

SA = "tasks@my-proj.iam.gserviceaccount.com"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REQUEST_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{REQUEST_SPAN}-01"


def make_app() -> Flask:
    app = Flask("worker")
    app.config.update(
        TASKTOOLKIT_AUDIENCE="https://worker.example",
        TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=[SA],
        TASKTOOLKIT_BASE_URL="https://worker.example",
        TASKTOOLKIT_PROJECT="my-proj",
    )
    TaskToolkit(app, store=MemoryDedupStore())

    @app.post("/signup")
    def signup() -> dict[str, str]:
        welcome.enqueue({"user_id": 42})
        return {"ok": "yes"}

    @app.post("/tasks/welcome")
    @task_handler(queue="emails")
    def welcome(payload: Any, task: TaskContext) -> dict[str, bool]:
        logging.getLogger("tasktoolkit.example").warning("sending to %s", payload["user_id"])
        return {"sent": True}

    return app


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudRunFormatter())
    logger = logging.getLogger("tasktoolkit")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(spans, "tracer_provider", provider)
    return exporter


def _traces(stream: io.StringIO) -> set[str | None]:
    return {json.loads(line).get("logging.googleapis.com/trace") for line in stream.getvalue().splitlines()}


@pytest.fixture
def tasktoolkit_app() -> Flask:
    """The app of the package's ``fake_queue`` fixture."""
    return make_app()


def test_the_handler_logs_in_the_enqueuing_requests_trace(
    log_lines: io.StringIO, tasktoolkit_app: Flask, fake_queue: FakeQueue
) -> None:
    app, fake = tasktoolkit_app, fake_queue
    assert app.test_client().post("/signup", headers={"traceparent": TRACEPARENT}).status_code == 200
    [task] = fake.created
    assert task.headers[PROPAGATION_HEADER].split("-")[1] == TRACE_ID
    [delivery] = fake.run_until_idle()
    assert delivery.status == 200
    # The handler's own line and the delivery's line; Cloud Run's new traceparent on the delivery loses.
    assert _traces(log_lines) == {f"projects/my-proj/traces/{TRACE_ID}"}
    assert len(log_lines.getvalue().splitlines()) == 2


def test_a_cloud_trace_context_request_is_carried_as_a_traceparent(
    tasktoolkit_app: Flask, fake_queue: FakeQueue
) -> None:
    app, fake = tasktoolkit_app, fake_queue
    app.test_client().post("/signup", headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/12345;o=1"})
    [task] = fake.created
    assert task.headers[PROPAGATION_HEADER] == f"00-{TRACE_ID}-0000000000003039-01"


def test_an_untraced_request_adds_no_header_and_a_callers_header_is_kept() -> None:
    app = make_app()
    fake = FakeQueue(app)
    app.test_client().post("/signup")
    with app.test_request_context(headers={"traceparent": TRACEPARENT}):
        fake.enqueue(
            "emails", url="https://worker.example/tasks/welcome", headers={PROPAGATION_HEADER: "mine"}
        )
    assert [task.headers.get(PROPAGATION_HEADER) for task in fake.created] == [None, "mine"]


def test_spans_for_enqueue_and_handling_share_the_trace(
    exporter: InMemorySpanExporter, tasktoolkit_app: Flask, fake_queue: FakeQueue
) -> None:
    app, fake = tasktoolkit_app, fake_queue
    app.test_client().post("/signup", headers={"traceparent": TRACEPARENT})
    fake.run_until_idle()
    [send] = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.PRODUCER]
    [process] = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CONSUMER]
    [task] = fake.created
    assert send.name == "send emails" and process.name == "process emails"
    assert {f"{span.context.trace_id:032x}" for span in (send, process)} == {TRACE_ID}
    assert send.parent is not None and f"{send.parent.span_id:016x}" == REQUEST_SPAN
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "gcp_cloud_tasks",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "emails",
        "messaging.message.id": task.id,
    }
    assert dict(process.attributes or {}) == {
        "messaging.system": "gcp_cloud_tasks",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "emails",
        "messaging.message.id": task.id,
    }


def test_a_failing_handler_marks_its_span_as_an_error(exporter: InMemorySpanExporter) -> None:
    app = make_app()

    @app.post("/tasks/broken")
    @task_handler(queue="emails")
    def broken(payload: Any, task: TaskContext) -> Any:
        raise RuntimeError("boom")

    fake = FakeQueue(app, raise_errors=False)
    with app.app_context():
        broken.enqueue({})
    fake.advance(seconds=0.2)  # the first attempt only
    process = next(span for span in exporter.get_finished_spans() if span.kind is SpanKind.CONSUMER)
    assert not process.status.is_ok and process.status.description == "handler_raised"


def test_through_a_real_runner_the_handler_logs_in_the_same_trace(
    log_lines: io.StringIO,
    local_runner: LocalRunner,
    serve: Callable[[Flask], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", local_runner.url.removeprefix("http://"))
    app = make_app()  # trusts the runner's tokens: the variable is set before TaskToolkit(app)
    app.config.update(
        TASKTOOLKIT_BASE_URL=serve(app).url,
        TASKTOOLKIT_PROJECT="local-project",
        TASKTOOLKIT_LOCATION="us-central1",
    )
    local_runner.client.ensure_queue("emails")
    assert app.test_client().post("/signup", headers={"traceparent": TRACEPARENT}).status_code == 200
    local_runner.wait_idle()
    delivered = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert [line["message"].split(":")[0] for line in delivered[-2:]] == [
        "sending to 42",
        "task emails/" + delivered[-1]["logging.googleapis.com/labels"]["task"],
    ]
    assert {line.get("logging.googleapis.com/trace") for line in delivered[-2:]} == {
        f"projects/local-project/traces/{TRACE_ID}"
    }


def test_without_a_tracer_provider_deliveries_share_one_no_op_span() -> None:
    """With OpenTelemetry's API but no SDK, a delivery builds no span and no context manager of its own."""
    first, second = spans.consumer_span({}), spans.consumer_span({})
    assert first is second
    with first as span:
        span.update("process q", destination_name="q")  # a no-op
        span.failed("handler_raised")


def test_importing_tasktoolkit_imports_no_opentelemetry() -> None:
    code = (
        "import sys, tasktoolkit, tasktoolkit.client, tasktoolkit.testing, tasktoolkit.handler; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_opentelemetry_the_trace_still_travels() -> None:
    code = textwrap.dedent(
        f"""
        import sys

        class NoOpenTelemetry:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(name)

        sys.meta_path.insert(0, NoOpenTelemetry())
        from flask import Flask
        from tasktoolkit import TaskToolkit, task_handler
        from tasktoolkit.testing import FakeQueue

        app = Flask("worker")
        app.config.update(
            TASKTOOLKIT_AUDIENCE="https://worker.example",
            TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=["{SA}"],
            TASKTOOLKIT_BASE_URL="https://worker.example",
            TASKTOOLKIT_STORE="memory://",
        )
        TaskToolkit(app)

        @app.post("/tasks/welcome")
        @task_handler(queue="emails")
        def welcome(payload, task):
            return {{"sent": True}}

        fake = FakeQueue(app)
        with app.test_request_context(headers={{"traceparent": "{TRACEPARENT}"}}):
            welcome.enqueue({{}})
        [delivery] = fake.run_until_idle()
        print(delivery.status, fake.created[0].headers["{PROPAGATION_HEADER}"])
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.splitlines() == [f"200 {TRACEPARENT}", "[]"], result.stderr
