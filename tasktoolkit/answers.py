"""The handler's answer table: each way a delivery ends, its HTTP status and headers, and its dedup record.

One row per row of docs/handlers.md's table ("What each situation answers"); a test holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class RecordEffect(Enum):
    """What a situation does to the task's dedup record (the words of the doc's last column)."""

    UNTOUCHED = "untouched"  # rejected before a key was computed
    COMPLETED = "COMPLETED"  # the response is stored for replay
    FAILED = "FAILED"  # the acknowledgement is stored for replay
    RELEASED = "released"  # the claim is given up: the next delivery runs the handler
    UNCHANGED = "unchanged"  # a duplicate: another delivery's record stays as it is
    NONE = "\u2013"  # no record could be read or written (the doc's en dash)


@dataclass(frozen=True)
class Answer:
    """One row of the table.

    Attributes:
        situation: How the doc's row begins.
        status: The HTTP status, or ``None`` when it is the handler's (or the stored) response's.
        headers: The headers this answer adds.
        record: What happens to the dedup record.
    """

    situation: str
    status: int | None
    headers: tuple[str, ...]
    record: RecordEffect


class Situation(Enum):
    """Every way a delivery can end, with its :class:`Answer`."""

    BAD_TOKEN = Answer("no token, malformed", 401, ("WWW-Authenticate",), RecordEffect.UNTOUCHED)
    CALLER_NOT_ALLOWED = Answer("valid token, but the service account", 403, (), RecordEffect.UNTOUCHED)
    CERTS_UNAVAILABLE = Answer(
        "signing certificates cannot be fetched", 503, ("Retry-After",), RecordEffect.UNTOUCHED
    )
    BAD_TASK_REQUEST = Answer(
        "valid token, but the `X-CloudTasks-*` headers", 400, (), RecordEffect.UNTOUCHED
    )
    RETURNED_2XX = Answer("handler returns a 2xx", None, (), RecordEffect.COMPLETED)
    RETURNED_OTHER = Answer("handler returns a non-2xx", None, (), RecordEffect.RELEASED)
    DUPLICATE_DONE = Answer(
        "duplicate of a completed key", None, ("X-TaskToolkit-Replayed",), RecordEffect.UNCHANGED
    )
    DUPLICATE_RUNNING = Answer(
        "duplicate while the first delivery", 409, ("Retry-After",), RecordEffect.UNCHANGED
    )
    PAYLOAD_MISMATCH = Answer("same key, different payload", 200, (), RecordEffect.UNCHANGED)
    RETRY_REQUESTED = Answer("handler raises `RetryTask", 503, ("Retry-After",), RecordEffect.RELEASED)
    PERMANENT_FAILURE = Answer("handler raises `PermanentFailure`", 200, (), RecordEffect.FAILED)
    HANDLER_RAISED = Answer("handler raises anything else", 500, (), RecordEffect.RELEASED)
    HTTP_EXCEPTION = Answer("handler raises a werkzeug `HTTPException`", None, (), RecordEffect.RELEASED)
    DEDUP_KEY_FAILED = Answer("the `dedup_key` callable raises", 500, (), RecordEffect.NONE)
    STORE_UNAVAILABLE = Answer("dedup store unreachable", 503, ("Retry-After",), RecordEffect.NONE)

    @property
    def answer(self) -> Answer:
        """The row of this situation."""
        value: Answer = self.value
        return value
