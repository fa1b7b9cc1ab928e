"""Uploaded images, their thumbnails and their status, in a directory standing in for Cloud Storage.

The store can simulate a brief outage: the first ``outage_attempts`` attempts of each job fail to read
with :class:`StorageUnavailable` (keyed on the task's retry count), so the retry path runs every time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sample_worker.files import write_atomically

_IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class StorageUnavailable(Exception):
    """A transient storage failure: trying again later can succeed."""


class UnknownImage(LookupError):
    """No upload has this id."""


def check_image_id(image_id: str) -> str:
    """Returns ``image_id`` if it is a safe file name (letters, digits, ``.``, ``_``, ``-``; at most 100).

    Raises:
        ValueError: It is not.
    """
    if not _IMAGE_ID.fullmatch(image_id):
        raise ValueError(f"image id must match {_IMAGE_ID.pattern}, got {image_id!r}")
    return image_id


class ImageStore:
    """Uploads, thumbnails and status records of images, one directory per store.

    Args:
        directory: Where files live; created if missing.
        outage_attempts: How many first attempts of each job meet a simulated outage (0: never).
    """

    def __init__(self, directory: Path, outage_attempts: int = 0) -> None:
        self.directory = directory
        self.outage_attempts = outage_attempts
        directory.mkdir(parents=True, exist_ok=True)

    def save_upload(self, image_id: str, data: bytes) -> None:
        """Stores an uploaded image and marks it ``uploaded``."""
        self._write(f"{check_image_id(image_id)}.upload", data)
        self.set_status(image_id, "uploaded")

    def read_upload(self, image_id: str, *, retry_count: int) -> bytes:
        """The uploaded bytes, read by a job that was attempted ``retry_count`` times before.

        Raises:
            StorageUnavailable: During the simulated outage (``retry_count < outage_attempts``).
            UnknownImage: Nothing was uploaded under ``image_id``.
        """
        if retry_count < self.outage_attempts:
            raise StorageUnavailable(
                f"storage unavailable (simulated outage {retry_count + 1}/{self.outage_attempts})"
            )
        try:
            return (self.directory / f"{check_image_id(image_id)}.upload").read_bytes()
        except FileNotFoundError:
            raise UnknownImage(f"no upload named {image_id!r}") from None

    def save_thumbnail(self, image_id: str, png: bytes, size: tuple[int, int], *, attempt: int) -> Path:
        """Stores a thumbnail and marks the image ``ready``; returns the thumbnail's file."""
        name = f"{check_image_id(image_id)}.thumbnail.png"
        self._write(name, png)
        self.set_status(image_id, "ready", thumbnail=name, size=list(size), attempt=attempt)
        return self.directory / name

    def set_status(self, image_id: str, state: str, **details: Any) -> None:
        """Records an image's state (``uploaded``, ``ready`` or ``rejected``) and its details."""
        record = {"image_id": image_id, "state": state, **details}
        self._write(f"{check_image_id(image_id)}.json", json.dumps(record).encode())

    def status(self, image_id: str) -> dict[str, Any] | None:
        """The image's status record, or ``None`` if it was never uploaded."""
        try:
            data = (self.directory / f"{check_image_id(image_id)}.json").read_bytes()
        except FileNotFoundError:
            return None
        record: dict[str, Any] = json.loads(data)
        return record

    def _write(self, name: str, data: bytes) -> None:
        write_atomically(self.directory / name, data)
