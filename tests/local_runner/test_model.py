import pytest

from local_runner.errors import Code, InvalidArgument
from local_runner.model import (
    HttpMethod,
    HttpRequest,
    OAuthToken,
    OidcToken,
    Queue,
    RateLimits,
    RetryConfig,
    Task,
    parse_queue_name,
    parse_task_name,
)

QUEUE = "projects/my-proj/locations/us-central1/queues/emails"


def message_of(call: object) -> str:
    with pytest.raises(InvalidArgument) as info:
        call()  # type: ignore[operator]
    assert info.value.code is Code.INVALID_ARGUMENT
    return info.value.message


def test_queue_defaults_match_the_real_service() -> None:
    queue = Queue(QUEUE)
    assert queue.rate_limits == RateLimits(500.0, 1000)
    assert queue.rate_limits.max_burst_size == 100
    assert queue.retry_config == RetryConfig(100, 0.0, 0.1, 3600.0, 16)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: RateLimits(max_dispatches_per_second=501),
            "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
        ),
        (
            lambda: RateLimits(max_dispatches_per_second=-1),
            "RateLimits.maxDispatchesPerSecond cannot be negative.",
        ),
        (
            lambda: RateLimits(max_concurrent_dispatches=5001),
            "RateLimits.maxConcurrentDispatches must be less than or equal to 5000.",
        ),
        (
            lambda: RateLimits(max_concurrent_dispatches=-1),
            "RateLimits.maxConcurrentDispatches cannot be negative.",
        ),
        (lambda: RetryConfig(max_attempts=-2), "RetryConfig.maxAttempts must be greater or equal to -1."),
        (lambda: RetryConfig(max_doublings=-1), "RetryConfig.maxDoublings cannot be negative."),
        (lambda: RetryConfig(min_backoff=-1), "RetryConfig.minBackoff cannot be negative."),
        (
            lambda: RetryConfig(min_backoff=10, max_backoff=5),
            "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.",
        ),
        (lambda: HttpRequest(url=""), "HttpRequest.url is required."),
        (lambda: HttpRequest(url="ftp://x"), "HttpTarget.url must start with 'http://' or 'https://'."),
    ],
)
def test_invalid_values_carry_the_real_message(build: object, message: str) -> None:
    assert message_of(build) == message


def test_queue_name_format() -> None:
    assert parse_queue_name(QUEUE).queue_id == "emails"
    expected = (
        'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".'
    )
    for bad in [
        "emails",
        "projects/p/locations/l/queues/",
        "projects/p/locations/l/queues/under_score",
        f"projects/p/locations/l/queues/{'q' * 101}",
    ]:
        assert message_of(lambda bad=bad: parse_queue_name(bad)) == expected


def test_task_id_rules() -> None:
    assert parse_task_name(f"{QUEUE}/tasks/a_B-9").task_id == "a_B-9"
    assert parse_task_name(f"{QUEUE}/tasks/{'x' * 500}")
    message = message_of(lambda: parse_task_name(f"{QUEUE}/tasks/{'x' * 501}"))
    assert "Task ID must between 1 and 500 characters." in message
    assert message_of(lambda: parse_task_name(f"{QUEUE}/tasks/a.b")).startswith(
        'Task ID "a.b" can contain only letters'
    )


def test_task_name_must_belong_to_the_parent_queue() -> None:
    other = "projects/my-proj/locations/us-central1/queues/other"
    message = message_of(lambda: parse_task_name(f"{other}/tasks/t1", parent=QUEUE))
    assert (
        message
        == f"The queue name from request ('{QUEUE}') must be the same as the queue name in the named task "
        f"('{other}/tasks/t1')."
    )


@pytest.mark.parametrize("method", [HttpMethod.GET, HttpMethod.HEAD, HttpMethod.DELETE, HttpMethod.OPTIONS])
def test_body_only_for_post_put_patch(method: HttpMethod) -> None:
    assert "only allowed for POST, PUT and PATCH" in message_of(
        lambda: HttpRequest(url="https://x", http_method=method, body=b"x")
    )
    assert HttpRequest(url="https://x", http_method=method).body == b""


def test_unspecified_method_defaults_to_post() -> None:
    assert (
        HttpRequest(url="https://x", http_method=HttpMethod.HTTP_METHOD_UNSPECIFIED).http_method
        is HttpMethod.POST
    )


def test_only_one_token_kind() -> None:
    message = message_of(
        lambda: HttpRequest(url="https://x", oidc_token=OidcToken("a@b"), oauth_token=OAuthToken("a@b"))
    )
    assert "only one of oauthToken and oidcToken" in message


@pytest.mark.parametrize("deadline", [14.999, 1800.001])
def test_dispatch_deadline_range(deadline: float) -> None:
    message = message_of(
        lambda: Task(
            name=f"{QUEUE}/tasks/t",
            http_request=HttpRequest(url="https://x"),
            schedule_time=0,
            create_time=0,
            dispatch_deadline=deadline,
        )
    )
    assert "between 15s and 1800s" in message


