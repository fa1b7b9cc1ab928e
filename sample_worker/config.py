"""The worker's settings, read from the environment once at start-up (twelve-factor, as on Cloud Run)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tasktoolkit import ConfigurationError

#: Every environment variable the worker reads, with its default (``None``: derived, see :class:`Settings`).
VARIABLES: Mapping[str, str | None] = {
    "TASKTOOLKIT_PROJECT": "local-project",
    "TASKTOOLKIT_LOCATION": "us-central1",
    "TASKTOOLKIT_BASE_URL": None,
    "TASKTOOLKIT_SERVICE_ACCOUNT": None,
    "TASKTOOLKIT_AUDIENCE": None,
    "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": None,
    "TASKTOOLKIT_STORE": None,
    "SAMPLE_DATA_DIR": ".sample-data",
    "SAMPLE_REMINDER_DELAY_S": "86400",
    "SAMPLE_THUMBNAIL_OUTAGE_ATTEMPTS": "2",
    "PORT": "8080",
}


@dataclass(frozen=True)
class Settings:
    """What the worker needs to know about where it runs.

    Derived defaults suit a laptop: the base URL is ``http://127.0.0.1:$PORT``, the audience is the base
    URL, the only allowed caller is the service account put in created tasks, and the dedup store is a
    SQLite file in the data directory (on Cloud Run, set ``TASKTOOLKIT_STORE=redis://...``).
    """

    #: Cloud Tasks project and location of the queues.
    project: str
    location: str
    #: Public base URL of this worker; task URLs are this plus the route path.
    base_url: str
    #: Service account whose OIDC token Cloud Tasks attaches to the tasks this worker creates.
    service_account: str
    #: The OIDC audience of those tokens (the Cloud Run service URL in production).
    audience: str
    #: Service accounts allowed to deliver tasks.
    allowed_service_accounts: tuple[str, ...]
    #: Dedup store URL (``redis://``, ``sqlite:///``, ``memory://``).
    store_url: str
    #: Where the outbox, uploads and thumbnails live.
    data_dir: Path
    #: How long after sign-up the reminder email goes out.
    reminder_delay: timedelta
    #: How many first attempts of each thumbnail job meet a simulated storage outage (0: none).
    thumbnail_outage_attempts: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads :data:`VARIABLES` from ``environ`` (default: ``os.environ``).

        Raises:
            ConfigurationError: A value is malformed; the message names the variable.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(name) or VARIABLES[name] or ""

        project = get("TASKTOOLKIT_PROJECT")
        base_url = (get("TASKTOOLKIT_BASE_URL") or f"http://127.0.0.1:{_port(get('PORT'))}").rstrip("/")
        service_account = get("TASKTOOLKIT_SERVICE_ACCOUNT") or f"tasks@{project}.iam.gserviceaccount.com"
        data_dir = Path(get("SAMPLE_DATA_DIR"))
        allowed = get("TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS") or service_account
        return cls(
            project=project,
            location=get("TASKTOOLKIT_LOCATION"),
            base_url=base_url,
            service_account=service_account,
            audience=get("TASKTOOLKIT_AUDIENCE") or base_url,
            allowed_service_accounts=tuple(item.strip() for item in allowed.split(",") if item.strip()),
            store_url=get("TASKTOOLKIT_STORE") or f"sqlite:///{data_dir.resolve() / 'dedup.sqlite3'}",
            data_dir=data_dir,
            reminder_delay=timedelta(
                seconds=_seconds("SAMPLE_REMINDER_DELAY_S", get("SAMPLE_REMINDER_DELAY_S"))
            ),
            thumbnail_outage_attempts=_count(
                "SAMPLE_THUMBNAIL_OUTAGE_ATTEMPTS", get("SAMPLE_THUMBNAIL_OUTAGE_ATTEMPTS")
            ),
        )

    def flask_config(self) -> dict[str, Any]:
        """The ``TASKTOOLKIT_*`` keys for ``app.config``."""
        return {
            "TASKTOOLKIT_PROJECT": self.project,
            "TASKTOOLKIT_LOCATION": self.location,
            "TASKTOOLKIT_BASE_URL": self.base_url,
            "TASKTOOLKIT_SERVICE_ACCOUNT": self.service_account,
            "TASKTOOLKIT_AUDIENCE": self.audience,
            "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": list(self.allowed_service_accounts),
            "TASKTOOLKIT_STORE": self.store_url,
        }


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigurationError(f"PORT must be a port number, got {value!r}")
    return int(value)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return seconds


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise ConfigurationError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)
