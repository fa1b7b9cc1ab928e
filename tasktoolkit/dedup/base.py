"""DedupStore: the claim / complete / release algorithm; backends implement four primitives.

Modelled on AWS Powertools' idempotency persistence layer, with two fixes: completion and release are
conditional on the claim's owner token (a slow first run cannot overwrite or delete its successor's record),
and an in-progress record expires after a lease equal to Cloud Tasks' dispatch deadline.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

from tasktoolkit.errors import DedupStoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")

#: Default in-progress lease: Cloud Tasks' default dispatch deadline for HTTP targets (10 min).
DEFAULT_LEASE_S = 600.0
#: Default retention of a completed or failed record (for replaying duplicates).
DEFAULT_TTL_S = 86400.0


class DedupStatus(StrEnum):
    """State of a dedup record."""

    #: Claimed; the handler is running (or its worker died and the lease has not run out yet).
    IN_PROGRESS = "IN_PROGRESS"
    #: The handler returned; its response is stored for replay.
    COMPLETED = "COMPLETED"
    #: The handler raised PermanentFailure; duplicates are acknowledged too.
    FAILED = "FAILED"


@dataclass(frozen=True)
class StoredResponse:
    """An HTTP response kept for replay."""

    status: int
    body: bytes
    content_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Returns a JSON-safe dict (body in base64)."""
        return {
            "status": self.status,
            "body": base64.b64encode(self.body).decode("ascii"),
            "content_type": self.content_type,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredResponse:
        """Inverse of :meth:`to_json`."""
        return cls(int(data["status"]), base64.b64decode(data["body"]), data.get("content_type"))


@dataclass(frozen=True)
class DedupRecord:
    """One dedup key's record."""

    key: str
    status: DedupStatus
    #: Random token of the claim that wrote the record; completion and release must present it.
    owner: str
    #: sha256 of the payload that claimed the key.
    fingerprint: str
    #: Seconds since the epoch after which the record no longer exists (lease end or retention end).
    expires_at: float
    response: StoredResponse | None = None

    def to_json(self) -> str:
        """Serializes the record (without its key) as compact JSON."""
        return json.dumps(
            {
                "owner": self.owner,
                "status": self.status.value,
                "fingerprint": self.fingerprint,
                "expires_at": self.expires_at,
                "response": self.response.to_json() if self.response else None,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, key: str, text: str | bytes) -> DedupRecord:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        response = data.get("response")
        return cls(
            key=key,
            status=DedupStatus(data["status"]),
            owner=data["owner"],
            fingerprint=data["fingerprint"],
            expires_at=float(data["expires_at"]),
            response=StoredResponse.from_json(response) if response else None,
        )


@dataclass(frozen=True)
class Claim:
    """Outcome of :meth:`DedupStore.claim`."""

    #: True when this call claimed the key; ``record`` is then the new IN_PROGRESS record.
    acquired: bool
    #: The caller's new record, or the live record that blocked the claim.
    record: DedupRecord


def check_duration(name: str, value: float) -> float:
    """``value`` as a float of seconds.

    Raises:
        ValueError: ``value`` is not a finite number > 0 (the message names ``name``).
    """
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class DedupStore(ABC):
    """Atomic claim of a dedup key with an owner token and a lease; owner-checked complete and release.

    A record is live while ``now < expires_at``; an expired record is treated as absent by every
    operation. Backends implement :meth:`_claim`, :meth:`_replace`, :meth:`_delete` and :meth:`_get`, and
    list the exceptions that mean "unreachable" in :attr:`_unavailable_errors`; the base class turns those
    into :class:`DedupStoreUnavailable`.

    Args:
        clock: Seconds since the epoch (injectable for tests).
    """

    #: Backend exceptions that mean the store cannot be used right now.
    _unavailable_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    # -- public algorithm --------------------------------------------------------------------------

    def claim(self, key: str, fingerprint: str, *, lease_s: float = DEFAULT_LEASE_S) -> Claim:
        """Claims ``key`` for ``lease_s`` seconds unless a live record exists.

        Raises:
            DedupStoreUnavailable: The store cannot be reached.
        """
        check_duration("lease_s", lease_s)
        now = self.clock()
        # key, status, owner, fingerprint, expires_at: positional arguments cost less per claim
        record = DedupRecord(key, DedupStatus.IN_PROGRESS, secrets.token_hex(16), fingerprint, now + lease_s)
        existing = self._call(self._claim, record, now)
        return Claim(True, record) if existing is None else Claim(False, existing)

    def complete(self, claim: DedupRecord, response: StoredResponse, *, ttl_s: float = DEFAULT_TTL_S) -> bool:
        """Marks a claimed key COMPLETED with the response to replay, kept for ``ttl_s`` seconds.

        Returns:
            False when the claim was no longer held (lease expired or another owner); nothing is written.

        Raises:
            DedupStoreUnavailable: The store cannot be reached.
        """
        return self._finish(claim, DedupStatus.COMPLETED, response, ttl_s)

    def fail(self, claim: DedupRecord, response: StoredResponse, *, ttl_s: float = DEFAULT_TTL_S) -> bool:
        """Marks a claimed key FAILED (permanent failure); duplicates get ``response`` too.

        Returns:
            False when the claim was no longer held; nothing is written.

        Raises:
            DedupStoreUnavailable: The store cannot be reached.
        """
        return self._finish(claim, DedupStatus.FAILED, response, ttl_s)

    def release(self, claim: DedupRecord) -> bool:
        """Deletes a claimed key's record so the next delivery runs the handler again.

        Returns:
            False when the claim was no longer held; nothing is deleted.

        Raises:
            DedupStoreUnavailable: The store cannot be reached.
        """
        return self._call(self._delete, claim.key, claim.owner, self.clock())

    def get(self, key: str) -> DedupRecord | None:
        """Returns the live record of ``key``, if any.

        Raises:
            DedupStoreUnavailable: The store cannot be reached.
        """
        return self._call(self._get, key, self.clock())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections; the default does nothing."""

    def _finish(
        self, claim: DedupRecord, status: DedupStatus, response: StoredResponse, ttl_s: float
    ) -> bool:
        check_duration("ttl_s", ttl_s)
        if claim.status is not DedupStatus.IN_PROGRESS:
            raise ValueError(f"only an IN_PROGRESS claim can be finished, got {claim.status}")
        now = self.clock()
        record = DedupRecord(claim.key, status, claim.owner, claim.fingerprint, now + ttl_s, response)
        return self._call(self._replace, record, now)

    def _call(self, primitive: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return primitive(*args, **kwargs)
        except self._unavailable_errors as exc:
            raise DedupStoreUnavailable(f"{type(self).__name__} unavailable: {exc}") from exc

    # -- backend primitives ------------------------------------------------------------------------

    @abstractmethod
    def _claim(self, record: DedupRecord, now: float) -> DedupRecord | None:
        """Atomically stores ``record`` unless a live record exists for its key.

        Returns:
            None when stored, else the live record that exists.
        """

    @abstractmethod
    def _replace(self, record: DedupRecord, now: float) -> bool:
        """Atomically replaces the live IN_PROGRESS record of ``record.key`` owned by ``record.owner``."""

    @abstractmethod
    def _delete(self, key: str, owner: str, now: float) -> bool:
        """Atomically deletes the live IN_PROGRESS record of ``key`` if its owner is ``owner``."""

    @abstractmethod
    def _get(self, key: str, now: float) -> DedupRecord | None:
        """Returns the live record of ``key``, if any."""
