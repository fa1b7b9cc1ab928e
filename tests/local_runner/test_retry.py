import pytest

from local_runner.engine.retry import TASK_RETENTION, backoff_interval, retries_exhausted
from local_runner.model import RetryConfig


def test_backoff_doubles_then_grows_linearly_then_caps() -> None:
    # The documented example: min 10 s, max 300 s, 3 doublings (reference §5.3).
    config = RetryConfig(min_backoff=10, max_backoff=300, max_doublings=3)
    assert [backoff_interval(config, k) for k in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300, 300]


def test_backoff_defaults_reach_max_after_sixteen_doublings() -> None:
    config = RetryConfig()
    assert backoff_interval(config, 1) == pytest.approx(0.1)
    assert backoff_interval(config, 16) == pytest.approx(3276.8)
    assert backoff_interval(config, 17) == 3600
    assert backoff_interval(config, 99) == 3600


def test_backoff_with_zero_doublings_is_linear() -> None:
    config = RetryConfig(min_backoff=1, max_backoff=5, max_doublings=0)
    assert [backoff_interval(config, k) for k in range(1, 7)] == [1, 2, 3, 4, 5, 5]


def test_backoff_rejects_retry_zero() -> None:
    with pytest.raises(ValueError):
        backoff_interval(RetryConfig(), 0)


T0 = 1_000_000.0


@pytest.mark.parametrize(
    ("max_attempts", "max_duration", "attempts", "elapsed", "exhausted"),
    [
        # attempts limit only (duration 0 = unlimited counts as reached)
        (3, 0, 2, 10_000, False),
        (3, 0, 3, 0, True),
        # duration limit only (attempts -1 = unlimited counts as reached)
        (-1, 60, 50, 59, False),
        (-1, 60, 50, 60, True),
        # both limits: stop only when both are reached
        (3, 60, 3, 59, False),
        (3, 60, 2, 61, False),
        (3, 60, 3, 60, True),
        # both unlimited: retried until retention
        (-1, 0, 10_000, 10 * 24 * 3600, False),
        (0, 0, 10_000, 10 * 24 * 3600, False),
    ],
)
def test_stop_rule(
    max_attempts: int, max_duration: float, attempts: int, elapsed: float, exhausted: bool
) -> None:
    config = RetryConfig(max_attempts=max_attempts, max_retry_duration=max_duration)
    assert retries_exhausted(config, attempts, T0, T0, T0 + elapsed) is exhausted


def test_unlimited_retries_stop_at_retention() -> None:
    config = RetryConfig(max_attempts=-1)
    assert not retries_exhausted(config, 5, T0, T0, T0 + TASK_RETENTION - 1)
    assert retries_exhausted(config, 5, T0, T0, T0 + TASK_RETENTION)


def test_retry_duration_is_measured_from_first_attempt_not_creation() -> None:
    config = RetryConfig(max_attempts=-1, max_retry_duration=100)
    created, first = T0, T0 + 1000
    assert not retries_exhausted(config, 3, first, created, first + 99)
    assert retries_exhausted(config, 3, first, created, first + 100)


def test_backoff_with_huge_doublings_does_not_overflow() -> None:
    config = RetryConfig(max_attempts=-1, min_backoff=0.1, max_backoff=0.1, max_doublings=2000)
    assert backoff_interval(config, 1500) == 0.1
    assert backoff_interval(RetryConfig(min_backoff=0, max_backoff=0, max_doublings=5000), 3000) == 0.0
