"""Duplicate delivery on purpose: some attempts are sent twice, as the real service sometimes does (sans-IO).

Cloud Tasks delivers at least once: "a small fraction of tasks" arrive twice. ``runner serve
--duplicate-deliveries RATE`` (and ``duplicateDeliveries`` per queue in the queue file) makes that happen
at a chosen rate, so a handler's idempotency is proven against the runner, as ``FakeQueue``'s
``duplicate_deliveries`` proves it in unit tests.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from local_runner.errors import InvalidArgument


def check_rate(rate: float, field_name: str) -> float:
    """``rate`` if it is a fraction of attempts (0 to 1), else ``InvalidArgument`` naming the field."""
    if not 0.0 <= rate <= 1.0:
        raise InvalidArgument(f"{field_name} must be between 0 and 1 (a fraction of attempts); got {rate:g}.")
    return float(rate)


@dataclass
class DuplicateDeliveries:
    """Which attempts are sent twice: a runner-wide rate, overridden per queue (full queue names)."""

    rate: float = 0.0
    per_queue: Mapping[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        check_rate(self.rate, "duplicate deliveries")
        for name, rate in self.per_queue.items():
            check_rate(rate, f"duplicateDeliveries of {name}")

    def chosen(self, queue_name: str) -> bool:
        """Whether the attempt about to be sent on ``queue_name`` is sent twice."""
        rate = self.per_queue.get(queue_name, self.rate)
        return rate >= 1.0 or (rate > 0.0 and self.rng.random() < rate)
