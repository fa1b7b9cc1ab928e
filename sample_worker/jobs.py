"""The Cloud Scheduler jobs: what runs when a job fires (verified, once per fire)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from sample_worker.handlers import send_digest
from sample_worker.services import services
from tasktoolkit import ScheduleContext, fan_out, scheduled_handler

log = logging.getLogger("sample_worker")

jobs = Blueprint("jobs", __name__)


@jobs.post("/jobs/weekly-digest")
@scheduled_handler(
    "0 9 * * 1",
    time_zone="Europe/London",
    job_id="weekly-digest",
    description="Monday 09:00 London: one digest email per user",
    retry_count=3,
)
def weekly_digest(fire: ScheduleContext) -> dict[str, Any]:
    """Fans out one ``send_digest`` task per user, named after this fire and the user.

    A retry of the fire (after a failure half-way) creates only the tasks still missing.
    """
    week = f"{fire.schedule_time:%Y-%m-%d}"
    users = ((user.user_id, {"user": user.to_json(), "week": week}) for user in services().users)
    result = fan_out(send_digest, fire, users)
    log.info(
        "weekly digest %s: %d email task(s) enqueued, %d already enqueued",
        fire.fire_id,
        result.enqueued,
        result.existing,
    )
    return {"week": week, "enqueued": result.enqueued, "existing": result.existing}
