"""The request built for an attempt: URL encoding, headers never sent, previous response (no I/O)."""

from __future__ import annotations

import pytest

from local_runner.engine.delivery import build_request, encode_url
from local_runner.model import Attempt, HttpRequest, HttpTarget, Queue, Task

T0 = 1_700_000_000.0
QUEUE = Queue("projects/p/locations/l/queues/q")


def claimed(
    url: str = "https://worker.example/x", headers: dict[str, str] | None = None, **changes: object
) -> Task:
    """A task as claimed for its first attempt (``changes`` applied)."""
    task = Task(
        name=f"{QUEUE.name}/tasks/t",
        http_request=HttpRequest(url=url, headers=headers or {}),
        schedule_time=T0,
        create_time=T0,
        dispatch_count=1,
        last_attempt=Attempt(schedule_time=T0, dispatch_time=T0),
    )
    return task.replace(**changes)


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://h/a b?c d", "http://h/a%20b?c%20d"),
        ("http://h/café?q=é", "http://h/caf%C3%A9?q=%C3%A9"),
        (
            "http://h/a%20b/%7Euser?x=%41&y=a+b&z=/:@!$'()*,;=",
            "http://h/a%20b/%7Euser?x=%41&y=a+b&z=/:@!$'()*,;=",
        ),
        ('http://h/"<>`{}|\\^', "http://h/%22%3C%3E%60%7B%7D%7C%5C%5E"),
        ("http://h/x#fragment", "http://h/x"),
        ("http://bücher.example:8080/ü", "http://xn--bcher-kva.example:8080/%C3%BC"),
        ("https://user@bücher.example/", "https://user@xn--bcher-kva.example/"),
        ("http://127.0.0.1:8080/plain/path?a=1&b=2", "http://127.0.0.1:8080/plain/path?a=1&b=2"),
    ],
)
def test_urls_are_encoded_like_a_browser_does(url: str, sent: str) -> None:
    assert encode_url(url) == sent
    assert build_request(claimed(url), QUEUE, None, T0).url == sent


def test_framing_and_hop_by_hop_headers_are_never_sent_even_as_queue_overrides() -> None:
    framing = {
        "Transfer-Encoding": "chunked",
        "connection": "close",
        "TE": "trailers",
        "Expect": "100-continue",
    }
    overrides = (("Upgrade", "h2c"), ("Keep-Alive", "timeout=5"), ("X-Queue", "1"))
    queue = QUEUE.replace(http_target=HttpTarget(header_overrides=overrides))
    task = claimed(headers={**framing, "Content-Length": "9", "X-Task": "1"})
    headers = {name.lower() for name in build_request(task, queue, None, T0).headers}
    assert {"x-task", "x-queue"} <= headers
    assert not headers & {
        "transfer-encoding",
        "connection",
        "te",
        "expect",
        "upgrade",
        "keep-alive",
        "content-length",
    }


def test_previous_response_of_an_interrupted_attempt_is_504() -> None:
    """A task recovered by an earlier runner version carries no previous response at all."""
    task = claimed(dispatch_count=2, previous_response=None)
    assert build_request(task, QUEUE, None, T0).headers["X-CloudTasks-TaskPreviousResponse"] == "504"
