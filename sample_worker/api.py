"""The public endpoints: they answer at once and leave the slow work to tasks."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from sample_worker.emails import User
from sample_worker.handlers import make_thumbnail, send_reminder, send_welcome_email
from sample_worker.services import services
from sample_worker.storage import check_image_id

api = Blueprint("api", __name__)


@api.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness, for a Cloud Run startup probe."""
    return {"ok": True}


@api.post("/signup")
def signup() -> ResponseReturnValue:
    """Signs a user up: queues the welcome email now and the reminder after the reminder delay.

    Both tasks are named after the user, so a repeated sign-up (a double click, a client retry) creates
    nothing new: Cloud Tasks refuses the names, and the answer says the user was already signed up.
    """
    try:
        user = User.from_json(request.get_json(silent=True))
    except ValueError as exc:
        return {"error": str(exc)}, 400
    services().users.add(user)
    payload = user.to_json()
    welcome = send_welcome_email.enqueue(payload, dedup_key=f"welcome:{user.user_id}", ignore_existing=True)
    reminder = send_reminder.enqueue(
        payload,
        dedup_key=f"reminder:{user.user_id}",
        delay=services().settings.reminder_delay,
        ignore_existing=True,
    )
    answer: dict[str, Any] = {"user_id": user.user_id}
    if welcome is None:
        return {**answer, "status": "already signed up"}, 200
    answer.update(status="signed up", welcome_task=welcome.name)
    if reminder is not None:
        answer.update(reminder_task=reminder.name, reminder_at=reminder.schedule_time.isoformat())
    return answer, 201


@api.put("/images/<image_id>")
def upload_image(image_id: str) -> ResponseReturnValue:
    """Stores an upload and queues its thumbnail job; the same bytes uploaded again queue nothing.

    Any file is accepted: the job decides whether it can make a thumbnail (it answers PNG only).
    """
    try:
        check_image_id(image_id)
    except ValueError as exc:
        return {"error": str(exc)}, 400
    data = request.get_data()
    if not data:
        return {"error": "empty upload"}, 400
    services().images.save_upload(image_id, data)
    digest = hashlib.sha256(data).hexdigest()[:32]
    task = make_thumbnail.enqueue(
        {"image_id": image_id, "content_type": request.mimetype},
        dedup_key=f"thumbnail:{image_id}:{digest}",
        ignore_existing=True,
    )
    return {"image_id": image_id, "status": "uploaded", "thumbnail_task": task and task.name}, 202


@api.get("/images/<image_id>")
def image_status(image_id: str) -> ResponseReturnValue:
    """The image's status: ``uploaded``, ``ready`` (with its thumbnail's size) or ``rejected`` (with why)."""
    try:
        record = services().images.status(check_image_id(image_id))
    except ValueError as exc:
        return {"error": str(exc)}, 400
    return record if record is not None else ({"error": f"no image {image_id!r}"}, 404)
