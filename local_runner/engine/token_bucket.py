"""The token bucket that paces a queue's dispatches (reference §5.2)."""

from __future__ import annotations

import math


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled continuously at ``rate`` per second.

    One token is spent per dispatch; an idle queue accumulates tokens and may burst up to the capacity.
    """

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = float(capacity)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(float(self.capacity), self._tokens + (now - self._updated) * self.rate)
        self._updated = max(self._updated, now)

    def available(self, now: float) -> int:
        """Whole tokens available at ``now``."""
        self._refill(now)
        return math.floor(self._tokens + 1e-9)

    def take(self, count: int, now: float) -> None:
        """Spend ``count`` tokens (the caller checked :meth:`available`)."""
        self._refill(now)
        self._tokens -= count

    def next_token_time(self, now: float) -> float | None:
        """When the next whole token will be there, or ``None`` if the rate is zero."""
        self._refill(now)
        missing = 1.0 - self._tokens
        if missing <= 1e-9:
            return now
        if self.rate <= 0:
            return None
        return now + missing / self.rate

    def reconfigure(self, rate: float, capacity: int, now: float) -> None:
        """Change rate and capacity; tokens beyond the new capacity are dropped."""
        self._refill(now)
        self.rate = rate
        self.capacity = capacity
        self._tokens = min(self._tokens, float(capacity))
