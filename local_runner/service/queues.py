"""Queue administration: create, update, list (ListQueues' filter and page tokens), pause, purge, delete."""

from __future__ import annotations

import re
from collections.abc import Callable

from local_runner import errors
from local_runner.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from local_runner.model import Queue, QueueState, parse_location, parse_queue_name
from local_runner.service.base import Page, ServiceBase
from local_runner.service.page_tokens import INVALID, decode_page_token, encode_page_token

#: ListQueues' largest (and default) page size (reference §1).
MAX_QUEUE_PAGE_SIZE = 9800


class QueueAdmin(ServiceBase):
    """The queue operations of Cloud Tasks, with the real service's rules and messages."""

    def create_queue(self, parent: str, queue: Queue) -> Queue:
        """CreateQueue: the name must be new and not deleted too recently."""
        parse_location(parent)
        if parse_queue_name(queue.name).parent != parent:
            raise InvalidArgument(
                f"The queue name from request ('{queue.name}') must be under the parent ('{parent}')."
            )
        if self.store.get_queue(queue.name) is not None:
            raise AlreadyExists(errors.QUEUE_EXISTS)
        if self.store.queue_tombstoned(queue.name, self.clock.now()):
            raise FailedPrecondition(errors.QUEUE_TOMBSTONED)
        created = queue.replace(state=QueueState.RUNNING, purge_time=None)
        self.store.put_queue(created)
        self.listener.queue_changed(created.name)
        return created

    def upsert_queue(self, queue: Queue) -> Queue:
        """UpdateQueue without a mask: replace the configuration, keep state and purge time; create if new."""
        existing = self.store.get_queue(queue.name)
        if existing is None:
            if self.store.queue_tombstoned(queue.name, self.clock.now()):
                raise FailedPrecondition(errors.QUEUE_TOMBSTONED)
            updated = queue.replace(state=QueueState.RUNNING, purge_time=None)
        else:
            updated = queue.replace(state=existing.state, purge_time=existing.purge_time)
        self.store.put_queue(updated)
        self.listener.queue_changed(updated.name)
        return updated

    def list_queues(self, parent: str) -> list[Queue]:
        """ListQueues, in lexicographical order."""
        parse_location(parent)
        return self.store.list_queues(parent)

    def all_queues(self) -> list[Queue]:
        """Every queue of every project and location, in lexicographical order (the console's list)."""
        return self.store.list_queues(None)

    def delete_queue(self, name: str) -> None:
        """DeleteQueue: deletes the queue and its tasks; the name is blocked for a while."""
        parse_queue_name(name)
        if not self.store.delete_queue(name, self.clock.now() + self.queue_tombstone):
            raise NotFound(errors.ENTITY_NOT_FOUND)
        self.listener.queue_deleted(name)
        self.listener.queue_changed(name)

    def _set_state(self, name: str, state: QueueState) -> Queue:
        queue = self.get_queue(name).replace(state=state)
        self.store.put_queue(queue)
        self.listener.queue_changed(name)
        return queue

    def pause_queue(self, name: str) -> Queue:
        """PauseQueue: tasks are still accepted but not dispatched."""
        return self._set_state(name, QueueState.PAUSED)

    def resume_queue(self, name: str) -> Queue:
        """ResumeQueue: from PAUSED or DISABLED back to RUNNING."""
        return self._set_state(name, QueueState.RUNNING)

    def purge_queue(self, name: str) -> Queue:
        """PurgeQueue: deletes every task created before now."""
        now = self.clock.now()
        queue = self.get_queue(name).replace(purge_time=now)
        self.store.put_queue(queue)
        self.store.purge(name, now, now + self.task_tombstone)
        self.listener.queue_changed(name)
        return queue

    def list_queues_page(
        self, parent: str, filter_text: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[Queue]:
        """ListQueues with a ``state`` filter and pagination, in lexicographical order.

        Args:
            parent: ``projects/P/locations/L``.
            filter_text: ``""``, ``state:PAUSED``, ``state = RUNNING`` or ``state != PAUSED``.
            page_size: 0 for the maximum (9800).
            page_token: ``next_page_token`` of the previous page, asked with the same filter.
        """
        queues = self.list_queues(parent)
        keep = _queue_filter(filter_text)
        if not 0 <= page_size <= MAX_QUEUE_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_QUEUE_PAGE_SIZE}; got {page_size}.")
        size = page_size or MAX_QUEUE_PAGE_SIZE
        after = _decode_queue_token(page_token, parent, filter_text) if page_token else None
        items = [q for q in queues if keep(q) and (after is None or q.name > after)]
        token = encode_page_token(filter_text, items[size - 1].name) if len(items) > size else ""
        return Page(items[:size], token)


_FILTER_RE = re.compile(r"\s*state\s*(:|=|!=)\s*(\"?)([A-Za-z_]+|\d+)\2\s*")


def _queue_filter(text: str) -> Callable[[Queue], bool]:
    """The predicate of a ListQueues filter; only ``state`` comparisons are supported."""
    if not text.strip():
        return lambda queue: True
    match = _FILTER_RE.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f'Unsupported filter "{text}": the local runner supports "state:<STATE>", "state = <STATE>" '
            'and "state != <STATE>".'
        )
    operator, value = match.group(1), match.group(3)
    if value.isdigit() and int(value) in {s.value for s in QueueState}:
        state = QueueState(int(value))
    elif value.upper() in QueueState.__members__:
        state = QueueState[value.upper()]
    else:
        raise InvalidArgument(f'Invalid filter "{text}": unknown queue state "{value}".')
    if operator == "!=":
        return lambda queue: queue.state is not state
    return lambda queue: queue.state is state


def _decode_queue_token(token: str, parent: str, filter_text: str) -> str:
    after = decode_page_token(token, filter_text)
    if not isinstance(after, str) or not after.startswith(parent + "/queues/"):
        raise InvalidArgument(INVALID)
    return after
