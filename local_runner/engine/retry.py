"""When a failed task is retried, and when it stops (reference §5.3)."""

from __future__ import annotations

from local_runner.model import RetryConfig

#: Tasks are deleted this long after creation whatever their state (reference §3, task retention).
TASK_RETENTION = 31 * 24 * 3600.0
_MAX_EXPONENT = 1000


def backoff_interval(config: RetryConfig, retry_number: int) -> float:
    """The wait before retry ``retry_number`` (1 for the first retry).

    The interval starts at ``min_backoff``, doubles ``max_doublings`` times, then grows linearly by
    ``2**max_doublings * min_backoff`` per retry, and never exceeds ``max_backoff``:
    ``min(max_backoff, min_backoff * 2**min(k-1, D) * max(1, k-D))``.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number}")
    doublings = config.max_doublings
    exponent = min(retry_number - 1, doublings)
    if exponent > _MAX_EXPONENT:  # 2**1024 overflows a float; the cap was reached long before
        return config.max_backoff if config.min_backoff > 0 else 0.0
    interval = config.min_backoff * 2.0**exponent * max(1, retry_number - doublings)
    return float(min(config.max_backoff, interval))


def retries_exhausted(
    config: RetryConfig, attempts_made: int, first_attempt_time: float, create_time: float, now: float
) -> bool:
    """Whether no further attempt may be made after ``attempts_made`` failed ones.

    Retrying stops only when both limits are reached; an unlimited limit (``max_attempts`` -1 or 0,
    ``max_retry_duration`` 0) counts as reached, unless both are unlimited, in which case the task is
    retried until the 31-day retention limit.
    """
    if now - create_time >= TASK_RETENTION:
        return True
    attempts_unlimited = config.max_attempts <= 0
    duration_unlimited = config.max_retry_duration <= 0
    if attempts_unlimited and duration_unlimited:
        return False
    attempts_reached = attempts_unlimited or attempts_made >= config.max_attempts
    duration_reached = duration_unlimited or now - first_attempt_time >= config.max_retry_duration
    return attempts_reached and duration_reached
