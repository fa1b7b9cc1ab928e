"""``runner serve --jobs FILE``: jobs declared in YAML, as ``gcloud scheduler jobs describe`` prints them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from local_runner.cloud_scheduler.model import Job, JobState, job_fields_from_json, job_from_fields
from local_runner.config import ConfigError, yaml_items
from local_runner.errors import ApiError


@dataclass(frozen=True)
class JobSpec:
    """One job of the file, with the state it asks for (``None``: ENABLED when new, else as it is)."""

    job: Job
    state: JobState | None


def load_jobs_file(path: Path, parent: str) -> list[JobSpec]:
    """Read jobs from YAML: a ``jobs:`` list, a plain list, or one job per document (``---``).

    Output-only fields of pasted ``describe`` output are ignored, except ``state: PAUSED``. A short
    ``name`` is placed under ``parent``. Errors name the file, the job and the field.
    """
    specs: list[JobSpec] = []
    for index, doc in enumerate(yaml_items(path, "jobs")):
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise ConfigError(f"jobs file {path}: job #{index + 1} needs a 'name'")
        data = dict(doc)
        name = data["name"] if "/" in data["name"] else f"{parent}/jobs/{data['name']}"
        data["name"] = name
        state = data.get("state")
        try:
            if state not in (None, "ENABLED", "PAUSED"):
                raise ConfigError(f"jobs file {path}: job {name!r}: state must be ENABLED or PAUSED")
            job = job_from_fields(name, job_fields_from_json(data))
        except ApiError as error:
            raise ConfigError(f"jobs file {path}: job {name!r}: {error.message}") from error
        specs.append(JobSpec(job, None if state is None else JobState[state]))
    return specs
