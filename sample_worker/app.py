"""``create_app()``: the worker's Flask app, configured from the environment.

Run it the way Cloud Run does (see ``gunicorn_conf.py``)::

    gunicorn --config python:sample_worker.gunicorn_conf 'sample_worker.app:create_app()'
"""

from __future__ import annotations

import logging

from flask import Flask
from flask.typing import ResponseReturnValue

from sample_worker.api import api
from sample_worker.config import Settings
from sample_worker.handlers import tasks
from sample_worker.jobs import jobs
from sample_worker.services import Services
from tasktoolkit import TaskToolkit, TaskToolkitError

log = logging.getLogger("sample_worker")

#: Largest accepted upload, in bytes.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """Builds the worker.

    Args:
        settings: Where the worker runs; default :meth:`Settings.from_env`.

    Raises:
        ConfigurationError: A setting is missing or invalid.
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(settings.flask_config(), MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES)
    Services.from_settings(settings).install(app)  # creates the data directory, home of the SQLite store
    TaskToolkit(app)
    app.register_blueprint(api)
    app.register_blueprint(tasks)
    app.register_blueprint(jobs)
    app.register_error_handler(TaskToolkitError, _queue_unavailable)
    return app


def _queue_unavailable(error: TaskToolkitError) -> ResponseReturnValue:
    """A request that could not enqueue its tasks: the client may try again."""
    log.error("cannot enqueue: %s", error)
    return {"error": "the task queue is unavailable, try again"}, 503
