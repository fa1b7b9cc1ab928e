"""IAM policies (stored, never enforced) and locations."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from local_runner import errors
from local_runner.errors import NotFound
from local_runner.model import parse_location, parse_queue_name
from local_runner.service.base import ServiceBase


class IamAndLocations(ServiceBase):
    """GetIamPolicy, SetIamPolicy, TestIamPermissions, ListLocations and GetLocation."""

    def get_iam_policy(self, name: str) -> dict[str, Any]:
        """GetIamPolicy: the stored policy document (``{}`` if none was set)."""
        queue = self.get_queue(name)
        return self.store.get_iam_policy(queue.name) or {}

    def set_iam_policy(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        """SetIamPolicy: store a validated policy (kept across restarts); the runner never enforces it."""
        queue = self.get_queue(name)
        if not self.store.put_iam_policy(queue.name, policy):  # deleted meanwhile
            raise NotFound(errors.QUEUE_NOT_FOUND)
        return copy.deepcopy(policy)

    def test_iam_permissions(self, name: str, permissions: Sequence[str]) -> list[str]:
        """TestIamPermissions: every permission is granted on an existing queue, none on a missing one."""
        queue_name = str(parse_queue_name(name))
        return list(permissions) if self.store.get_queue(queue_name) is not None else []

    def list_locations(self, project: str) -> list[str]:
        """ListLocations: the runner's one location in ``project``."""
        name = f"projects/{project}/locations/{self.location_id}"
        parse_location(name)
        return [name]

    def get_location(self, name: str) -> str:
        """GetLocation: any well-formed location (the runner accepts queues in every location)."""
        parse_location(name)
        return name
