"""``make demo``: the sample worker and the local runner as real processes, the task flow live.

1. Starts ``runner serve`` on its SQLite default (``.runner/``) with the queues of ``queues.yaml``.
2. Starts the worker under gunicorn (the Dockerfile's command) with its data in ``.demo/``, a reminder
   delay of a few seconds instead of a day, and a storage outage on each thumbnail job's first two
   attempts.
3. Uses the worker as a client would: signs a user up twice (the second sign-up is absorbed), uploads
   a PNG (its thumbnail succeeds on the third attempt) and a PDF (refused for good on the first).
4. Creates the worker's weekly-digest Cloud Scheduler job in the runner (its settings from the route's
   ``@scheduled_handler``) and fires it once with RunJob: one fire, one digest email task per user.
5. Prints both processes' logs as they happen: every attempt, every backoff, the scheduled reminder.
6. Stops both when every outcome is visible on the worker's side, or on Ctrl-C.

Long generated task ids are shortened in the log for readability.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import FrameType
from typing import Any

import requests
from flask import Flask

from sample_worker.emails import Outbox, User
from sample_worker.images import solid_png
from sample_worker.jobs import jobs as jobs_blueprint
from sample_worker.launch import ChildProcess, queue_file, start_runner, start_worker
from sample_worker.users import Users
from tasktoolkit.client import TasksClient
from tasktoolkit.errors import ResourceNotFound
from tasktoolkit.job_spec import declared_jobs
from tasktoolkit.job_sync import sync_jobs
from tasktoolkit.scheduler_client import SchedulerClient

PROJECT, LOCATION = "local-project", "us-central1"
QUEUES = ("emails", "images")
#: The service account whose OIDC token the runner's scheduler sends (the worker allows it).
SCHEDULER_ACCOUNT = f"tasks@{PROJECT}.iam.gserviceaccount.com"
#: Users already in the worker's database before the demo's sign-up, so the digest fans out to several.
OTHER_USERS = (
    User("grace", "grace@example.com", "Grace Hopper"),
    User("linus", "linus@example.com", "Linus T"),
)
DATA_DIR = Path(".demo")
REMINDER_DELAY_S = 8
#: The demo gives up (exit code 1) when the outcomes are not all visible by then.
TIME_LIMIT_S = 45.0
#: Welcome, reminder, two images, the digest.
OUTCOMES = 5

_print_lock = threading.Lock()
_LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d (INFO\s+)?")
_LONG_ID = re.compile(r"\b([0-9a-f]{8})[0-9a-f]{24,}\b")
#: gunicorn's start-up chatter; its warnings and errors still show.
_GUNICORN_INFO = re.compile(r"^\d\d:\d\d:\d\d INFO\s+gunicorn\.")


def say(who: str, text: str) -> None:
    """Prints one line of the live log."""
    text = _LONG_ID.sub(r"\1…", _LOG_PREFIX.sub("", text))
    with _print_lock:
        print(f"{time.strftime('%H:%M:%S')} {who:<6} {text}", flush=True)


def show(who: str) -> Any:
    """A log-line callback that prints a process's lines (minus gunicorn's start-up chatter)."""

    def line(text: str) -> None:
        if text.strip() and not _GUNICORN_INFO.match(text):
            say(who, text)

    return line


def purge_leftovers(runner_url: str) -> None:
    """Empties the demo queues of tasks left by an interrupted earlier run (they target a dead worker)."""
    with TasksClient(PROJECT, LOCATION, endpoint=runner_url) as client:
        for queue in QUEUES:
            leftover = sum(1 for _ in client.list_tasks(queue))
            if leftover:
                client.purge_queue(queue)
                say("demo", f"purged {leftover} task(s) left in '{queue}' by an interrupted run")


def clock(timestamp: str) -> str:
    """``HH:MM:SS`` (local time) of an RFC 3339 timestamp."""
    return f"{datetime.fromisoformat(timestamp).astimezone():%H:%M:%S}"


def use_the_worker(worker_url: str, user_id: str) -> datetime:
    """Signs a user up twice and uploads two files, as a client of the worker would.

    Returns:
        When the reminder is due.
    """
    user = {"user_id": user_id, "email": f"{user_id}@example.com", "name": "Ada Lovelace"}
    first = requests.post(f"{worker_url}/signup", json=user, timeout=30)
    first.raise_for_status()
    body = first.json()
    say("demo", f"POST /signup {user_id} -> {first.status_code} {body['status']}")
    say("demo", f"  welcome email queued; reminder scheduled for {clock(body['reminder_at'])}")
    again = requests.post(f"{worker_url}/signup", json=user, timeout=30)
    again.raise_for_status()
    say("demo", f"POST /signup {user_id} again -> {again.status_code} {again.json()['status']}")
    say("demo", "  duplicate absorbed: the tasks are named after the user, Cloud Tasks refused the names")
    uploads = [
        ("cat-photo", solid_png(640, 480, (200, 120, 40)), "image/png", "storage fails twice, then it works"),
        ("invoice", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf", "cannot be thumbnailed"),
    ]
    for image_id, data, content_type, expect in uploads:
        response = requests.put(
            f"{worker_url}/images/{image_id}-{user_id}",
            data=data,
            headers={"Content-Type": content_type},
            timeout=30,
        )
        response.raise_for_status()
        say("demo", f"PUT /images/{image_id}-{user_id} ({content_type}) -> {response.status_code}: {expect}")
    return datetime.fromisoformat(body["reminder_at"])


def fire_the_weekly_digest(runner_url: str, worker_url: str) -> None:
    """Creates the worker's jobs in the runner and fires the digest once with RunJob.

    ``sync_jobs`` creates them, as ``flask tasktoolkit sync-jobs`` does.
    """
    routes = Flask("routes")  # the worker's job routes and the settings a sync reads
    routes.register_blueprint(jobs_blueprint)
    routes.config.update(
        TASKTOOLKIT_PROJECT=PROJECT,
        TASKTOOLKIT_LOCATION=LOCATION,
        TASKTOOLKIT_BASE_URL=worker_url,
        TASKTOOLKIT_AUDIENCE=worker_url,
        TASKTOOLKIT_SERVICE_ACCOUNT=SCHEDULER_ACCOUNT,
    )
    with SchedulerClient(PROJECT, LOCATION, endpoint=runner_url) as scheduler:
        for declared in declared_jobs(routes):  # left by an earlier run, for a worker on another port
            with contextlib.suppress(ResourceNotFound):
                scheduler.delete_job(declared.job_id)
        sync_jobs(
            routes, client=scheduler, report=lambda change: say("demo", f"sync-jobs: {change.describe()}")
        )
        job = scheduler.get_job("weekly-digest")
        schedule, zone, next_fire = job["schedule"], job["timeZone"], job["scheduleTime"]
        say("demo", f"job weekly-digest: '{schedule}' {zone}, next fire {next_fire}")
        scheduler.run_job("weekly-digest")
    say("demo", "job weekly-digest: RunJob, one fire now -> one digest email task per user")


def outcomes(worker_url: str, user_id: str, reminder_at: datetime) -> dict[str, str]:
    """What the worker shows so far, one line per scenario (missing until it happened)."""
    found: dict[str, str] = {}
    messages = Outbox(DATA_DIR / "outbox").messages()
    subjects = [str(message["Subject"]) for message in messages]
    if subjects.count("Welcome to Sample App") == 1:
        found["welcome"] = "welcome email sent once"
    digests = [subject for subject in subjects if subject.startswith("Your week")]
    if len(digests) == 1 + len(OTHER_USERS):
        found["digest"] = f"weekly digest: {len(digests)} emails, one per user, from one fire"
    if "Finish setting up your account" in subjects:
        reminder = messages[subjects.index("Finish setting up your account")]
        at = parsedate_to_datetime(str(reminder["Date"]))  # whole seconds, as in every Date header
        when = "on time" if at >= reminder_at.replace(microsecond=0) else "EARLY"
        found["reminder"] = (
            f"reminder sent at {at.astimezone():%H:%M:%S}, {when} (due {reminder_at.astimezone():%H:%M:%S})"
        )
    for image_id in (f"cat-photo-{user_id}", f"invoice-{user_id}"):
        status = requests.get(f"{worker_url}/images/{image_id}", timeout=30).json()
        if status.get("state") == "ready":
            width, height = status["size"]
            found[image_id] = f"{image_id}: thumbnail {width}x{height} on attempt {status['attempt']}"
        elif status.get("state") == "rejected":
            found[image_id] = f"{image_id}: rejected on attempt {status['attempt']} ({status['reason']})"
    return found


def wait_for_outcomes(worker_url: str, user_id: str, reminder_at: datetime, deadline: float) -> bool:
    """Polls the worker until all the outcomes are visible; prints them; False at the deadline."""
    found: dict[str, str] = {}
    while len(found) < OUTCOMES and time.monotonic() < deadline:
        time.sleep(0.25)
        found = outcomes(worker_url, user_id, reminder_at)
    for text in found.values():
        say("demo", f"✓ {text}")
    if len(found) < OUTCOMES:
        say("demo", f"only {len(found)} of {OUTCOMES} outcomes after {TIME_LIMIT_S:.0f} s; see the log above")
    return len(found) == OUTCOMES


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Runs the demo; returns the exit code."""
    started = time.monotonic()
    # Ctrl-C and SIGTERM stop the children in order. Catching SIGINT here (even when started with it
    # ignored, as in a background job) also gives the children its default, so they can stop cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    users = Users(DATA_DIR / "users")
    for user in OTHER_USERS:
        users.add(user)
    user_id = f"ada-{secrets.token_hex(2)}"  # a new user per run: task names stay taken for an hour
    say("demo", f"starting the runner on .runner/ (SQLite) with the queues of {queue_file().name}")
    try:
        runner, runner_url = start_runner(
            ["--data-dir", ".runner", "--queues", str(queue_file())], show("runner")
        )
    except KeyboardInterrupt:
        return 130
    worker: ChildProcess | None = None
    ok = interrupted = False
    try:
        purge_leftovers(runner_url)
        say("demo", "starting the worker: gunicorn 'sample_worker.app:create_app()'")
        worker, worker_url = start_worker(
            {
                "CLOUD_TASKS_EMULATOR_HOST": runner_url.removeprefix("http://"),
                "TASKTOOLKIT_PROJECT": PROJECT,
                "TASKTOOLKIT_LOCATION": LOCATION,
                "SAMPLE_DATA_DIR": str(DATA_DIR),
                "SAMPLE_REMINDER_DELAY_S": str(REMINDER_DELAY_S),
                "SAMPLE_THUMBNAIL_OUTAGE_ATTEMPTS": "2",
            },
            show("worker"),
        )
        say("demo", f"worker on {worker_url} (pid {worker.pid}), runner on {runner_url} (pid {runner.pid})")
        say("demo", f"console: {runner_url}/ shows the queues, tasks and attempts live while the demo runs")
        reminder_at = use_the_worker(worker_url, user_id)
        fire_the_weekly_digest(runner_url, worker_url)
        ok = wait_for_outcomes(worker_url, user_id, reminder_at, started + TIME_LIMIT_S)
    except KeyboardInterrupt:
        say("demo", "interrupted")
        interrupted = True
    finally:
        say("demo", "stopping the worker and the runner")
        if worker is not None:
            worker.stop(signal.SIGTERM)
        runner.stop(signal.SIGINT)
    elapsed = time.monotonic() - started
    say("demo", f"done in {elapsed:.1f} s; emails in {DATA_DIR}/outbox, images in {DATA_DIR}/images")
    return 130 if interrupted else 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
