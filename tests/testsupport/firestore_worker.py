"""A task worker for gunicorn with a Firestore dedup store; each body run is appended to a file.

``create_app()`` reads ``TASKTOOLKIT_AUDIENCE``, ``TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS`` and
``TASKTOOLKIT_GOOGLE_CERTS_URL`` from the environment, and the store's ``DEDUP_COLLECTION`` and
``DEDUP_TIMEOUT_S`` (a budget generous enough for the emulator on a loaded machine: a call that outlasts a
short one answers 503, which is not what the test is about). The project and emulator host come from
``GOOGLE_CLOUD_PROJECT`` and ``FIRESTORE_EMULATOR_HOST``. It appends ``<pid> <task name>`` to
``RUNS_FILE`` each time the handler body runs (one ``write`` on an ``O_APPEND`` file, so lines from
several processes never interleave).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, Response

from tasktoolkit import TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import FirestoreDedupStore

SETTINGS = (
    "TASKTOOLKIT_AUDIENCE",
    "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS",
    "TASKTOOLKIT_GOOGLE_CERTS_URL",
)


def create_app() -> Flask:
    app = Flask("firestore_worker")
    for name in SETTINGS:
        value = os.environ[name]
        app.config[name] = [value] if name == "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS" else value
    store = FirestoreDedupStore(
        collection=os.environ["DEDUP_COLLECTION"], timeout_s=float(os.environ["DEDUP_TIMEOUT_S"])
    )
    TaskToolkit(app, store=store)
    runs_file = os.environ["RUNS_FILE"]

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.post("/tasks/work")
    @task_handler
    def work(payload: Any, task: TaskContext) -> Any:
        descriptor = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(descriptor, f"{os.getpid()} {task.task_name}\n".encode())
        finally:
            os.close(descriptor)
        threading.Event().wait(float(payload.get("delay_s", 0)))
        return {"ran_in": os.getpid()}

    @app.after_request
    def tag_process(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
