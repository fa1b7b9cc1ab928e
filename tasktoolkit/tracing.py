"""Trace context of a request: read from its headers, and carried across the queue in a task's headers.

Cloud Run's front end replaces the ``traceparent`` (and ``X-Cloud-Trace-Context``) of every incoming request
with its own, so a trace context sent in those headers would not reach the handler. The enqueuing side copies
its context into :data:`PROPAGATION_HEADER` instead, a name nothing on the way rewrites, and the handler
continues that context (pure, no Flask).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

#: The task header that carries the enqueuing request's context, in W3C ``traceparent`` form.
PROPAGATION_HEADER = "X-TaskToolkit-Traceparent"
TRACEPARENT = "traceparent"
CLOUD_TRACE_CONTEXT = "X-Cloud-Trace-Context"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?")
# ``TRACE_ID/SPAN_ID;o=OPTIONS``; the span id is decimal (a 64-bit unsigned integer).
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True)
class TraceContext:
    """A trace id, the id of the span that is the parent of what comes next, and whether it is sampled."""

    #: 32 lower-case hex digits.
    trace_id: str
    #: 16 lower-case hex digits (``"0" * 16`` when the source named no span).
    span_id: str
    sampled: bool

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` value (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: str | None) -> TraceContext | None:
    """A W3C ``traceparent`` header, or ``None`` when absent or malformed (all-zero ids are invalid)."""
    match = _TRACEPARENT.fullmatch(value.strip()) if value else None
    if match is None or match.group(1) == "ff":
        return None
    _, trace_id, span_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def parse_cloud_trace_context(value: str | None) -> TraceContext | None:
    """An ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1`` header, or ``None`` when absent or malformed."""
    match = _CLOUD_TRACE.fullmatch(value.strip()) if value else None
    if match is None or match.group(1) == _ZERO_TRACE:
        return None
    trace_id, span, options = match.groups()
    span_number = int(span) if span else 0
    if span_number >= 2**64:
        return None
    return TraceContext(trace_id.lower(), f"{span_number:016x}", options == "1")


def trace_from_headers(headers: Mapping[str, str]) -> TraceContext | None:
    """The trace a request belongs to: the propagated one first, then ``traceparent``, then Cloud's.

    Args:
        headers: Request headers keyed in lower case.
    """
    return (
        parse_traceparent(headers.get(PROPAGATION_HEADER.lower()))
        or parse_traceparent(headers.get(TRACEPARENT))
        or parse_cloud_trace_context(headers.get(CLOUD_TRACE_CONTEXT.lower()))
    )


#: ``(header name in lower case, WSGI environ key)`` of the headers a trace is read from.
_ENVIRON_KEYS = tuple(
    (name.lower(), "HTTP_" + name.upper().replace("-", "_"))
    for name in (PROPAGATION_HEADER, TRACEPARENT, CLOUD_TRACE_CONTEXT)
)


def trace_from_environ(environ: Mapping[str, object]) -> TraceContext | None:
    """:func:`trace_from_headers` of a WSGI request."""
    headers = {name: value for name, key in _ENVIRON_KEYS if isinstance(value := environ.get(key), str)}
    return trace_from_headers(headers) if headers else None


def cloud_trace_name(project: str, trace: TraceContext) -> str:
    """The ``logging.googleapis.com/trace`` value: ``projects/PROJECT/traces/TRACE_ID``."""
    return f"projects/{project}/traces/{trace.trace_id}"


def with_trace_header(headers: Mapping[str, str] | None, trace: TraceContext | None) -> dict[str, str] | None:
    """A task's headers with :data:`PROPAGATION_HEADER` set to ``trace`` (unless the caller set one)."""
    if trace is None or any(name.lower() == PROPAGATION_HEADER.lower() for name in headers or {}):
        return None if headers is None else dict(headers)
    return {**(headers or {}), PROPAGATION_HEADER: trace.traceparent}
