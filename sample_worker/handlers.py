"""The task handlers: what runs when Cloud Tasks delivers a task (verified and deduplicated)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, NoReturn

from flask import Blueprint

from sample_worker.emails import User, digest_email, reminder_email, welcome_email
from sample_worker.images import NotAnImage, png_size, solid_png, thumbnail_size
from sample_worker.services import services
from sample_worker.storage import StorageUnavailable, UnknownImage, check_image_id
from tasktoolkit import PermanentFailure, RetryTask, TaskContext, task_handler

log = logging.getLogger("sample_worker")

tasks = Blueprint("tasks", __name__)

#: Longest side of a thumbnail, in pixels.
THUMBNAIL_SIDE = 128
#: Seconds the thumbnail job asks to wait after a storage outage (the queue's backoff may be longer).
OUTAGE_RETRY_S = 1.0


def per_user(kind: str) -> Callable[[Any, TaskContext], str]:
    """A dedup key ``"<kind>:<user_id>"``: one message of each kind per user, however many tasks ask."""

    def key(payload: Any, task: TaskContext) -> str:
        user_id = payload.get("user_id") if isinstance(payload, dict) else None
        # A malformed payload keeps the per-task key; the handler then refuses it as a permanent failure.
        return (
            f"{kind}:{user_id}"
            if isinstance(user_id, str) and user_id
            else f"{task.queue_name}/{task.task_name}"
        )

    return key


def _user(payload: Any) -> User:
    try:
        return User.from_json(payload)
    except ValueError as exc:
        raise PermanentFailure(f"bad user payload: {exc}") from exc


def _trace(task: TaskContext) -> str:
    return f"{task.queue_name}/{task.task_name}, attempt {task.retry_count + 1}"


def _reject(image_id: str, reason: str, task: TaskContext) -> NoReturn:
    """Records why an image gets no thumbnail and ends the task: retrying cannot fix its input."""
    services().images.set_status(image_id, "rejected", reason=reason, attempt=task.retry_count + 1)
    log.warning("thumbnail %s: rejected, %s; no retry (%s)", image_id, reason, _trace(task))
    raise PermanentFailure(f"image {image_id}: {reason}")


@tasks.post("/tasks/send-welcome-email")
@task_handler(queue="emails", dedup_key=per_user("welcome"))
def send_welcome_email(payload: Any, task: TaskContext) -> dict[str, Any]:
    """Sends the welcome email, once per user."""
    user = _user(payload)
    path = services().outbox.send(welcome_email(user), task=f"{task.queue_name}/{task.task_name}")
    log.info("sent welcome email to %s (%s)", user.email, _trace(task))
    return {"sent": path.name}


@tasks.post("/tasks/send-reminder")
@task_handler(queue="emails", dedup_key=per_user("reminder"))
def send_reminder(payload: Any, task: TaskContext) -> dict[str, Any]:
    """Sends the day-after reminder, once per user."""
    user = _user(payload)
    path = services().outbox.send(reminder_email(user), task=f"{task.queue_name}/{task.task_name}")
    log.info("sent reminder to %s (%s, scheduled for %s)", user.email, _trace(task), f"{task.eta:%H:%M:%S}")
    return {"sent": path.name}


@tasks.post("/tasks/send-digest")
@task_handler(queue="emails")
def send_digest(payload: Any, task: TaskContext) -> dict[str, Any]:
    """Sends one user's weekly digest (one task per user and fire: see ``jobs.weekly_digest``)."""
    user = _user(payload.get("user") if isinstance(payload, dict) else None)
    week = payload.get("week")
    if not isinstance(week, str) or len(week) != len("2026-11-30"):
        raise PermanentFailure(f"bad digest week {week!r}")
    path = services().outbox.send(digest_email(user, week), task=f"{task.queue_name}/{task.task_name}")
    log.info("sent the %s digest to %s (%s)", week, user.email, _trace(task))
    return {"sent": path.name}


@tasks.post("/tasks/make-thumbnail")
@task_handler(queue="images")
def make_thumbnail(payload: Any, task: TaskContext) -> dict[str, Any]:
    """Makes the thumbnail of an uploaded image; retries storage outages, rejects what is not a PNG."""
    store = services().images
    try:
        image_id = check_image_id(payload["image_id"])
        content_type = str(payload.get("content_type", ""))
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise PermanentFailure(f"bad thumbnail payload {payload!r}: {exc}") from exc
    if content_type != "image/png":
        _reject(image_id, f"thumbnails need image/png, got {content_type or 'no content type'}", task)
    try:
        data = store.read_upload(image_id, retry_count=task.retry_count)
    except StorageUnavailable as exc:
        log.warning("thumbnail %s: %s; asking for a retry (%s)", image_id, exc, _trace(task))
        raise RetryTask(OUTAGE_RETRY_S, str(exc)) from exc
    except UnknownImage as exc:
        raise PermanentFailure(str(exc)) from exc
    try:
        width, height = png_size(data)
    except NotAnImage as exc:
        _reject(image_id, str(exc), task)
    size = thumbnail_size(width, height, THUMBNAIL_SIDE)
    digest = hashlib.sha256(data).digest()  # one colour per image, in place of resized pixels
    png = solid_png(*size, (digest[0], digest[1], digest[2]))
    store.save_thumbnail(image_id, png, size, attempt=task.retry_count + 1)
    log.info("thumbnail %s: %dx%d from %dx%d (%s)", image_id, *size, width, height, _trace(task))
    return {"image_id": image_id, "thumbnail": list(size)}
