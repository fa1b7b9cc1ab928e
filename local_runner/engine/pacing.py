"""Per-queue dispatch pacing: token bucket, concurrency cap and throttling on 429/503 (sans-IO)."""

from __future__ import annotations

from local_runner.engine.token_bucket import TokenBucket
from local_runner.model import RateLimits

#: Each 429/503 halves the queue's effective rate, down to this fraction of the configured rate.
MIN_THROTTLE = 1 / 128
#: Each 2xx gives back this factor of rate until the configured rate is reached again.
RECOVERY_FACTOR = 1.05


class QueuePacer:
    """Decides how many tasks a queue may start now, and when it may start the next one."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self.throttle = 1.0
        self.in_flight = 0
        self._bucket = TokenBucket(limits.max_dispatches_per_second, limits.max_burst_size, now)

    def reconfigure(self, limits: RateLimits, now: float) -> None:
        """Apply new rate limits at once (UpdateQueue takes effect on dispatch immediately)."""
        self.limits = limits
        self._bucket.reconfigure(self._effective_rate(), limits.max_burst_size, now)

    def _effective_rate(self) -> float:
        return self.limits.max_dispatches_per_second * self.throttle

    def available_rate(self) -> float:
        """Dispatches per second the queue allows now (lower than configured while throttled)."""
        return self._bucket.rate

    def budget(self, now: float) -> int:
        """How many dispatches may start at ``now``: tokens, capped by free concurrency slots."""
        free = self.limits.max_concurrent_dispatches - self.in_flight
        if free <= 0:
            return 0
        return max(0, min(free, self._bucket.available(now)))

    def started(self, count: int, now: float, paced: bool = True) -> None:
        """Record ``count`` dispatches; RunTask dispatches are not paced and spend no token."""
        if paced:
            self._bucket.take(count, now)
        self.in_flight += count

    def finished(self, http_status: int | None, throttles: bool, now: float) -> None:
        """Record the end of an attempt and adapt the rate to the handler's signals."""
        self.in_flight = max(0, self.in_flight - 1)
        if throttles:
            self.throttle = max(MIN_THROTTLE, self.throttle / 2)
        elif http_status is not None and 200 <= http_status <= 299 and self.throttle < 1.0:
            self.throttle = min(1.0, self.throttle * RECOVERY_FACTOR)
        else:
            return
        self._bucket.reconfigure(self._effective_rate(), self.limits.max_burst_size, now)

    def next_start_time(self, now: float) -> float | None:
        """When a dispatch may next start, or ``None`` if only a finishing attempt can free a slot."""
        if self.in_flight >= self.limits.max_concurrent_dispatches:
            return None
        return self._bucket.next_token_time(now)
