"""``runner serve --log-format json``: Cloud Logging structured JSON, one object per line.

The same shape as the toolkit's handler lines: ``severity``, ``message``, ``logging.googleapis.com/trace``
(from the task's ``X-TaskToolkit-Traceparent`` header and its project) and ``logging.googleapis.com/labels``
(queue, task, attempt, retry count, status, outcome, latency) on each attempt's line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

#: The attribute of a log record holding an attempt's fields (:func:`attempt_fields`).
FIELDS_ATTRIBUTE = "runner_fields"
TRACE_FIELD = "logging.googleapis.com/trace"
LABELS_FIELD = "logging.googleapis.com/labels"
#: The header the toolkit's enqueue puts the creating request's trace in (W3C ``traceparent`` form).
PROPAGATION_HEADER = "x-tasktoolkit-traceparent"
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
LOG_FORMATS = ("text", "json")


def trace_name(task_name: str, headers: Mapping[str, str]) -> str | None:
    """``projects/P/traces/TRACE_ID`` of a task whose headers carry a propagated trace, else ``None``."""
    value = next((v for k, v in headers.items() if k.lower() == PROPAGATION_HEADER), None)
    match = _TRACEPARENT.fullmatch(value.strip()) if value else None
    if match is None or set(match.group(1)) == {"0"}:
        return None
    project = task_name.split("/")[1]
    return f"projects/{project}/traces/{match.group(1)}"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; an attempt's line also gets its trace and labels."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line of ``record``."""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, object] = {"severity": record.levelname, "message": message}
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            trace = fields.get("trace")
            if trace is not None:
                entry[TRACE_FIELD] = trace
            entry[LABELS_FIELD] = fields["labels"]
        return json.dumps(entry, ensure_ascii=False)
