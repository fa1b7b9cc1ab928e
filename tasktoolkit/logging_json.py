"""Cloud Run structured logs: one JSON object per line, with the request's trace and the delivery's labels.

Cloud Logging reads ``severity``, ``message``, ``logging.googleapis.com/trace`` and
``logging.googleapis.com/labels`` from a JSON line written to stdout or stderr, so the handler's lines are
grouped under the request, and under the enqueuing request's trace when it travelled with the task
(:mod:`tasktoolkit.tracing`). The handler writes one summary line per delivery to :data:`DELIVERY_LOGGER`,
at the level its outcome deserves; :class:`CloudRunFormatter` turns its fields into labels.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_request_context, request

from tasktoolkit.answers import Situation
from tasktoolkit.config import LOG_FORMAT, PROJECT
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.tracing import cloud_trace_name, trace_from_environ

#: The logger of the one line per delivery.
DELIVERY_LOGGER = "tasktoolkit.delivery"
#: The attribute of a log record that holds its :class:`DeliveryLog`.
DELIVERY_ATTRIBUTE = "tasktoolkit_delivery"
#: Set by Cloud Run in every service's environment; turns JSON logs on when ``TASKTOOLKIT_LOG_FORMAT``
#: is unset.
CLOUD_RUN_ENV = "K_SERVICE"
TRACE_FIELD = "logging.googleapis.com/trace"
LABELS_FIELD = "logging.googleapis.com/labels"
LOG_FORMATS = ("json", "text")

#: Measures a delivery's latency, in seconds (replaced by tests that assert the exact line).
clock: Callable[[], float] = time.perf_counter

_DEDUP_OUTCOMES = {
    Situation.DUPLICATE_DONE: "replayed",
    Situation.DUPLICATE_RUNNING: "in_progress",
    Situation.PAYLOAD_MISMATCH: "mismatch",
    Situation.STORE_UNAVAILABLE: "unavailable",
}
#: The situations in which the task function ran.
RAN = frozenset(
    {
        Situation.RETURNED_2XX,
        Situation.RETURNED_OTHER,
        Situation.RETRY_REQUESTED,
        Situation.PERMANENT_FAILURE,
        Situation.HANDLER_RAISED,
        Situation.HTTP_EXCEPTION,
    }
)
_WARNING = frozenset(
    {
        Situation.BAD_TOKEN,
        Situation.CALLER_NOT_ALLOWED,
        Situation.BAD_TASK_REQUEST,
        Situation.PERMANENT_FAILURE,
    }
)
_ERROR = frozenset(
    {
        Situation.CERTS_UNAVAILABLE,
        Situation.PAYLOAD_MISMATCH,
        Situation.HANDLER_RAISED,
        Situation.DEDUP_KEY_FAILED,
        Situation.STORE_UNAVAILABLE,
    }
)
#: The level of each situation, unless the handler's own answer decides it (see :func:`delivery_level`).
_LEVELS: dict[Situation, int] = {
    **dict.fromkeys(Situation, logging.INFO),
    **dict.fromkeys(_WARNING, logging.WARNING),
    **dict.fromkeys(_ERROR, logging.ERROR),
}
_SEVERITIES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def delivery_level(situation: Situation, status: int) -> int:
    """The level of a delivery's line.

    ERROR when work is lost or something is broken, WARNING when the caller or the task is at fault, INFO for
    the ways a delivery ends as designed (ran, replayed, retried later).
    """
    if situation is Situation.RETURNED_OTHER or situation is Situation.HTTP_EXCEPTION:
        return logging.ERROR if status >= 500 else logging.WARNING
    return _LEVELS[situation]


def dedup_outcome(situation: Situation, dedup: bool) -> str | None:
    """What dedup decided for a delivery.

    ``ran``, ``replayed``, ``in_progress``, ``mismatch``, ``unavailable``, ``off`` (ran without dedup), or
    ``None`` when the delivery was refused before a key was looked up.
    """
    if situation in RAN:
        return "ran" if dedup else "off"
    return _DEDUP_OUTCOMES.get(situation)


@dataclass(frozen=True)
class DeliveryLog:
    """The fields of one delivery's line."""

    situation: Situation
    status: int
    latency_s: float
    path: str
    queue: str | None = None
    task: str | None = None
    retry_count: int | None = None
    execution_count: int | None = None
    dedup: str | None = None
    #: A Cloud Scheduler fire's job id and schedule time (RFC 3339 UTC).
    job: str | None = None
    schedule_time: str | None = None

    @property
    def level(self) -> int:
        """The level the line is written at."""
        return delivery_level(self.situation, self.status)

    @property
    def message(self) -> str:
        """E.g. ``task emails/welcome-1: returned_2xx, 200 in 12.5 ms``."""
        if self.job is not None:
            what = f"job {self.job}@{self.schedule_time}"
        elif self.task is not None:
            what = f"task {self.queue}/{self.task}"
        else:
            what = f"task request to {self.path}"
        return f"{what}: {self.situation.name.lower()}, {self.status} in {self.latency_s * 1000:.1f} ms"

    def labels(self) -> dict[str, str]:
        """Cloud Logging labels (string values only); fields that are unknown are left out."""
        fields: dict[str, object] = {
            "queue": self.queue,
            "task": self.task,
            "retry_count": self.retry_count,
            "execution_count": self.execution_count,
            "job": self.job,
            "schedule_time": self.schedule_time,
            "dedup": self.dedup,
            "outcome": self.situation.name.lower(),
            "status": self.status,
            "latency_ms": f"{self.latency_s * 1000:.1f}",
        }
        return {key: str(value) for key, value in fields.items() if value is not None}


