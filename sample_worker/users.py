"""The users who signed up: one JSON file each, standing in for the app's database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sample_worker.emails import User
from sample_worker.files import write_atomically


class Users:
    """Keeps each user as ``<user_id>.json`` in a directory.

    Args:
        directory: Where users go; created if missing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, user: User) -> None:
        """Stores the user (again: the latest sign-up's details win)."""
        write_atomically(self.directory / f"{user.user_id}.json", json.dumps(user.to_json()).encode())

    def __iter__(self) -> Iterator[User]:
        """Every user, by id (read lazily: a digest of a million users does not load them all)."""
        for path in sorted(self.directory.glob("*.json")):
            yield User.from_json(json.loads(path.read_bytes()))
