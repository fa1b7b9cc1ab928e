"""The benchmarks' Flask worker: a bare route and a @task_handler route (run under gunicorn).

Settings come from the environment: BENCH_STORE (dedup store URL, default memory://), BENCH_AUDIENCE,
BENCH_SERVICE_ACCOUNT, CLOUD_TASKS_EMULATOR_HOST (the runner whose tokens are trusted) and
BENCH_DELIVERY_LOG (a file that gets one arrival time per task run, appended by every worker).
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, request

from tasktoolkit import TaskContext, TaskToolkit, task_handler

app = Flask(__name__)
app.config.update(
    TASKTOOLKIT_AUDIENCE=os.environ.get("BENCH_AUDIENCE", "https://bench-worker.local"),
    TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=os.environ.get(
        "BENCH_SERVICE_ACCOUNT", "bench@bench.iam.gserviceaccount.com"
    ),
    TASKTOOLKIT_STORE=os.environ.get("BENCH_STORE", "memory://"),
)
TaskToolkit(app)
_log_path = os.environ.get("BENCH_DELIVERY_LOG")
_log_fd = os.open(_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _log_path else None


@app.post("/bare")
def bare() -> str:
    request.get_data()
    return "ok"


@app.post("/task")
@task_handler
def task(payload: Any, context: TaskContext) -> str:
    if _log_fd is not None:
        os.write(_log_fd, f"{time.time()}\n".encode())
    return "ok"
