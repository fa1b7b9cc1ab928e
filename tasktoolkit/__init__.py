"""tasktoolkit: verified, idempotent Cloud Tasks and Cloud Scheduler handlers for Flask."""

from tasktoolkit.errors import ApiError as ApiError
from tasktoolkit.errors import ConfigurationError as ConfigurationError
from tasktoolkit.errors import PermanentFailure as PermanentFailure
from tasktoolkit.errors import RetryTask as RetryTask
from tasktoolkit.errors import TaskAlreadyExists as TaskAlreadyExists
from tasktoolkit.errors import TaskToolkitError as TaskToolkitError
from tasktoolkit.extension import TaskToolkit as TaskToolkit
from tasktoolkit.fanout import FanOutResult as FanOutResult
from tasktoolkit.fanout import fan_out as fan_out
from tasktoolkit.handler import task_handler as task_handler
from tasktoolkit.headers import ScheduleContext as ScheduleContext
from tasktoolkit.headers import TaskContext as TaskContext
from tasktoolkit.scheduled import scheduled_handler as scheduled_handler

__all__ = [
    "ApiError",
    "ConfigurationError",
    "FanOutResult",
    "PermanentFailure",
    "RetryTask",
    "ScheduleContext",
    "TaskAlreadyExists",
    "TaskContext",
    "TaskToolkit",
    "TaskToolkitError",
    "fan_out",
    "scheduled_handler",
    "task_handler",
]
