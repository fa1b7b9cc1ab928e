"""Connection slots: how many attempts may be sending at once, runner-wide and per destination (sans-IO).

A slot is the right to hold one outbound connection for one request. The runner-wide cap keeps the
process within its open-file limit; the per-destination cap (``--max-connections-per-host``) is what a
queue's dispatch loop waits for before it claims. Whoever finds no free slot waits in line, and slots
are handed out in turn, so one busy queue cannot starve the others.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from local_runner.errors import RunnerError

#: File descriptors never spent on outbound connections: stdio, the event loop, listening sockets,
#: SQLite's database, journal and shared-memory files, the OIDC key, log files.
RESERVED_FDS = 64
#: Most outbound connections in all, however high the open-file limit: one destination on 127.0.0.1
#: has about 28,000 ephemeral ports, and every connection costs memory and event-loop work.
MAX_CONNECTIONS = 10_000
#: Most connections per destination unless ``--max-connections-per-host`` says otherwise. More in
#: flight costs more runner CPU per task (docs/performance.md, "Bounded dispatch").
DEFAULT_PER_ORIGIN = 256


class ConnectionLimitError(RunnerError):
    """The asked connection cap is outside what the open-file limit allows."""


@dataclass(frozen=True)
class ConnectionLimits:
    """How many requests may be in flight: ``total`` over all destinations, ``per_origin`` to each."""

    total: int
    per_origin: int


def connection_budget(open_file_limit: int | None) -> int:
    """Connections the process may hold: half of what the reserve leaves, at most ``MAX_CONNECTIONS``.

    The other half stays free for the API's own clients. ``None`` means no limit.
    """
    if open_file_limit is None:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (open_file_limit - RESERVED_FDS) // 2))


def connection_limits(open_file_limit: int | None, per_origin: int | None = None) -> ConnectionLimits:
    """The caps for a process whose open-file (soft) limit is ``open_file_limit``.

    Raises:
        ConnectionLimitError: ``per_origin`` is below 1 or above the connection budget.
    """
    total = connection_budget(open_file_limit)
    if per_origin is None:
        return ConnectionLimits(total, min(DEFAULT_PER_ORIGIN, total))
    if not 1 <= per_origin <= total:
        limit = f"open-file limit {open_file_limit}" if open_file_limit is not None else "no open-file limit"
        raise ConnectionLimitError(
            f"max connections per host must be between 1 and {total} ({limit}); got {per_origin}"
        )
    return ConnectionLimits(total, per_origin)


class ConnectionSlots:
    """Counts the slots in use and keeps the line of those waiting for one.

    Waiters are any hashable keys (a queue's loop, a single attempt). The line is first come, first
    served among those who could be served: a waiter whose destination is full does not hold up one
    whose destination has room.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.in_use = 0
        self._by_origin: dict[Hashable, int] = {}
        #: Waiters in turn order (dicts keep insertion order): the destination each waits for, and
        #: how many slots it still wants.
        self._line: dict[Hashable, tuple[Hashable | None, int]] = {}

    def free(self, origin: Hashable | None) -> int:
        """Slots that may be taken now for ``origin``.

        ``None`` stands for a destination not known yet (a queue's first claim): one slot at a time,
        whose attempt learns the destination and moves its slot there.
        """
        free = self.limits.total - self.in_use
        if origin is None:
            return min(free, 1)
        return max(0, min(free, self.limits.per_origin - self._by_origin.get(origin, 0)))

    @property
    def waiting(self) -> list[Hashable]:
        """The waiters, in turn order."""
        return list(self._line)

    def waits(self, waiter: Hashable) -> bool:
        """Whether ``waiter`` is in line."""
        return waiter in self._line

    def take(self, waiter: Hashable, origin: Hashable | None, wanted: int) -> int:
        """Take up to ``wanted`` slots for ``origin`` if it is ``waiter``'s turn; returns how many.

        A waiter takes nothing while someone ahead of it in line could be served. A waiter that got
        fewer than it wanted stays in line (at the back if it got some, so turns go round); one that
        got all it wanted leaves the line.
        """
        if wanted <= 0:
            self.withdraw(waiter)
            return 0
        granted = 0
        free = self.free(origin)
        if free > 0 and not self._anyone_servable_ahead(waiter):
            granted = min(wanted, free)
            self.in_use += granted
            if origin is not None:
                self._by_origin[origin] = self._by_origin.get(origin, 0) + granted
            self._line.pop(waiter, None)
        if granted < wanted:
            self._line[waiter] = (origin, wanted - granted)  # a new waiter, or one that got some: at the back
        return granted

    def _anyone_servable_ahead(self, waiter: Hashable) -> bool:
        """Whether a waiter ahead of ``waiter`` (everyone, if it is not in line) could take a slot now."""
        for key, (origin, _) in self._line.items():
            if key == waiter:
                return False
            if self.free(origin) > 0:
                return True
        return False

    def withdraw(self, waiter: Hashable) -> None:
        """``waiter`` no longer waits (its backlog is empty, it is paused or gone)."""
        self._line.pop(waiter, None)

    def move(self, taken_for: Hashable | None, origin: Hashable) -> bool:
        """Move a slot taken for one destination to ``origin`` if it has room (the claim was admitted)."""
        if self._by_origin.get(origin, 0) >= self.limits.per_origin:
            return False
        self.release(taken_for)
        self.in_use += 1
        self._by_origin[origin] = self._by_origin.get(origin, 0) + 1
        return True

    def release(self, origin: Hashable | None, count: int = 1) -> None:
        """Give back ``count`` slots taken for ``origin``."""
        self.in_use = max(0, self.in_use - count)
        if origin is not None:
            left = self._by_origin.get(origin, 0) - count
            if left > 0:
                self._by_origin[origin] = left
            else:
                self._by_origin.pop(origin, None)

    def turns(self) -> list[Hashable]:
        """The waiters to wake now: in turn order, those the free slots serve when each takes its want."""
        free_total = self.limits.total - self.in_use
        promised: dict[Hashable | None, int] = {}
        woken: list[Hashable] = []
        for waiter, (origin, wanted) in self._line.items():
            if free_total <= 0:
                break
            given = min(wanted, free_total, self.free(origin) - promised.get(origin, 0))
            if given > 0:
                woken.append(waiter)
                free_total -= given
                promised[origin] = promised.get(origin, 0) + given
        return woken
