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
    from local_runner.codec import queue_from_json

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
    from local_runner.codec import parse_timestamp

    assert "google.protobuf.Timestamp" in message_of(lambda: parse_timestamp(text, "task.schedule_time"))