def test_headers_limit() -> None:
    assert "less than 80KB" in message_of(
        lambda: HttpRequest(url="https://x", headers={"X-Big": "a" * 80 * 1024})
    )


def test_codec_rejects_out_of_range_numbers() -> None:
    from local_runner.codec.queues import queue_from_json

    name = "projects/p/locations/l/queues/q"
    assert "retry_config.max_attempts" in message_of(
        lambda: queue_from_json({"name": name, "retryConfig": {"maxAttempts": 1e30}})
    )
    assert "retry_config.max_backoff" in message_of(
        lambda: queue_from_json({"name": name, "retryConfig": {"maxBackoff": "99999999999999999999s"}})
    )


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.9999999Z", "0000-12-31T00:00:00Z"]
)
def test_timestamps_outside_the_proto_range_are_invalid(text: str) -> None:
    from local_runner.codec.scalars import parse_timestamp

    assert "google.protobuf.Timestamp" in message_of(lambda: parse_timestamp(text, "task.schedule_time"))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("2026-01-01T00:00:00.999999999Z", "2026-01-01T00:00:00.999999Z"),
        ("2026-01-01T00:00:00.9999995Z", "2026-01-01T00:00:00.999999Z"),
        ("2026-01-01T00:00:00.000000999Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01T00:00:00.123456789+02:00", "2025-12-31T22:00:00.123456Z"),
        ("1969-12-31T23:59:59.999999999Z", "1969-12-31T23:59:59.999999Z"),
        ("2026-06-30T12:34:56.5Z", "2026-06-30T12:34:56.500Z"),
    ],
)
def test_timestamps_are_truncated_to_the_microsecond(text: str, shown: str) -> None:
    from local_runner.codec.scalars import format_timestamp, parse_timestamp

    assert format_timestamp(parse_timestamp(text)) == shown
    assert format_timestamp(parse_timestamp(shown)) == shown  # and round-trip exactly


def test_every_microsecond_of_a_second_round_trips() -> None:
    from local_runner.codec.scalars import format_timestamp, parse_timestamp

    for micros in range(0, 1_000_000, 7919):  # a prime step: every digit position varies
        digits = f"{micros:06d}"
        fraction = "" if micros == 0 else "." + (digits[:3] if micros % 1000 == 0 else digits)
        assert (
            format_timestamp(parse_timestamp(f"2026-11-30T01:02:03.{digits}Z"))
            == f"2026-11-30T01:02:03{fraction}Z"
        )


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"X-Evil": "a\r\nX-Injected: 1"}, 'value of header "X-Evil" contains CR, LF or NUL'),
        ({"X-Evil": "a\nb"}, "contains CR, LF or NUL"),
        ({"X-Evil": "a\x00b"}, "contains CR, LF or NUL"),
        ({"Bad Name": "x"}, '"Bad Name" is not a valid HTTP header name'),
        ({"X-A:b": "x"}, '"X-A:b" is not a valid HTTP header name'),
        ({"X-A\r\nB": "x"}, r'"X-A\r\nB" is not a valid HTTP header name'),
        ({"": "x"}, '"" is not a valid HTTP header name'),
        ({"Ünicode": "x"}, "is not a valid HTTP header name"),
    ],
)
def test_create_task_refuses_headers_no_request_can_carry(headers: dict[str, str], words: str) -> None:
    from local_runner.codec.tasks import new_task_from_json

    message = message_of(
        lambda: new_task_from_json({"httpRequest": {"url": "https://x/", "headers": headers}})
    )
    assert message.startswith("HttpRequest.headers: ") and words in message
    assert "\r" not in message and "\n" not in message


def test_queue_header_overrides_are_checked_on_input_only() -> None:
    from local_runner.codec.queues import queue_from_json

    name = "projects/p/locations/l/queues/q"
    doc = {"name": name, "httpTarget": {"headerOverrides": [{"header": {"key": "X-A", "value": "1\r\n"}}]}}
    assert message_of(lambda: queue_from_json(doc)).startswith("HttpTarget.headerOverrides: ")
    stored = queue_from_json(doc, zero_means_default=False)  # a document the store wrote earlier still reads
    assert stored.http_target is not None and stored.http_target.header_overrides == (("X-A", "1\r\n"),)
    values = {"key": "Content-Type", "value": "text/plain; charset=utf-8 \t"}
    fine = queue_from_json({"name": name, "httpTarget": {"headerOverrides": [{"header": values}]}})
    assert fine.http_target is not None and fine.http_target.header_overrides == (tuple(values.values()),)


@pytest.mark.parametrize(
    "instant",
    [1767225600.9999996, 1767225600.4999995, 1767225600.0000004, 1767225600.123456, 0.0, -0.5, -1.25],
)
def test_eta_header_and_api_show_the_same_microsecond(instant: float) -> None:
    from local_runner.codec.scalars import format_epoch_seconds, format_timestamp, parse_timestamp

    assert parse_timestamp(format_timestamp(instant)) == float(format_epoch_seconds(instant))
