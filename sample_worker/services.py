"""The worker's collaborators (settings, outbox, image store, users), kept on the Flask app."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from sample_worker.config import Settings
from sample_worker.emails import Outbox
from sample_worker.storage import ImageStore
from sample_worker.users import Users

EXTENSION_KEY = "sample_worker"


@dataclass(frozen=True)
class Services:
    """What the routes and task handlers use."""

    settings: Settings
    outbox: Outbox
    images: ImageStore
    users: Users

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """The outbox and image store in ``settings.data_dir``."""
        return cls(
            settings=settings,
            outbox=Outbox(settings.data_dir / "outbox"),
            images=ImageStore(settings.data_dir / "images", settings.thumbnail_outage_attempts),
            users=Users(settings.data_dir / "users"),
        )

    def install(self, app: Flask) -> None:
        """Makes these services the app's."""
        app.extensions[EXTENSION_KEY] = self


def services() -> Services:
    """The current app's services."""
    found = current_app.extensions[EXTENSION_KEY]
    assert isinstance(found, Services), "create_app() installs the services"
    return found
