"""gunicorn settings fit for Cloud Run (``gunicorn --config python:sample_worker.gunicorn_conf``).

One worker process with threads, as Google recommends for Cloud Run: the instance scales out instead of
forking, and ``timeout = 0`` leaves request deadlines to Cloud Run (and to the task's dispatch deadline).
"""

from __future__ import annotations

import os

bind = f":{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 0
graceful_timeout = 10
accesslog = None
control_socket_disable = True  # no `gunicornc` socket under $HOME: nothing to share between instances
# One line format for gunicorn's and the app's own log lines (``sample_worker``, ``tasktoolkit``), all to
# stderr, where Cloud Run collects them.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "datefmt": "%H:%M:%S"}
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},  # Cloud Run logs requests
    },
}
