"""tasktoolkit: verified, idempotent Cloud Tasks handlers for Flask."""

from tasktoolkit.errors import CloudTasksError as CloudTasksError
from tasktoolkit.errors import ConfigurationError as ConfigurationError
from tasktoolkit.errors import PermanentFailure as PermanentFailure
from tasktoolkit.errors import RetryTask as RetryTask
from tasktoolkit.errors import TaskAlreadyExists as TaskAlreadyExists
from tasktoolkit.errors import TaskToolkitError as TaskToolkitError
from tasktoolkit.extension import TaskToolkit as TaskToolkit
from tasktoolkit.handler import task_handler as task_handler
from tasktoolkit.headers import TaskContext as TaskContext

__all__ = [
    "CloudTasksError",
    "ConfigurationError",
    "PermanentFailure",
    "RetryTask",
    "TaskAlreadyExists",
    "TaskContext",
    "TaskToolkit",
    "TaskToolkitError",
    "task_handler",
]
