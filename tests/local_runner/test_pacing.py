import pytest

from local_runner.engine.pacing import MIN_THROTTLE, QueuePacer
from local_runner.engine.token_bucket import TokenBucket
from local_runner.model import RateLimits, derive_burst_size

T0 = 1_000_000.0


def test_bucket_starts_full_and_refills_at_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=T0)
    assert bucket.available(T0) == 5
    bucket.take(5, T0)
    assert bucket.available(T0) == 0
    assert bucket.next_token_time(T0) == pytest.approx(T0 + 0.1)
    assert bucket.available(T0 + 0.25) == 2
    assert bucket.available(T0 + 100) == 5  # never above capacity


def test_bucket_with_zero_rate_never_refills() -> None:
    bucket = TokenBucket(rate=0, capacity=10, now=T0)
    bucket.take(10, T0)
    assert bucket.next_token_time(T0) is None
    assert bucket.available(T0 + 1e6) == 0


@pytest.mark.parametrize(("rate", "burst"), [(500, 100), (5, 10), (1, 10), (0.5, 10), (100, 20), (250, 50)])
def test_burst_is_derived_from_rate(rate: float, burst: int) -> None:
    assert derive_burst_size(rate) == burst
    assert RateLimits(max_dispatches_per_second=rate).max_burst_size == burst


def test_rate_over_time_matches_configuration() -> None:
    """Simulate a backlog at 5/s for 100 s of virtual time: burst of 10, then 5 per second."""
    pacer = QueuePacer(RateLimits(max_dispatches_per_second=5, max_concurrent_dispatches=1000), T0)
    started = []
    now = T0
    while now < T0 + 100:
        budget = pacer.budget(now)
        if budget:
            pacer.started(budget, now)
            started.extend([now] * budget)
        nxt = pacer.next_start_time(now)
        assert nxt is not None
        now = max(nxt, now + 1e-6)
    assert started[:10] == [T0] * 10
    steady = [t for t in started if T0 + 10 <= t < T0 + 90]
    assert len(steady) == pytest.approx(400, abs=2)


def test_concurrency_cap_limits_budget_until_attempts_finish() -> None:
    pacer = QueuePacer(RateLimits(max_dispatches_per_second=500, max_concurrent_dispatches=3), T0)
    assert pacer.budget(T0) == 3
    pacer.started(3, T0)
    assert pacer.budget(T0 + 10) == 0
    assert pacer.next_start_time(T0 + 10) is None  # only a finishing attempt frees a slot
    pacer.finished(200, False, T0 + 10)
    assert pacer.budget(T0 + 10) == 1


def test_run_task_dispatch_spends_no_token_but_takes_a_slot() -> None:
    pacer = QueuePacer(RateLimits(max_dispatches_per_second=1, max_concurrent_dispatches=5), T0)
    pacer.started(1, T0, paced=False)
    assert pacer.in_flight == 1
    assert pacer.budget(T0) == 4  # bucket still holds its 10 tokens; concurrency limits to 4


def test_429_and_503_slow_the_queue_and_successes_restore_it() -> None:
    pacer = QueuePacer(RateLimits(max_dispatches_per_second=100, max_concurrent_dispatches=1000), T0)
    pacer.started(20, T0)  # empty the bucket (burst 20)
    for _ in range(3):
        pacer.started(1, T0)
        pacer.finished(503, True, T0)
    assert pacer.throttle == pytest.approx(1 / 8)
    # Tokens now refill at 12.5/s instead of 100/s.
    assert pacer.available_rate() == pytest.approx(12.5)
    for _ in range(200):
        pacer.started(1, T0)
        pacer.finished(200, False, T0)
    assert pacer.throttle == 1.0


def test_throttle_has_a_floor() -> None:
    pacer = QueuePacer(RateLimits(max_dispatches_per_second=100), T0)
    for _ in range(50):
        pacer.started(1, T0)
        pacer.finished(429, True, T0)
    assert pacer.throttle == MIN_THROTTLE


def test_reconfigure_takes_effect_immediately() -> None:
    pacer = QueuePacer(RateLimits(max_dispatches_per_second=500), T0)
    pacer.started(100, T0)
    pacer.reconfigure(RateLimits(max_dispatches_per_second=1), T0)
    assert pacer.budget(T0 + 0.5) == 0
    assert pacer.budget(T0 + 1.0) == 1