_delivery_logger = logging.getLogger(DELIVERY_LOGGER)


def delivery_logged(situation: Situation, status: int) -> bool:
    """Whether a delivery with this outcome is written at all (skip building its line when not)."""
    return _delivery_logger.isEnabledFor(delivery_level(situation, status))


def log_delivery(entry: DeliveryLog) -> None:
    """Writes the delivery's one line to :data:`DELIVERY_LOGGER`."""
    _delivery_logger.log(entry.level, entry.message, extra={DELIVERY_ATTRIBUTE: entry})


def _project(default: str | None) -> str | None:
    if default:
        return default
    configured = current_app.config.get(PROJECT)
    return (
        configured if isinstance(configured, str) and configured else os.environ.get("GOOGLE_CLOUD_PROJECT")
    )


class CloudRunFormatter(logging.Formatter):
    """Formats records as Cloud Logging structured JSON, one object per line.

    Args:
        project: The project of ``logging.googleapis.com/trace``; default: the app's ``TASKTOOLKIT_PROJECT``,
            else ``GOOGLE_CLOUD_PROJECT``. Without one, lines carry no trace.
    """

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line of ``record``."""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, Any] = {
            "severity": _SEVERITIES.get(record.levelno, record.levelname),
            "message": message,
        }
        if has_request_context():
            trace = trace_from_environ(request.environ)
            project = _project(self.project)
            if trace is not None and project:
                entry[TRACE_FIELD] = cloud_trace_name(project, trace)
        delivery = getattr(record, DELIVERY_ATTRIBUTE, None)
        if isinstance(delivery, DeliveryLog):
            entry[LABELS_FIELD] = delivery.labels()
        return json.dumps(entry, ensure_ascii=False)


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stream handler :func:`configure_logging` installs (recognised so it is installed once)."""


def log_format(config: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """``TASKTOOLKIT_LOG_FORMAT``: ``json``, ``text``, or unset for ``json`` on Cloud Run (``K_SERVICE``).

    Raises:
        ConfigurationError: Any other value.
    """
    value = config.get(LOG_FORMAT)
    if value is None:
        return "json" if environ.get(CLOUD_RUN_ENV) else "text"
    if value not in LOG_FORMATS:
        raise ConfigurationError(
            f"{LOG_FORMAT} must be one of {', '.join(LOG_FORMATS)} or unset, got {value!r}"
        )
    return str(value)


def configure_logging(config: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """With JSON logs on, writes the ``tasktoolkit`` loggers' lines as JSON to stderr (once per process).

    Those lines then no longer propagate to the root logger, so they are not written twice. With ``text``
    the logging set-up is left as the app made it.
    """
    if log_format(config, environ) != "json":
        return
    logger = logging.getLogger("tasktoolkit")
    if any(isinstance(handler, _JsonHandler) for handler in logger.handlers):
        return
    handler = _JsonHandler()
    handler.setFormatter(CloudRunFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
