"""OpenTelemetry spans for creating a task (producer) and handling it (consumer), when OpenTelemetry is there.

``opentelemetry-api`` is optional (``pip install 'tasktoolkit[otel]'``): nothing here imports it until a task
is created or handled, and then only if it is installed. Without it, :func:`current_trace` still reads the
current request's trace headers, and the spans are no-ops.

The attributes follow OpenTelemetry's messaging semantic conventions (``messaging.system``,
``messaging.operation.type`` ``send`` / ``process``, ``messaging.destination.name``, ``messaging.message.id``;
span names ``send QUEUE`` and ``process QUEUE``). The conventions' list of ``messaging.system`` values has no
Cloud Tasks entry (it has ``gcp_pubsub``) and allows other values, so Cloud Tasks is :data:`MESSAGING_SYSTEM`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import ModuleType
from typing import Any

from tasktoolkit.tracing import TraceContext, trace_from_environ

#: ``messaging.system`` of Cloud Tasks, named like the conventions' ``gcp_pubsub``.
MESSAGING_SYSTEM = "gcp_cloud_tasks"
INSTRUMENTATION_NAME = "tasktoolkit"
#: The tracer provider spans are made with; ``None``: OpenTelemetry's global one (tests install their own).
tracer_provider: Any = None


@functools.cache
def _otel_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:
        return False


@functools.cache
def _otel() -> ModuleType | None:
    """``opentelemetry.trace``, imported on first use, or ``None`` when it is not installed."""
    if not _otel_installed():
        return None
    from opentelemetry import trace

    return trace


def _request_trace() -> TraceContext | None:
    from flask import has_request_context, request

    return trace_from_environ(request.environ) if has_request_context() else None


def current_trace() -> TraceContext | None:
    """The trace a task created now belongs to: the current OpenTelemetry span's, else the request's."""
    otel = _otel()
    if otel is not None:
        context = otel.get_current_span().get_span_context()
        if context.is_valid:
            return TraceContext(
                f"{context.trace_id:032x}", f"{context.span_id:016x}", bool(context.trace_flags & 1)
            )
    return _request_trace()


def _remote_parent(otel: ModuleType, trace: TraceContext | None) -> Any:
    """An OpenTelemetry context whose parent is ``trace``, or ``None`` for the current context."""
    if trace is None:
        return None
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(
        int(trace.trace_id, 16),
        int(trace.span_id, 16) or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if trace.sampled else TraceFlags.DEFAULT),
    )
    return otel.set_span_in_context(NonRecordingSpan(parent))


class Span:
    """What the toolkit does to a span: attributes and an error status (no-ops without OpenTelemetry)."""

    def __init__(self, span: Any = None) -> None:
        self._span = span
        #: Whether anything is recorded (else every method is a no-op).
        self.recording = span is not None

    def update(self, name: str | None = None, **attributes: str | int) -> None:
        """Renames the span and sets ``messaging.*`` attributes (``message_id``: ``messaging.message.id``)."""
        if self._span is None:
            return
        if name is not None:
            self._span.update_name(name)
        for key, value in attributes.items():
            self._span.set_attribute(f"messaging.{key.replace('_', '.')}", value)

    def failed(self, description: str) -> None:
        """Marks the span as an error."""
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, description))


def _tracer() -> tuple[ModuleType, Any] | None:
    """``opentelemetry.trace`` and the toolkit's tracer, or ``None`` without OpenTelemetry or its SDK."""
    otel = _otel()
    if otel is None:
        return None
    provider = tracer_provider or otel.get_tracer_provider()
    if isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider):
        return None  # no SDK configured: skip the cost of no-op spans on every delivery
    return otel, provider.get_tracer(INSTRUMENTATION_NAME)


#: What :func:`_span` gives when nothing records spans: one shared no-op, so a delivery pays for no generator.
_NO_SPAN = nullcontext(Span())


def _span(
    name: str, kind: str, operation: str, parent: TraceContext | None, current: bool
) -> AbstractContextManager[Span]:
    """A span; its parent is the current span when ``current`` and one is active, else ``parent``."""
    found = _tracer()
    return _NO_SPAN if found is None else _recording_span(found, name, kind, operation, parent, current)


@contextmanager
def _recording_span(
    found: tuple[ModuleType, Any],
    name: str,
    kind: str,
    operation: str,
    parent: TraceContext | None,
    current: bool,
) -> Iterator[Span]:
    otel, tracer = found
    context = None
    if not (current and otel.get_current_span().get_span_context().is_valid):
        context = _remote_parent(otel, parent)
    attributes = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    with tracer.start_as_current_span(
        name, context=context, kind=getattr(otel.SpanKind, kind), attributes=attributes
    ) as span:
        yield Span(span)


@contextmanager
def producer_span(queue: str) -> Iterator[Span]:
    """The span of creating a task in ``queue``: a child of the current span, else of the request trace."""
    with _span(f"send {queue}", "PRODUCER", "send", _request_trace(), current=True) as span:
        span.update(destination_name=queue)
        yield span


def consumer_span(environ: Mapping[str, object]) -> AbstractContextManager[Span]:
    """The span of handling one delivery, a child of the trace that travelled with the task (if any).

    Args:
        environ: The request's WSGI environ; its trace headers are parsed only when a span is recorded.
    """
    found = _tracer()
    if found is None:
        return _NO_SPAN
    return _recording_span(found, "process", "CONSUMER", "process", trace_from_environ(environ), False)
